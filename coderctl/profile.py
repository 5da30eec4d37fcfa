"""The configuration model: fields, built-in defaults, loading from TOML profiles and the environment.

Precedence is flag > environment > profile > built-in default (and for the namespace, the kubeconfig
context's namespace before the built-in default, as kubectl does; the CLI applies that). The built-in
defaults are the reference deployment's names (see docs/configuration.md); every value remembers where it
came from so that `config show` can say so.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from coderctl.errors import ConfigError

Kind = Literal["str", "float", "int", "bool", "list"]


@dataclass(frozen=True)
class Field:
    name: str
    default: Any
    help: str
    kind: Kind = "str"
    section: str = "names"
    secret: bool = False
    env: str | None = None
    choices: tuple[str, ...] = ()

    @property
    def env_var(self) -> str:
        return self.env or f"CODERCTL_{self.name.upper()}"


FIELDS: tuple[Field, ...] = (
    # where the deployment lives
    Field("kubeconfig", None, "kubeconfig file (else $KUBECONFIG, ~/.kube/config, in-cluster)", section="cluster",
          env="KUBECONFIG"),
    Field("context", None, "kubeconfig context", section="cluster"),
    Field("namespace", "coder", "namespace of Coder and its PostgreSQL (unset: the kubeconfig context's "
          "namespace, else coder)", section="cluster"),
    Field("timeout", 5.0, "seconds allowed for each network operation", kind="float", section="cluster"),
    # names of the objects that make up the deployment
    Field("coder_deployment", "coder", "Coder Deployment"),
    Field("coder_container", "coder", "container of the Coder pod"),
    Field("coder_service", "coder", "Coder Service"),
    Field("access_ingress", "coder", "Ingress serving the access URL"),
    Field("wildcard_ingress", "coder-workspaces-wildcard", "Ingress serving the wildcard domain"),
    Field("postgres_statefulset", "coder-coder-postgresql", "PostgreSQL StatefulSet"),
    Field("postgres_service", "coder-coder-postgresql", "PostgreSQL Service"),
    Field("postgres_pod", "coder-coder-postgresql-0", "PostgreSQL pod (exec target for backups and logins)"),
    Field("postgres_container", "postgresql", "container of the PostgreSQL pod"),
    Field("database_secret", "coder-database-secrets", "managed Secret holding the database credentials"),
    Field("infisical_secret", "coder-database-secrets", "InfisicalSecret that fills the managed Secret"),
    Field("ingress_namespace", "ingress-nginx", "namespace of the NGINX ingress controller"),
    Field("ingress_controller", "ingress-nginx-controller",
          "name of the controller's Deployment, Service and ConfigMap"),
    Field("proxy_headers_configmap", "proxy-headers", "ConfigMap of extra proxy headers"),
    Field("metallb_namespace", "metallb-system", "namespace of MetalLB's IPAddressPools"),
    Field("flux_namespace", "flux-system", "namespace of the Flux Kustomization"),
    # discovered from the cluster unless set
    Field("access_url", None, "Coder access URL (discovered from CODER_ACCESS_URL)", section="discovered"),
    Field("wildcard_url", None, "wildcard access URL (discovered from CODER_WILDCARD_ACCESS_URL)",
          section="discovered"),
    Field("database_url", None, "database URL (discovered from the managed Secret)", section="discovered",
          secret=True),
    Field("infisical_host", None, "Infisical API (discovered from the InfisicalSecret's hostAPI)",
          section="discovered"),
    Field("infisical_project", None, "Infisical project id (else the secretsScope's projectId, else asked of "
          "Infisical for a service token; universal auth needs one of the first two)",
          section="discovered"),
    Field("infisical_environment", None, "Infisical environment slug (discovered from secretsScope.envSlug)",
          section="discovered"),
    Field("infisical_path", None, "Infisical secret path (discovered from secretsScope.secretsPath)",
          section="discovered"),
    Field("infisical_token_secret", None, "NAMESPACE/NAME of the operator's token Secret (discovered)",
          section="discovered"),
    # credentials: the environment is the place for them (the Infisical CLI's variable names)
    Field("infisical_client_id", None, "Infisical universal-auth client id (machine identity)",
          section="credentials", env="INFISICAL_UNIVERSAL_AUTH_CLIENT_ID"),
    Field("infisical_client_secret", None, "Infisical universal-auth client secret", section="credentials",
          secret=True, env="INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET"),
    Field("infisical_token", None, "Infisical access token or service token (st.ID.SECRET.KEY), used when "
          "universal auth is not set; without these three, the operator's service token Secret is used",
          section="credentials", secret=True,
          env="INFISICAL_TOKEN"),
    # what cannot be discovered: expectations
    Field("expected_coder_version", "v2.25.0", "Coder version the deployment should run", section="expect"),
    Field("expected_coder_ip", "192.168.80.105", "LoadBalancer IP of the Coder Service", section="expect"),
    Field("expected_postgres_ip", "192.168.80.103", "LoadBalancer IP of the PostgreSQL Service",
          section="expect"),
    Field("expected_ingress_ip", "192.168.80.101", "LoadBalancer IP of the ingress controller",
          section="expect"),
    Field("metallb_pool", "192.168.80.100-192.168.80.150", "MetalLB address range", section="expect"),
    Field("storage_class", "longhorn", "storage class of the PostgreSQL volume", section="expect"),
    Field("pvc_size", "20Gi", "size of the PostgreSQL volume", section="expect"),
    Field("coder_requests_cpu", "250m", "Coder CPU request", section="expect"),
    Field("coder_requests_memory", "512Mi", "Coder memory request", section="expect"),
    Field("coder_limits_cpu", "2000m", "Coder CPU limit", section="expect"),
    Field("coder_limits_memory", "4Gi", "Coder memory limit", section="expect"),
    Field("postgres_requests_cpu", "100m", "PostgreSQL CPU request", section="expect"),
    Field("postgres_requests_memory", "256Mi", "PostgreSQL memory request", section="expect"),
    Field("postgres_limits_cpu", "500m", "PostgreSQL CPU limit", section="expect"),
    Field("postgres_limits_memory", "512Mi", "PostgreSQL memory limit", section="expect"),
    Field("restart_warn_threshold", 3, "pod restarts above which coder.pods warns", kind="int", section="expect"),
    # database access
    Field("db_via", "exec", "how database checks log in: exec (psql inside the PostgreSQL pod) or direct",
          section="database", choices=("exec", "direct")),
    Field("db_address", None, "HOST:PORT for --via direct (e.g. a kubectl port-forward); default the URL's host",
          section="database"),
    # backups
    Field("backup_dir", None, "directory of backups [default: $XDG_DATA_HOME/coderctl/backups]", section="backup"),
    Field("backup_destination", None, "where backup create writes and list/prune/verify look: a directory or "
          "s3://BUCKET/PREFIX; wins over backup_dir [default: backup_dir]", section="backup"),
    Field("s3_credentials_secret", None, "NAMESPACE/NAME (or NAME, in the namespace) of a Secret holding "
          "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (optional AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL); "
          "used unless the environment sets AWS credentials", section="backup"),
    Field("s3_object_lock_mode", None, "object lock retention mode of each backup written to a bucket (the dump and "
          "its manifest), with s3_object_lock_days; the bucket must have object lock enabled", section="backup",
          choices=("GOVERNANCE", "COMPLIANCE")),
    Field("s3_object_lock_days", None, "days each backup written to a bucket stays locked, from its creation; with "
          "s3_object_lock_mode", kind="int", section="backup"),
    # network
    Field("resolve", [], "HOST:PORT:ADDRESS overrides, like curl --resolve", kind="list", section="network"),
    Field("nameserver", ["1.1.1.1", "8.8.8.8"], "DNS servers to ask (ADDRESS[:PORT])", kind="list",
          section="network"),
    Field("ca_file", None, "CA bundle for the access URL's certificate", section="network"),
    Field("insecure", False, "skip TLS certificate verification", kind="bool", section="network"),
)

FIELDS_BY_NAME = {f.name: f for f in FIELDS}

SECTIONS = {
    "cluster": "Where the deployment lives",
    "names": "Names of the deployment's objects (the reference deployment's by default)",
    "discovered": "Discovered from the cluster when unset",
    "credentials": "Credentials (best kept in the environment, not in a file)",
    "expect": "Expectations the cluster cannot tell",
    "database": "Database access",
    "backup": "Backups",
    "network": "Network",
}


@dataclass(frozen=True)
class Value:
    value: Any
    source: str


@dataclass
class Settings:
    """The effective configuration of one run: each field's value and where it came from.

    Settings are complete once the command has parsed its flags: the CLI loads them, applies the command's
    own flags (`override`), and the App freezes them the first time it is used for work (`App.freeze`).
    After `freeze()`, `set` and `override` raise RuntimeError (a programming error, never a user's) and
    `values` is read-only: whatever a run learns later (from the cluster, from Infisical) is its own data,
    passed explicitly, never written back here.
    """

    values: Mapping[str, Value]
    profile: str
    config_path: Path | None
    _frozen: bool = field(default=False, init=False, repr=False, compare=False)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name].value
        except KeyError:
            raise AttributeError(name) from None

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        """No more changes for this run (idempotent)."""
        if not self._frozen:
            self.values = MappingProxyType(dict(self.values))
            self._frozen = True

    def source(self, name: str) -> str:
        return self.values[name].source

    def set(self, name: str, value: Any, source: str) -> None:
        if self._frozen:
            raise RuntimeError(f"settings are frozen once the run has started: cannot set {name}")
        self.values = {**self.values, name: Value(value, source)}


@dataclass
class ConfigFile:
    path: Path | None
    default_profile: str | None = None
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)


def find_config_file(explicit: str | None) -> Path | None:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    local = Path("coderctl.toml")
    if local.is_file():
        return local
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    user = xdg / "coderctl" / "config.toml"
    return user if user.is_file() else None


def read_config_file(path: Path | None) -> ConfigFile:
    if path is None:
        return ConfigFile(path=None)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise ConfigError(f"config file {path}: [profiles.NAME] tables expected")
    unknown = set(data) - {"default_profile", "profiles"}
    if unknown:
        raise ConfigError(f"config file {path}: unknown top-level key {sorted(unknown)[0]!r}")
    return ConfigFile(path=path, default_profile=data.get("default_profile"), profiles=profiles)


def coerce(f: Field, raw: Any, origin: str) -> Any:
    """Turn a value from TOML, the environment or a flag into the field's type, or fail naming the origin."""
    if raw is None:
        return None
    _require_utf8(f, raw, origin)
    try:
        if f.kind == "float":
            value = float(raw)
            if value <= 0:
                raise ValueError
            return value
        if f.kind == "int":
            return int(raw)
        if f.kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError
        if f.kind == "list":
            if isinstance(raw, str):
                return [item.strip() for item in raw.split(",") if item.strip()]
            if isinstance(raw, (list, tuple)) and all(isinstance(i, str) for i in raw):
                return list(raw)
            raise ValueError
        if not isinstance(raw, str):
            raise ValueError
        if f.choices and raw not in f.choices:
            raise ValueError
        return raw
    except ValueError:
        expected = {"float": "a positive number", "int": "a whole number", "bool": "true or false",
                    "list": "a list of strings", "str": "a string"}[f.kind]
        if f.choices:
            expected = " or ".join(f.choices)
        raise ConfigError(f"{origin}: {f.name} must be {expected}") from None


def _require_utf8(f: Field, raw: Any, origin: str) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates (argv, environment); refused here, naming
    where they came from but never the value (it may be a secret)."""
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    for item in items:
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(f"{origin}: {f.name} is not valid UTF-8") from None


def load_settings(
    *,
    config: str | None = None,
    profile: str | None = None,
    flags: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    path = find_config_file(config)
    cfg = read_config_file(path)
    name = profile or cfg.default_profile or "default"
    if profile and profile not in cfg.profiles:
        where = f"in {path}" if path else "(no config file found)"
        raise ConfigError(f"profile {profile!r} is not defined {where}")
    if cfg.default_profile and cfg.default_profile not in cfg.profiles:
        raise ConfigError(f"config file {path}: default_profile {cfg.default_profile!r} is not defined")
    prof = cfg.profiles.get(name, {})
    unknown = set(prof) - set(FIELDS_BY_NAME)
    if unknown:
        raise ConfigError(f"config file {path}: profile {name!r} has unknown key {sorted(unknown)[0]!r}")

    values: dict[str, Value] = {}
    for f in FIELDS:
        value, source = f.default, "default"
        if f.name in prof:
            value, source = coerce(f, prof[f.name], f"{path} [profiles.{name}]"), f"profile {name}"
        if env.get(f.env_var) not in (None, ""):
            value, source = coerce(f, env[f.env_var], f"environment {f.env_var}"), f"env {f.env_var}"
        if flags and flags.get(f.name) not in (None, (), []):
            value, source = coerce(f, flags[f.name], f"--{f.name.replace('_', '-')}"), "flag"
        values[f.name] = Value(value, source)
    return Settings(values=values, profile=name, config_path=path)


def override(settings: Settings, flags: dict[str, Any]) -> None:
    """Apply command-line values (those given) on top of already loaded settings; only before they are frozen
    (RuntimeError after, even when no value was given, so that a late call fails every time)."""
    if settings.frozen:
        raise RuntimeError(f"settings are frozen once the run has started: cannot override {sorted(flags)}")
    for name, raw in flags.items():
        if raw in (None, (), []) or name not in FIELDS_BY_NAME:
            continue
        f = FIELDS_BY_NAME[name]
        settings.set(name, coerce(f, list(raw) if isinstance(raw, tuple) else raw, f"--{name.replace('_', '-')}"),
                     "flag")
