"""Regenerate the table of keys in docs/configuration.md from coderctl.profile.FIELDS."""

from __future__ import annotations

from pathlib import Path

from coderctl.profile import FIELDS, SECTIONS

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
MARK = "## Keys\n"


def table() -> str:
    out: list[str] = []
    for section, title in SECTIONS.items():
        out += [f"### {title}", "", "| key | environment | default | meaning |", "|---|---|---|---|"]
        for f in (f for f in FIELDS if f.section == section):
            if f.default is None:
                default = "(unset)"
            elif isinstance(f.default, list):
                default = ", ".join(f.default) or "(none)"
            else:
                default = str(f.default)
            extra = " (secret: masked by `config show`)" if f.secret else ""
            if f.choices:
                extra += f"; one of {', '.join(f.choices)}"
            out.append(f"| `{f.name}` | `{f.env_var}` | `{default}` | {f.help}{extra} |")
        out.append("")
    return "\n".join(out)


def render(current: str) -> str:
    head = current.split(MARK, 1)[0]
    return head + MARK + "\n" + table()


def main() -> None:
    DOC.write_text(render(DOC.read_text()))


if __name__ == "__main__":
    main()
