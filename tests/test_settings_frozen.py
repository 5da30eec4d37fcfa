"""Settings are frozen once the command has parsed its flags; options are passed explicitly; nothing flows
back up into the settings (docs/architecture.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from clirun import run_cli
from lab.coder import FakeCoder
from lab.deployment import Lab
from lab.nginx import LabNginx
from lab.tls import LabCA
from probeargs import by_id, network_args, run_json

from coderctl.context import App, DerpOptions
from coderctl.profile import Value, load_settings, override


@pytest.fixture
def apps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[App]]:
    """The Apps the CLI builds while a test runs it in-process (observed, not replaced)."""
    import coderctl.cli

    made: list[App] = []
    real = coderctl.cli.make_app

    def observe(ctx):  # type: ignore[no-untyped-def]
        app = real(ctx)
        made.append(app)
        return app

    monkeypatch.setattr(coderctl.cli, "make_app", observe)
    yield made


def test_set_and_override_raise_after_freeze() -> None:
    s = load_settings(environ={})
    override(s, {"access_url": "https://coder.example.org", "insecure": None})
    s.set("namespace", "ops", "kubeconfig context lab")
    s.freeze()
    s.freeze()
    assert s.frozen and s.access_url == "https://coder.example.org"
    assert s.source("namespace") == "kubeconfig context lab"
    with pytest.raises(RuntimeError, match="frozen"):
        s.set("namespace", "other", "cluster")
    with pytest.raises(RuntimeError, match="frozen"):
        override(s, {"access_url": "https://elsewhere.example.org"})
    with pytest.raises(RuntimeError, match="frozen"):
        override(s, {"access_url": None})
    with pytest.raises(TypeError):
        s.values["namespace"] = Value("other", "cluster")  # type: ignore[index]
    assert s.namespace == "ops" and s.access_url == "https://coder.example.org"


@pytest.mark.parametrize("use", ["cached", "http", "freeze"])
def test_app_freezes_its_inputs_at_first_use(use: str) -> None:
    app = App(settings=load_settings(environ={}))
    app.derp = DerpOptions(count=2)
    override(app.settings, {"timeout": "2"})
    assert not app.frozen
    {"cached": lambda: app.cached("k", lambda: 1), "http": app.http, "freeze": app.freeze}[use]()
    assert app.frozen and app.settings.frozen
    with pytest.raises(RuntimeError, match="frozen"):
        override(app.settings, {"timeout": "3"})
    with pytest.raises(RuntimeError, match="derp"):
        app.derp = DerpOptions(count=3)
    with pytest.raises(RuntimeError, match="settings"):
        app.settings = load_settings(environ={})
    assert app.derp == DerpOptions(count=2) and app.timeout == 2.0


def test_derp_options_are_typed_with_a_default() -> None:
    assert App(settings=load_settings(environ={})).derp == DerpOptions(count=5, hold=0.0)
    assert App(settings=load_settings(environ={}), derp=DerpOptions(count=7, hold=1.5)).derp.count == 7
    with pytest.raises(ValueError):
        DerpOptions(count=0)
    with pytest.raises(ValueError):
        DerpOptions(hold=float("nan"))


def test_settings_are_frozen_after_a_command_ran(lab: Lab, apps: list[App]) -> None:
    r = run_cli(*lab.verify("--only", "cluster"))
    assert r.stdout.startswith("{"), r.output
    [app] = apps
    assert app.frozen
    assert app.settings.access_url == lab.access_url and app.settings.source("access_url") == "flag"
    with pytest.raises(RuntimeError):
        override(app.settings, {"access_url": "https://late.example.org"})


def test_config_show_discover_leaves_settings_untouched(lab: Lab, apps: list[App]) -> None:
    r = run_cli(*lab.args("-o", "json"), "config", "show", "--discover")
    lab.assert_no_secrets(r.stdout, r.stderr)
    values = json.loads(r.stdout)["values"]
    assert values["access_url"] == {"value": lab.access_url, "source": "cluster"}
    assert values["database_url"]["source"] == "cluster"
    assert values["database_url"]["value"].startswith("postgresql://coder:***@coder-coder-postgresql:5432/coder")
    assert values["namespace"]["source"] != "cluster"
    [app] = apps
    assert app.frozen
    for key in ("access_url", "database_url", "infisical_host", "infisical_token_secret"):
        assert app.settings.values[key] == Value(None, "default"), key

    text = run_cli(*lab.args(), "config", "show", "--discover")
    lab.assert_no_secrets(text.stdout, text.stderr)
    line = next(x for x in text.stdout.splitlines() if x.split()[:1] == ["access_url"])
    assert line.split() == ["access_url", lab.access_url, "[cluster]"]
    assert "postgresql://coder:***@" in text.stdout


def test_config_show_without_discover_reads_nothing_from_the_cluster(lab: Lab, apps: list[App]) -> None:
    r = run_cli(*lab.args("-o", "json"), "config", "show")
    values = json.loads(r.stdout)["values"]
    assert values["access_url"] == {"value": None, "source": "default"}
    assert apps[0].frozen


def test_probe_derp_options_reach_the_checks(
    lab_nginx: LabNginx, lab_ca: LabCA, fake_coder: FakeCoder, apps: list[App]
) -> None:
    r, doc = run_json("probe", "derp", "--count", "2", "--hold", "0.5", *network_args(lab_nginx, lab_ca))
    assert r.code == 0, r.output
    [app] = apps
    assert app.derp == DerpOptions(count=2, hold=0.5) and app.frozen
    checks = by_id(doc)
    assert checks["derp.keys"]["data"]["connections"] == 2
    assert len(checks["derp.latency-check"]["data"]["samples_ms"]) == 2
    assert checks["derp.hold"]["status"] == "ok"
