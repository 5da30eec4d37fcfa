"""Regenerate completions/ from the CLI: `python scripts/gen_completions.py`."""

from __future__ import annotations

from pathlib import Path

from coderctl.cli.completion import completion_script

FILES = {"bash": "coderctl.bash", "zsh": "_coderctl", "fish": "coderctl.fish"}


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "completions"
    out.mkdir(exist_ok=True)
    for shell, name in FILES.items():
        (out / name).write_text(completion_script(shell))


if __name__ == "__main__":
    main()
