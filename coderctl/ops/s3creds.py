"""Where a bucket's credentials come from: explicit environment credentials, else the Kubernetes Secret named
by the `s3_credentials_secret` setting, else the AWS SDK's default chain (shared files, SSO, web identity,
instance metadata).

The Secret is for a CronJob whose ServiceAccount may read it: the keys stay out of the pod spec, out of argv
and out of every output. Its credential values are registered with the run's redactor as soon as they are
read; its endpoint and region are configuration, not secrets, and stay readable in error messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from coderctl.clients.kube import SECRETS
from coderctl.clients.kube_errors import KubeForbidden, KubeNotFound
from coderctl.context import App
from coderctl.errors import UsageError
from coderctl.facts.kube import decoded_data

SETTING = "s3_credentials_secret"
KEY_ID, SECRET_KEY, TOKEN = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"
CONFIG_KEYS = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
"""Keys of the Secret that are configuration: used when the environment does not set them, never masked."""


@dataclass(frozen=True)
class Credentials:
    """Explicit keys for boto3's session (None: let the SDK's chain find them) and where they came from."""

    origin: str
    key_id: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    config: Mapping[str, str] = field(default_factory=dict)
    """The Secret's endpoint and region keys, below the environment's."""

    @property
    def from_secret(self) -> bool:
        return self.key_id is not None

    def hint(self) -> str:
        """What to check when the server refuses these credentials."""
        if self.from_secret:
            return f"check {KEY_ID} / {SECRET_KEY} in the {self.origin} and the key's permissions"
        return f"check {KEY_ID} / {SECRET_KEY} / AWS_PROFILE and the key's permissions"


def explicit_in_env(env: Mapping[str, str]) -> bool:
    """Credentials the run's environment chose: keys, or a named shared-file profile."""
    return bool(env.get(KEY_ID) and env.get(SECRET_KEY)) or bool(env.get("AWS_PROFILE"))


def parse_reference(text: str, namespace: str) -> tuple[str, str]:
    ns, _, name = text.rpartition("/")
    ns = ns or namespace
    if not name or "/" in ns:
        raise UsageError(f"the {SETTING} setting {text!r} is not NAMESPACE/NAME or NAME")
    return ns, name


def resolve(app: App, env: Mapping[str, str] | None = None) -> Credentials:
    """Environment credentials win, then the configured Secret, then the AWS default chain."""
    env = os.environ if env is None else env
    reference = app.settings.s3_credentials_secret
    if explicit_in_env(env):
        return Credentials("environment")
    if not reference:
        return Credentials("AWS default chain")
    return read_secret(app, str(reference))


def read_secret(app: App, reference: str) -> Credentials:
    ns, name = parse_reference(reference, app.namespace)
    origin = f"Secret {ns}/{name}"
    try:
        data = decoded_data(app.kube().get(SECRETS, name, ns))
    except KubeNotFound:
        raise UsageError(f"{origin} (the {SETTING} setting) does not exist") from None
    except KubeForbidden:
        raise UsageError(f"may not read {origin} (the {SETTING} setting): grant get on secrets/{name} in "
                         f"namespace {ns}") from None
    app.redact.add(*(value for key, value in data.items() if key not in CONFIG_KEYS))
    missing = [k for k in (KEY_ID, SECRET_KEY) if not data.get(k)]
    if missing:
        raise UsageError(f"{origin} (the {SETTING} setting) has no {' or '.join(missing)} (it holds "
                         f"{', '.join(sorted(data)) or 'nothing'})")
    config = {k: data[k] for k in CONFIG_KEYS if data.get(k)}
    return Credentials(origin, data[KEY_ID], data[SECRET_KEY], data.get(TOKEN) or None, config)
