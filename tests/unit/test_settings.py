from __future__ import annotations

from pathlib import Path

import pytest

from coderctl.errors import ConfigError
from coderctl.profile import FIELDS, load_settings, override


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_the_reference_deployment() -> None:
    s = load_settings(environ={})
    assert s.namespace == "coder"
    assert s.postgres_service == "coder-coder-postgresql"
    assert s.expected_coder_ip == "192.168.80.105"
    assert s.timeout == 5.0
    assert s.source("namespace") == "default"
    assert s.config_path is None


def test_precedence_flag_env_profile_default(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", '[profiles.default]\nnamespace = "from-profile"\ntimeout = 9\n'
                                     'coder_service = "svc-profile"\n')
    env = {"CODERCTL_NAMESPACE": "from-env", "CODERCTL_TIMEOUT": "7"}
    s = load_settings(config=str(cfg), environ=env, flags={"namespace": "from-flag"})
    assert (s.namespace, s.source("namespace")) == ("from-flag", "flag")
    assert (s.timeout, s.source("timeout")) == (7.0, "env CODERCTL_TIMEOUT")
    assert (s.coder_service, s.source("coder_service")) == ("svc-profile", "profile default")
    assert s.source("postgres_pod") == "default"


def test_profiles_and_default_profile(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", 'default_profile = "lab"\n[profiles.lab]\nnamespace = "lab"\n'
                                     '[profiles.prod]\nnamespace = "prod"\n')
    assert load_settings(config=str(cfg), environ={}).namespace == "lab"
    assert load_settings(config=str(cfg), profile="prod", environ={}).namespace == "prod"


def test_config_file_discovered_in_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "coderctl.toml", '[profiles.default]\nnamespace = "here"\n')
    s = load_settings(environ={})
    assert s.namespace == "here" and s.config_path == Path("coderctl.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[profiles.default\n", "not valid TOML"),
        ('[profiles.default]\nnamspace = "x"\n', "unknown key 'namspace'"),
        ('[profiles.default]\ntimeout = "soon"\n', "timeout must be a positive number"),
        ('default_profile = "nope"\n[profiles.default]\n', "default_profile 'nope' is not defined"),
        ('colour = 1\n', "unknown top-level key"),
    ],
)
def test_bad_config_files_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    cfg = write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError, match=message):
        load_settings(config=str(cfg), environ={})


def test_unknown_profile_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profile 'staging' is not defined"):
        load_settings(profile="staging", environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config=str(tmp_path / "missing.toml"), environ={})


def test_list_values_from_env_and_override() -> None:
    s = load_settings(environ={"CODERCTL_NAMESERVER": "127.0.0.1:5353, ::1"})
    assert s.nameserver == ["127.0.0.1:5353", "::1"]
    override(s, {"nameserver": ("127.0.0.2",), "insecure": True, "access_url": None})
    assert s.nameserver == ["127.0.0.2"] and s.insecure is True and s.source("insecure") == "flag"
    assert s.source("access_url") == "default"


def test_every_field_has_help_and_a_known_section() -> None:
    from coderctl.profile import SECTIONS

    for f in FIELDS:
        assert f.help and f.section in SECTIONS, f.name


def test_values_that_are_not_utf8_are_config_errors_naming_the_origin(tmp_path: Path) -> None:
    import os

    bad = os.fsdecode(b"ns\xff")
    with pytest.raises(ConfigError, match="environment CODERCTL_NAMESPACE: namespace is not valid UTF-8"):
        load_settings(environ={"CODERCTL_NAMESPACE": bad})
    with pytest.raises(ConfigError, match="--nameserver: nameserver is not valid UTF-8"):
        override(load_settings(environ={}), {"nameserver": ("1.1.1.1", bad)})
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b"# caf\xe9\n[profiles.default]\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_settings(config=str(cfg), environ={})


def test_namespace_help_names_the_kubeconfig_fallback() -> None:
    from coderctl.profile import FIELDS_BY_NAME

    assert "kubeconfig context" in FIELDS_BY_NAME["namespace"].help
