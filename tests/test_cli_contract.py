"""The command-line contract everywhere (issue 11): one JSON document for every outcome with `-o json`,
one-line errors, configuration errors that are configuration errors, commands the messages and docs name
that exist, kubectl's habits (global options anywhere, namespace precedence, kubeconfig lists), help with
environment variables and examples, value completion, and a lazy `--help`."""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clirun import ROOT, Result, run_cli, run_subprocess
from coderctl.errors import ConfigError


def leaf_commands() -> list[tuple[tuple[str, ...], click.Command]]:
    from coderctl.cli import cli

    found: list[tuple[tuple[str, ...], click.Command]] = []

    def walk(cmd: click.Command, ctx: click.Context, path: tuple[str, ...]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                walk(sub, click.Context(sub, parent=ctx, info_name=name), (*path, name))
        else:
            found.append((path, cmd))

    walk(cli, click.Context(cli, info_name="coderctl"), ())
    return found


LEAVES = leaf_commands()
LEAF_IDS = [" ".join(path) for path, _ in LEAVES]


def json_error(r: Result) -> dict[str, object]:
    """The run's stdout is exactly one JSON document, an error document matching the exit code and the
    one line on stderr."""
    doc = json.loads(r.stdout)
    assert isinstance(doc, dict) and set(doc) == {"coderctl", "command", "started_at", "duration_s", "error"}, doc
    error = doc["error"]
    assert isinstance(error, dict) and error["code"] == r.code != 0
    assert r.stderr.strip().splitlines()[-1].endswith(str(error["message"]))
    return doc


def one_line(r: Result) -> str:
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("coderctl: ")
    return lines[0]


# --- the contract: -o json, one line, exit codes --------------------------------------------------------


def broken_kubeconfig(tmp: Path) -> Path:
    path = tmp / "kubeconfig"
    path.write_text("clusters: [\n")
    return path


ERROR_CASES = {
    "no kubeconfig": (["verify"], 2, "no kubeconfig"),
    "missing kubeconfig": (["--kubeconfig", "/nonexistent", "verify"], 2, "does not exist"),
    "bad flag": (["verify", "--no-such-flag"], 2, "No such option"),
    "bad choice": (["verify", "--only", "kitchen"], 2, "kitchen"),
    "bad timeout": (["--timeout", "nan", "verify"], 2, "--timeout"),
    "unknown profile": (["--profile", "nope", "config", "show"], 2, "profile 'nope' is not defined"),
    "missing config": (["--config", "/nonexistent.toml", "config", "show"], 2, "does not exist"),
    "missing backup": (["backup", "verify", "/nonexistent.dump"], 2, "/nonexistent.dump"),
    "unknown command": (["frobnicate"], 2, "No such command"),
    "missing argument": (["completion"], 2, "Missing argument"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
@pytest.mark.parametrize("how", ["flag before", "flag after", "environment"])
def test_every_error_is_one_json_document_and_one_line(case: str, how: str) -> None:
    args, code, needle = ERROR_CASES[case]
    env = {}
    if how == "flag before":
        args = ["-o", "json", *args]
    elif how == "flag after":
        args = [*args, "-o", "json"]
    else:
        env = {"CODERCTL_OUTPUT": "json"}
    r = run_cli(*args, env=env)
    assert r.code == code, r.output
    assert needle in one_line(r)
    json_error(r)


@pytest.mark.parametrize("args", [["verify", "--via", "carrier"], ["--timeout", "-1", "verify"], ["bogus"],
                                  ["config", "init", "--nope"]])
def test_click_usage_errors_are_one_line_naming_the_help(args: list[str]) -> None:
    r = run_cli(*args)
    assert r.code == 2 and r.stdout == ""
    line = one_line(r)
    assert line.startswith("coderctl: error: ") and "--help" in line


@pytest.mark.parametrize(("path", "cmd"), LEAVES, ids=LEAF_IDS)
def test_every_command_prints_a_json_error_document(path: tuple[str, ...], cmd: click.Command) -> None:
    r = run_cli(*path, "--no-such-flag", "-o", "json")
    assert r.code == 2
    assert json_error(r)["command"] == " ".join(path)


def test_debug_only_adds_the_traceback() -> None:
    plain = run_cli("--kubeconfig", "/nonexistent", "verify")
    for args, env in ((["--debug"], {}), ([], {"CODERCTL_DEBUG": "1"})):
        r = run_cli(*args, "--kubeconfig", "/nonexistent", "verify", env=env)
        assert r.code == plain.code == 2
        assert "Traceback" in r.stderr and r.stderr.splitlines()[-1] == plain.stderr.strip()


def test_config_init_prints_json(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    r = run_cli("-o", "json", "config", "init", "--path", str(path))
    assert r.code == 0 and r.stderr == ""
    doc = json.loads(r.stdout)
    assert doc["command"] == "config init" and doc["path"] == str(path) and doc["profile"] == "default"


# --- configuration errors are configuration errors -------------------------------------------------------


def test_non_utf8_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b'[profiles.default]\nnamespace = "\xff\xfe"\n')
    r = run_cli("--config", str(path), "-o", "json", "config", "show")
    assert r.code == 2 and "not UTF-8" in one_line(r)
    json_error(r)


def test_non_utf8_database_url_is_a_config_error_in_a_real_process(tmp_path: Path) -> None:
    bad = os.fsdecode(b"postgresql://coder:s\xffcret@127.0.0.1:1/coder")
    r = run_subprocess("--kubeconfig", "/nonexistent", "backup", "create", "--database-url", bad,
                       "--output-dir", str(tmp_path / "b"))
    assert r.code == 2, r.output
    assert "database_url is not valid UTF-8" in r.stderr and "internal error" not in r.stderr
    r = run_subprocess("-o", "json", "config", "show", env={"CODERCTL_DATABASE_URL": bad})
    assert r.code == 2 and "CODERCTL_DATABASE_URL" in r.stderr
    json_error(r)


def test_non_utf8_setting_names_its_origin_not_its_value() -> None:
    from coderctl.profile import load_settings

    with pytest.raises(ConfigError, match="environment CODERCTL_DATABASE_URL: database_url is not valid UTF-8"):
        load_settings(environ={"CODERCTL_DATABASE_URL": os.fsdecode(b"postgresql://u:p\xff@h/d")})


@settings(max_examples=60, deadline=None)
@given(name=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(str.strip))
def test_config_init_writes_any_profile_name_readably(name: str) -> None:
    import tempfile

    from coderctl.config_file import write_template
    from coderctl.profile import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        write_template(path, profile=name, force=False)
        assert load_settings(config=str(path), environ={}).profile == name
        assert load_settings(config=str(path), profile=name, environ={}).namespace == "coder"


def test_config_init_profile_with_a_space_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    assert run_cli("config", "init", "--path", str(path), "--profile-name", "my prof").code == 0
    r = run_cli("--config", str(path), "--profile", "my prof", "-o", "json", "config", "show")
    assert r.code == 0 and json.loads(r.stdout)["profile"] == "my prof"
    assert run_cli("config", "init", "--path", str(tmp_path / "d.toml"), "--profile-name", " ").code == 2


@pytest.mark.parametrize("under", ["file/c.toml", "file/deeper/c.toml"])
def test_config_init_under_a_regular_file_is_a_clear_error(tmp_path: Path, under: str) -> None:
    (tmp_path / "file").write_text("x")
    r = run_cli("config", "init", "--path", str(tmp_path / under))
    assert r.code == 2
    assert f"{tmp_path / 'file'} is a file, not a directory" in one_line(r)


# --- what the messages, fixes and docs tell the user to run exists -----------------------------------------

COMMAND_LINE = re.compile(r"(?<![\w/.-])coderctl((?:[ \t]+[^\s`'\")]+)+)")
STOP = {"|", ">", ">>", "<", "#", "&&", ";", "...", "||", "2>&1", "\\"}


def code_spans(markdown: str) -> Iterator[str]:
    """The command lines of a Markdown file: lines of fenced blocks, and inline code."""
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield line
        else:
            yield from re.findall(r"`([^`]+)`", line)


def python_strings(path: Path) -> Iterator[str]:
    """Every string constant of a module, f-strings with their fields as `X`; docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value
        elif isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)


def mentions() -> list[tuple[str, str]]:
    """(where, command line) for every `coderctl ...` the user is told to run."""
    from coderctl.cli.examples import EXAMPLES
    from coderctl.problems import CODES

    found: list[tuple[str, str]] = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for span in code_spans(doc.read_text()):
            found += [(doc.name, m) for m in COMMAND_LINE.findall(span)]
    for module in sorted((ROOT / "coderctl").rglob("*.py")):
        for text in python_strings(module):
            found += [(str(module.relative_to(ROOT)), m) for m in COMMAND_LINE.findall(text)]
    for code in CODES.values():
        for fix in getattr(code, "fix", ()) or ():
            found += [(f"problem {code.code}", m) for m in COMMAND_LINE.findall(str(fix))]
    for path, lines in EXAMPLES.items():
        found += [(f"examples of {path}", m) for line in lines for m in COMMAND_LINE.findall(line)]
    return found


PROSE = re.compile(r"^[a-z][a-z-]*$")
"""What a command name looks like; a first word that does not, or is not close to one, is prose."""


def unknown_in(line: str) -> str | None:
    """What in `coderctl LINE` the command tree does not accept, or None."""
    from coderctl.cli import cli

    ctx = click.Context(cli, info_name="coderctl")
    cmd: click.Command = cli
    tokens = line.replace("\\|", "|").split()
    first = True
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in STOP or token == "X" or token.startswith(("#", "[", "<", "{", "$")):
            return None  # the end of the command line, or a value only known at run time
        if token.startswith("-") and len(token) > 1 and not token[1].isdigit():
            name = token.split("=", 1)[0]
            name = "-v" if re.fullmatch(r"-v+", name) else name
            param = next((p for p in cmd.params if name in (*p.opts, *p.secondary_opts)), None)
            if param is None and name not in ctx.help_option_names:
                return f"{name} (not an option of {ctx.command_path})"
            if isinstance(param, click.Option) and not (param.is_flag or param.count) and "=" not in token:
                i += 1
        elif isinstance(cmd, click.Group):
            alternatives = token.split("|")
            subs = [cmd.get_command(ctx, a) for a in alternatives]
            if None in subs:
                if first and not (PROSE.match(token) and difflib.get_close_matches(token, cli.list_commands(ctx),
                                                                                     cutoff=0.8)):
                    return None  # prose ("coderctl reads ..."), not a misspelt command
                return f"{token!r} (not a command of {ctx.command_path})"
            sub = subs[0]
            assert sub is not None
            ctx = click.Context(sub, parent=ctx, info_name=alternatives[0])
            cmd = sub
        first = False
        i += 1
    return None


def test_every_command_line_the_user_is_told_to_run_exists() -> None:
    found = mentions()
    assert len(found) > 50
    bad = sorted({f"{where}: coderctl{line} -> {problem}" for where, line in found
                  if (problem := unknown_in(line)) is not None})
    assert not bad, "\n".join(bad)


def test_options_named_in_check_messages_are_accepted_by_verify() -> None:
    """Every check runs under `coderctl verify`: a coderctl option that a check's message names (outside a
    full `coderctl ...` line, checked above) must be one verify accepts. Options of other tools (kubectl's
    --overwrite, infisical's --path) are told apart by not being coderctl's, or by standing alone in an
    argv list."""
    from coderctl.cli import cli

    ctx = click.Context(cli)
    verify = cli.get_command(ctx, "verify")
    assert verify is not None
    accepted = {o for p in verify.params for o in (*p.opts, *p.secondary_opts)}
    ours = {o for _, cmd in LEAVES for p in cmd.params for o in (*p.opts, *p.secondary_opts)} - accepted
    others = re.compile(r"\b(kubectl|infisical|flux|helm|pg_\w+|psql|curl|openssl|dig|grep)\b")
    described = {("derp.py", "--count"), ("derp.py", "--hold")}  # titles naming probe derp's knobs, not advice
    bad = []
    for module in sorted((ROOT / "coderctl" / "checks").rglob("*.py")):
        for text in python_strings(module):
            text = COMMAND_LINE.sub("", text)
            if others.search(text) or text.strip() in ours:
                continue
            bad += [f"{module.relative_to(ROOT)}: {option} in {text.strip()!r}"
                    for option in re.findall(r"(?<![\w-])--[a-z][a-z-]+", text)
                    if option in ours and (module.name, option) not in described]
    assert not bad, "\n".join(bad)


def test_the_checker_catches_what_it_is_for() -> None:
    assert unknown_in(" verify --wildcard-url '*.x'") is not None
    assert unknown_in(" verfy") is not None
    assert unknown_in(" probe http --wildcard-url X") is None
    assert unknown_in(" backup restore FILE --yes") is None
    assert unknown_in(" reads the Secret") is None


# --- kubectl habits ---------------------------------------------------------------------------------------

GLOBAL_ARGS = ["-n", "ns-after", "--timeout", "2", "-o", "json", "--context", "c", "--kubeconfig", "k",
               "--profile", "p", "--config", "f", "-v", "--debug", "--no-color"]


@pytest.mark.parametrize(("path", "cmd"), LEAVES, ids=LEAF_IDS)
def test_global_options_parse_after_every_command(path: tuple[str, ...], cmd: click.Command) -> None:
    from coderctl.cli import GLOBALS, cli

    root = click.Context(cli, info_name="coderctl")
    positional = ["FILE"] if any(isinstance(p, click.Argument) and p.required for p in cmd.params) else []
    if path == ("completion",):
        positional = ["bash"]
    ctx = cmd.make_context(path[-1], [*positional, *GLOBAL_ARGS], parent=root)
    given = ctx.meta[GLOBALS]
    assert given["namespace"] == "ns-after" and given["timeout"] == 2.0 and given["output"] == "json"
    assert given["kube_context"] == "c" and given["config_path"] == "f" and given["debug"] is True


def test_global_options_after_the_command_take_effect(tmp_path: Path) -> None:
    r = run_cli("config", "show", "-n", "after", "--timeout", "2", "-o", "json")
    values = json.loads(r.stdout)["values"]
    assert values["namespace"] == {"value": "after", "source": "flag"}
    assert values["timeout"] == {"value": 2.0, "source": "flag"}
    r = run_cli("-n", "before", "config", "show", "-n", "after", "-o", "json")
    assert json.loads(r.stdout)["values"]["namespace"]["value"] == "after"
    r = run_cli("verify", "--list", "-o", "json")
    assert r.code == 0 and json.loads(r.stdout)["checks"]


def kubeconfig(path: Path, *, contexts: dict[str, str | None], current: str) -> Path:
    ctx_lines = "".join(
        f"- name: {name}\n  context: {{cluster: c, user: u{', namespace: ' + ns if ns else ''}}}\n"
        for name, ns in contexts.items())
    path.write_text("apiVersion: v1\nkind: Config\n"
                    "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
                    "users: [{name: u, user: {token: t}}]\n"
                    f"contexts:\n{ctx_lines}current-context: {current}\n")
    return path


def test_namespace_precedence_flag_env_profile_kubeconfig_default(tmp_path: Path) -> None:
    kc = kubeconfig(tmp_path / "kc", contexts={"prod": "from-context", "bare": None}, current="prod")
    show = ("-o", "json", "config", "show")

    def namespace(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
        r = run_cli("--kubeconfig", str(kc), *args, *show, env=env)
        assert r.code == 0, r.output
        return dict(json.loads(r.stdout)["values"]["namespace"])

    assert namespace() == {"value": "from-context", "source": "kubeconfig context prod"}
    assert namespace("--context", "bare") == {"value": "coder", "source": "default"}
    assert namespace(env={"CODERCTL_NAMESPACE": "from-env"})["source"] == "env CODERCTL_NAMESPACE"
    assert namespace("-n", "from-flag") == {"value": "from-flag", "source": "flag"}
    cfg = tmp_path / "c.toml"
    cfg.write_text('[profiles.default]\nnamespace = "from-profile"\n')
    assert namespace("--config", str(cfg))["source"] == "profile default"
    r = run_cli("--kubeconfig", str(kc), "config", "show")
    assert "from-context  [kubeconfig context prod]" in r.stdout


def test_kubeconfig_list_skips_missing_files_and_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from coderctl.clients.kube import _load_connection as _load_configuration

    first = kubeconfig(tmp_path / "a", contexts={"a": "ns-a"}, current="a")
    second = tmp_path / "b"
    second.write_text("apiVersion: v1\nkind: Config\n"
                      "clusters: [{name: c2, cluster: {server: 'https://127.0.0.2:6443'}}]\n"
                      "users: [{name: u2, user: {token: t2}}]\n"
                      "contexts: [{name: b, context: {cluster: c2, user: u2}}]\n")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)]))
    assert _load_configuration(None, None).host == "https://127.0.0.1:6443"
    assert _load_configuration(None, "b").host == "https://127.0.0.2:6443"
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "x"), str(tmp_path / "y")]))
    with pytest.raises(ConfigError, match="none of the kubeconfig files exists"):
        _load_configuration(None, None)


def test_unknown_context_lists_the_contexts(tmp_path: Path) -> None:
    kc = kubeconfig(tmp_path / "kc", contexts={"prod": None, "lab": None}, current="prod")
    r = run_cli("--kubeconfig", str(kc), "--context", "staging", "verify", "--only", "cluster")
    assert r.code == 2
    assert "no context 'staging' (contexts: lab, prod)" in one_line(r)


@pytest.mark.parametrize(("content", "needle"), [("- a\n- b\n", "is a YAML list"), (None, "is a directory"),
                                                 ("just text\n", "is a YAML str")])
def test_kubeconfig_that_is_not_a_mapping_says_what_it_is(tmp_path: Path, content: str | None, needle: str) -> None:
    path = tmp_path / "kc"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    r = run_cli("--kubeconfig", str(path), "verify", "--only", "cluster")
    assert r.code == 2 and needle in one_line(r)


def help_text(*args: str) -> str:
    r = run_cli(*args, "--help", env={"COLUMNS": "200"})
    assert r.code == 0
    return r.stdout


def test_help_shows_every_environment_variable() -> None:
    from coderctl.cli.examples import OPTION_FIELDS
    from coderctl.profile import FIELDS_BY_NAME

    top = help_text()
    for var in ("CODERCTL_CONFIG", "CODERCTL_PROFILE", "KUBECONFIG", "CODERCTL_CONTEXT", "CODERCTL_NAMESPACE",
                "CODERCTL_OUTPUT", "CODERCTL_TIMEOUT", "CODERCTL_DEBUG", "NO_COLOR"):
        assert f"env: {var}" in top, var
    for name in ("kubeconfig", "context", "namespace", "timeout"):
        assert FIELDS_BY_NAME[name].env_var in top
    for path, cmd in LEAVES:
        text = help_text(*path)
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.hidden:
                continue
            f = FIELDS_BY_NAME.get(OPTION_FIELDS.get(p.name or "", p.name or ""))
            env = p.envvar if isinstance(p.envvar, str) else f.env_var if f else None
            if env:
                assert f"env: {env}" in " ".join(text.split()), (path, p.name)


@pytest.mark.parametrize(("path", "cmd"), LEAVES, ids=LEAF_IDS)
def test_help_has_examples(path: tuple[str, ...], cmd: click.Command) -> None:
    text = help_text(*path)
    examples = text.split("Examples:", 1)[1]
    assert len(re.findall(rf"^\s+coderctl .*{re.escape(path[0])}", examples, re.M)) >= 1


def completions(args: list[str], incomplete: str) -> list[str]:
    from click.shell_completion import ShellComplete

    from coderctl.cli import cli

    return [c.value for c in ShellComplete(cli, {}, "coderctl", "_CODERCTL_COMPLETE").get_completions(
        args, incomplete)]


def test_completion_of_option_values(tmp_path: Path) -> None:
    assert {"cluster", "network", "dns"} <= set(completions(["verify", "--only"], ""))
    assert "derp.hold" in completions(["verify", "--skip"], "derp.")
    assert all(c.startswith("derp.") for c in completions(["verify", "--skip"], "derp."))
    cfg = tmp_path / "c.toml"
    cfg.write_text('[profiles.lab]\n[profiles.prod]\n[profiles."my prof"]\n')
    assert completions(["--config", str(cfg), "--profile"], "") == ["lab", "prod", "my prof"]
    assert completions(["--config", str(cfg), "verify", "--profile"], "p") == ["prod"]
    kc = kubeconfig(tmp_path / "kc", contexts={"prod": None, "lab": None}, current="prod")
    assert completions(["--kubeconfig", str(kc), "--context"], "") == ["prod", "lab"]
    assert completions(["--kubeconfig", str(kc), "verify", "--context"], "l") == ["lab"]


def test_completion_through_the_shell_protocol(tmp_path: Path) -> None:
    env = {**os.environ, "_CODERCTL_COMPLETE": "bash_complete", "COMP_WORDS": "coderctl verify --only ",
           "COMP_CWORD": "3"}
    proc = subprocess.run([sys.executable, "-m", "coderctl"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
    assert "plain,network" in proc.stdout.splitlines()


# --- startup: commands load when they run -----------------------------------------------------------------


def test_top_level_help_loads_no_command_and_no_settings() -> None:
    code = (
        "import sys; from coderctl.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('coderctl')), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stderr.strip() == "['coderctl', 'coderctl.cli', 'coderctl.cli.options']"
    assert "verify" in proc.stdout and "Examples:" in proc.stdout


def test_lazy_command_table_matches_the_commands() -> None:
    from coderctl.cli import COMMANDS, cli

    ctx = click.Context(cli, info_name="coderctl")
    assert cli.list_commands(ctx)
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None and cmd.name == name
        assert COMMANDS[name].summary == cmd.get_short_help_str(limit=10**6), name


def test_completion_prints_json_with_o_json() -> None:
    r = run_cli("completion", "bash", "-o", "json")
    doc = json.loads(r.stdout)
    assert r.code == 0 and doc["command"] == "completion" and "_CODERCTL_COMPLETE" in doc["script"]


def test_a_group_without_its_command_shows_its_help_or_one_json_document() -> None:
    r = run_cli("probe")
    assert r.code == 2 and r.stdout == "" and "Usage: coderctl probe" in r.stderr
    r = run_cli("probe", "-o", "json")
    assert json_error(r)["command"] == "probe"
    r = run_cli("-o", "json", "config")
    assert r.code == 2 and json_error(r)["command"] == "config"


def test_global_options_between_group_and_command() -> None:
    r = run_cli("config", "-n", "between", "show", "-o", "json")
    assert json.loads(r.stdout)["values"]["namespace"] == {"value": "between", "source": "flag"}
