"""How to reach the API server: the address, TLS and credentials that a kubeconfig names.

A plain kubeconfig, as kubeadm, k3s, kind and service-account kubeconfigs are (a server, its CA, and a token, a
client certificate or a user name and password), is read here. Everything else goes through the official client's
loader, which knows every form and refreshes expiring tokens: an exec credential plugin, an auth provider, a proxy,
in-cluster configuration, and any entry with a key or a value this reading does not expect (so that the library
also gives its own error for a malformed one).

Why not always the library: importing it (`kubernetes.config` brings the generated client, pydantic, oauthlib,
requests) takes 0.35-0.45 s on the lab machine, against a few milliseconds for this, paid by every command that
talks to the cluster: most of a `verify --only cluster`, a tenth of a 400 MB backup through exec. The reading
follows the library's own rules (kubernetes/config/kube_config.py): a `token` wins over `tokenFile`; a token over
a user name and password; the CA and the client certificate count only for an https server; file paths are
relative to the kubeconfig file that defines the entry; the first file to define a name wins (kubeconfig.py).
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import Configuration

    from coderctl.clients.kubeconfig import Kubeconfigs

CLUSTER_KEYS = frozenset({"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify",
                          "tls-server-name"})
USER_KEYS = frozenset({"token", "tokenFile", "client-certificate", "client-certificate-data", "client-key",
                       "client-key-data", "username", "password"})


@dataclass(frozen=True)
class Connection:
    """The API server's address, how to trust it, and who we are to it. Holds credentials: never printed."""

    host: str
    authorization: str | None = None
    ca_file: str | None = None
    ca_pem: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    verify: bool = True
    tls_server_name: str | None = None
    proxy: str | None = None
    library: Configuration | None = None
    """The library's configuration, when it loaded this one: its hook refreshes expiring tokens."""

    def __repr__(self) -> str:
        return f"Connection(host={self.host!r})"

    def auth_headers(self) -> dict[str, str]:
        cfg = self.library
        if cfg is None:
            return {"Authorization": self.authorization} if self.authorization else {}
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken")
        if token:
            return {"Authorization": token}
        if cfg.username and cfg.password:
            return {"Authorization": str(cfg.get_basic_auth_token())}
        return {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """A new TLS context as the kubeconfig says (CA, client certificate, insecure-skip-tls-verify); None for
        http."""
        if not self.host.startswith("https"):
            return None
        # the kubeconfig's CA alone when it names one, as kubectl trusts it (and loading the system's store costs
        # 20-40 ms per context); the system's store otherwise
        ctx = ssl.create_default_context(cafile=self.ca_file or None, cadata=self.ca_pem or None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        elif self.cert_pem:
            _load_cert_data(ctx, self.cert_pem, self.key_pem)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _load_cert_data(ctx: ssl.SSLContext, cert: bytes, key: bytes | None) -> None:
    """ssl loads a certificate chain only from files: each is written to a private temporary file (0600), read,
    and removed at once (the library keeps its copies until the process exits)."""
    paths: list[str] = []
    try:
        for data in (cert, key):
            if data is None:
                continue
            fd, name = tempfile.mkstemp(prefix="coderctl-kube-")
            paths.append(name)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        ctx.load_cert_chain(paths[0], paths[1] if len(paths) > 1 else None)
    finally:
        for name in paths:
            os.unlink(name)


def from_library(cfg: Configuration) -> Connection:
    ca_data = getattr(cfg, "ca_cert_data", None)
    return Connection(
        host=str(cfg.host), ca_file=cfg.ssl_ca_cert or None,
        ca_pem=ca_data.decode() if isinstance(ca_data, bytes) else ca_data or None,
        cert_file=cfg.cert_file or None, key_file=cfg.key_file or None, verify=bool(cfg.verify_ssl),
        tls_server_name=cfg.tls_server_name or None, proxy=cfg.proxy or None, library=cfg,
    )


def plain(found: Kubeconfigs, context: str | None) -> Connection | None:
    """The connection of the context in use when its cluster and user are plain (see the module's docstring);
    None when the library must read them."""
    chosen = found.context(context)
    if chosen is None:
        return None
    entry = chosen[1]
    cluster_name, user_name = entry.get("cluster"), entry.get("user")
    if not isinstance(cluster_name, str) or cluster_name not in found.clusters:
        return None
    cluster, cluster_file = found.clusters[cluster_name]
    user: dict[str, Any] = {}
    user_file = cluster_file
    if user_name is not None:
        if not isinstance(user_name, str) or user_name not in found.users:
            return None
        user, user_file = found.users[user_name]
    if set(cluster) - CLUSTER_KEYS or set(user) - USER_KEYS:
        return None
    if any(not isinstance(v, str) for k, v in cluster.items() if k != "insecure-skip-tls-verify") \
            or not isinstance(cluster.get("insecure-skip-tls-verify", False), bool) \
            or any(not isinstance(v, str) for v in user.values()):
        return None
    server = cluster.get("server")
    if not server or not server.startswith(("https://", "http://")):
        return None
    try:
        authorization = _authorization(user, user_file.parent)
        https = server.startswith("https")
        none: tuple[str | None, bytes | None] = (None, None)
        ca_file, ca_pem = _file_or_data(cluster, "certificate-authority", cluster_file.parent) if https else none
        cert_file, cert_pem = _file_or_data(user, "client-certificate", user_file.parent) if https else none
        key_file, key_pem = _file_or_data(user, "client-key", user_file.parent) if https else none
    except _NotPlain:
        return None
    if (cert_file or cert_pem) and not (key_file or key_pem):
        return None
    return Connection(
        host=server.rstrip("/"), authorization=authorization, ca_file=ca_file,
        ca_pem=ca_pem.decode("ascii", "replace") if ca_pem else None,
        cert_file=cert_file, key_file=key_file, cert_pem=cert_pem, key_pem=key_pem,
        verify=not cluster.get("insecure-skip-tls-verify", False), tls_server_name=cluster.get("tls-server-name"),
    )


class _NotPlain(Exception):
    """Something the library should read (and report on, if it is wrong)."""


def _authorization(user: dict[str, Any], base: Path) -> str | None:
    if "token" in user:
        token = user["token"]
    elif "tokenFile" in user:
        try:
            token = (base / user["tokenFile"]).read_text()
        except (OSError, UnicodeDecodeError):
            raise _NotPlain from None
    else:
        token = ""
    if token:
        return f"Bearer {token}"
    if user.get("username") and user.get("password"):
        raw = f"{user['username']}:{user['password']}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")
    return None


def _file_or_data(entry: dict[str, Any], key: str, base: Path) -> tuple[str | None, bytes | None]:
    """(a file, else None; the decoded `KEY-data`, else None): the data wins, as in the library."""
    if f"{key}-data" in entry:
        try:
            data = base64.standard_b64decode(entry[f"{key}-data"])
        except (binascii.Error, ValueError):
            raise _NotPlain from None
        return None, data or None
    if key in entry:
        path = os.path.normpath(base / entry[key])
        if not os.path.isfile(path):
            raise _NotPlain
        return path, None
    return None, None
