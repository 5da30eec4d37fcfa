"""The command contract: exit codes, one-line errors, JSON on stdout only, fast help, docs and completions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from clirun import ROOT, run_cli, run_subprocess
from coderctl import __version__

HEAVY = ("kubernetes", "psycopg", "dns", "websockets", "infisical_sdk", "urllib3", "nacl")


def all_commands() -> list[tuple[str, ...]]:
    """Every command path, the lazily loaded ones included."""
    from coderctl.cli import cli

    found: list[tuple[str, ...]] = []

    def walk(cmd: click.Command, ctx: click.Context, path: tuple[str, ...]) -> None:
        if path:
            found.append(path)
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                walk(sub, click.Context(sub, parent=ctx, info_name=name), (*path, name))

    walk(cli, click.Context(cli, info_name="coderctl"), ())
    return found


def test_version() -> None:
    r = run_cli("--version")
    assert r.code == 0 and __version__ in r.stdout


@pytest.mark.parametrize("command", all_commands(), ids=" ".join)
def test_every_command_has_help_and_a_docs_page(command: tuple[str, ...]) -> None:
    r = run_cli(*command, "--help")
    assert r.code == 0 and "Usage:" in r.stdout
    page = ROOT / "docs" / f"{command[0]}.md"
    assert page.is_file(), f"docs/{command[0]}.md is missing"
    assert f"coderctl {' '.join(command)}" in page.read_text(), f"{page} does not document {' '.join(command)}"


@pytest.mark.parametrize("args", [["--help"], ["verify", "--help"], ["config", "--help"]])
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    code = (
        "import sys; from coderctl.cli import cli\n"
        f"cli.main(args={args!r}, standalone_mode=False)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stderr.strip() == "[]"


def test_completions_are_current() -> None:
    from coderctl.cli.completion import completion_script

    files = {"bash": "coderctl.bash", "zsh": "_coderctl", "fish": "coderctl.fish"}
    for shell, name in files.items():
        committed = (ROOT / "completions" / name).read_text()
        assert committed == completion_script(shell), f"completions/{name} is stale: python scripts/gen_completions.py"
    r = run_cli("completion", "bash")
    assert r.code == 0 and "_CODERCTL_COMPLETE" in r.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--kubeconfig", "/nonexistent", "verify"], "kubeconfig /nonexistent does not exist"),
        (["--output", "yaml", "verify"], "Invalid value for '-o' / '--output'"),
        (["--timeout", "-1", "verify"], "--timeout"),
        (["--profile", "nope", "verify"], "profile 'nope' is not defined"),
        (["--config", "/nonexistent.toml", "config", "show"], "does not exist"),
        (["verify", "--only", "kitchen"], "--only 'kitchen'"),
        (["verify", "--skip", "no.such"], "--skip 'no.such'"),
        (["verify", "--resolve", "bogus", "--only", "network", "--access-url", "https://x.test"], "--resolve"),
        (["verify", "--no-such-flag"], "No such option"),
        (["completion", "tcsh"], "Invalid value"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    r = run_cli(*args)
    assert r.code == 2, r.output
    assert needle in r.stderr
    assert "Traceback" not in r.output
    assert r.stdout == ""


def test_invalid_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [\n")
    r = run_cli("--kubeconfig", str(bad), "verify")
    assert r.code == 2 and r.stderr.count("\n") == 1 and "is not valid" in r.stderr


def test_nonexistent_kubeconfig_as_a_real_process() -> None:
    r = run_subprocess("--kubeconfig", "/nonexistent", "verify")
    assert r.code == 2
    assert r.stderr.strip().splitlines() == ["coderctl: error: kubeconfig /nonexistent does not exist"]
    assert r.stdout == ""


def closed_port_kubeconfig(tmp_path: Path) -> Path:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    return path


def test_closed_port_fails_cluster_reachable_quickly(tmp_path: Path) -> None:
    """A refused connection is an answer: the check fails at once instead of waiting out --timeout."""
    kubeconfig = closed_port_kubeconfig(tmp_path)
    r = run_subprocess("--kubeconfig", str(kubeconfig), "--timeout", "2", "-o", "json", "verify",
                       "--only", "cluster")
    assert r.code == 1, r.output
    doc = json.loads(r.stdout)
    status = {c["id"]: c["status"] for c in doc["checks"]}
    assert status["cluster.reachable"] == "fail"
    assert status["coder.deployment"] == status["coder.pods"] == "skip"
    reachable = next(c for c in doc["checks"] if c["id"] == "cluster.reachable")
    assert "connection refused" in reachable["detail"]
    assert reachable["duration_s"] < 2, reachable


def test_json_output_is_one_document_on_stdout(tmp_path: Path) -> None:
    r = run_cli("--kubeconfig", str(closed_port_kubeconfig(tmp_path)), "-o", "json", "verify", "--only", "cluster")
    doc = json.loads(r.stdout)
    assert set(doc) == {"coderctl", "command", "started_at", "duration_s", "summary", "checks"}
    assert doc["command"] == "verify" and doc["summary"]["fail"] == 1


def test_plain_text_when_piped(tmp_path: Path) -> None:
    r = run_cli("--kubeconfig", str(closed_port_kubeconfig(tmp_path)), "verify", "--only", "cluster")
    assert "[fail]" in r.stdout and "-> fix:" in r.stdout and "\x1b[" not in r.stdout
    assert re.search(r"^0 ok, 0 warn, 1 fail, \d+ skip, 0 error in ", r.stdout, re.M)


def test_verify_list() -> None:
    r = run_cli("verify", "--list")
    assert r.code == 0
    for cid in ("cluster.reachable", "coder.deployment", "coder.pods", "http.healthz"):
        assert cid in r.stdout
    doc = json.loads(run_cli("-o", "json", "verify", "--list", "--only", "network").stdout)
    ids = [c["id"] for c in doc["checks"]]
    assert ids[0] == "http.healthz" and {c["category"] for c in doc["checks"]} == {"network"}


def test_every_check_is_documented() -> None:
    from coderctl.checks.registry import all_checks

    text = (ROOT / "docs" / "verify.md").read_text()
    for c in all_checks():
        assert f"`{c.id}`" in text, c.id


def test_every_setting_is_documented() -> None:
    from coderctl.profile import FIELDS

    text = (ROOT / "docs" / "configuration.md").read_text()
    for f in FIELDS:
        assert f"`{f.name}`" in text and f"`{f.env_var}`" in text, f.name


def test_config_init_and_show_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "coderctl.toml"
    r = run_cli("config", "init", "--path", str(path), "--profile-name", "home")
    assert r.code == 0 and path.is_file()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert run_cli("config", "init", "--path", str(path)).code == 2
    text = path.read_text().replace('namespace = "coder"', 'namespace = "elsewhere"')
    path.write_text(text)
    r = run_cli("--config", str(path), "-o", "json", "config", "show")
    doc = json.loads(r.stdout)
    assert doc["profile"] == "home"
    assert doc["values"]["namespace"] == {"value": "elsewhere", "source": "profile home"}
    assert doc["values"]["postgres_service"]["value"] == "coder-coder-postgresql"
    r = run_cli("--config", str(path), "-n", "flagged", "config", "show")
    assert "flagged  [flag]" in r.stdout


def test_config_show_masks_the_database_password() -> None:
    url = "postgresql://coder:Zq9-secret-value@db:5432/coder"
    r = run_cli("-o", "json", "config", "show", env={"CODERCTL_DATABASE_URL": url})
    assert "Zq9-secret-value" not in r.output
    assert json.loads(r.stdout)["values"]["database_url"]["value"] == "postgresql://coder:***@db:5432/coder"


def test_configuration_doc_is_current() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_config_doc
    finally:
        sys.path.pop(0)
    current = gen_config_doc.DOC.read_text()
    assert gen_config_doc.render(current) == current, "docs/configuration.md is stale: python scripts/gen_config_doc.py"


def test_malformed_db_address_is_a_usage_error() -> None:
    r = run_cli("verify", "--only", "network", "--access-url", "https://x.test", "--via", "direct",
                "--db-address", "nohostport")
    assert r.code == 2 and "--db-address 'nohostport'" in r.stderr
