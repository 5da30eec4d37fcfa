"""How a kubeconfig becomes a connection (clients/kube_connection.py).

A plain kubeconfig is read without the official client; every such reading is compared here with the library's
own reading of the same file (host, Authorization header, CA, client certificate and key, verification, TLS
server name), so the two cannot drift apart. What is not plain (an exec plugin, an auth provider, a proxy, a key
this reading does not know, a missing file) goes to the library: an exec plugin works end to end against the
lab's API server, and the library's own errors are kept. A client certificate given as data authenticates a real
TLS handshake and leaves no file behind; credentials no HTTP header can carry are a configuration error that
does not show them."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from clirun import run_subprocess

from coderctl.clients import kube_connection, kube_exec
from coderctl.clients.kube import KubeClient, _load_configuration, _load_connection
from coderctl.clients.kube_connection import Connection
from coderctl.clients.kubeconfig import read_kubeconfigs
from coderctl.errors import ConfigError
from lab.kubeapi import FakeKubeAPI, kube_api  # noqa: F401

CA = trustme.CA()
CLIENT = CA.issue_cert("coderctl-user")
B64 = lambda data: base64.b64encode(data).decode()  # noqa: E731


def write(path: Path, cluster: dict[str, Any], user: dict[str, Any] | None) -> Path:
    config: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": cluster}],
        "contexts": [{"name": "x", "context": {"cluster": "c", **({"user": "u"} if user is not None else {})}}],
        "users": [{"name": "u", "user": user}] if user is not None else [],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def _files(tmp_path: Path) -> Path:
    """CA, client certificate and key, and a token, as files in a directory beside the kubeconfig's."""
    d = tmp_path / "conf" / "creds"
    d.mkdir(parents=True)
    (d / "ca.pem").write_bytes(CA.cert_pem.bytes())
    (d / "client.pem").write_bytes(CLIENT.cert_chain_pems[0].bytes())
    (d / "client.key").write_bytes(CLIENT.private_key_pem.bytes())
    (d / "token").write_text("token-from-a-file")
    return d


CASES: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "token and CA data": ({"server": "https://127.0.0.1:6443/", "certificate-authority-data": B64(CA.cert_pem.bytes())},
                          {"token": "abc.def"}),
    "token file and CA file, relative": ({"server": "https://k.example:6443", "certificate-authority": "creds/ca.pem"},
                                         {"tokenFile": "creds/token"}),
    "token wins over token file and basic": ({"server": "https://k:1"}, {"token": "t", "tokenFile": "creds/token",
                                                                        "username": "a", "password": "b"}),
    "empty token: basic": ({"server": "https://k:1"}, {"token": "", "username": "a b@c", "password": "p:/%"}),
    "insecure with a TLS server name": ({"server": "https://10.0.0.1:6443", "insecure-skip-tls-verify": True,
                                         "tls-server-name": "kubernetes.default"}, {"token": "t"}),
    "client certificate data": ({"server": "https://k:6443", "certificate-authority-data": B64(CA.cert_pem.bytes())},
                                {"client-certificate-data": B64(CLIENT.cert_chain_pems[0].bytes()),
                                 "client-key-data": B64(CLIENT.private_key_pem.bytes())}),
    "client certificate files, relative": ({"server": "https://k:6443"}, {"client-certificate": "creds/client.pem",
                                                                          "client-key": "creds/client.key"}),
    "http: CA and certificate ignored": ({"server": "http://127.0.0.1:8080", "certificate-authority": "creds/none.pem"},
                                         {"token": "t", "client-certificate": "creds/none.pem"}),
    "no user": ({"server": "https://k:6443", "certificate-authority-data": B64(CA.cert_pem.bytes())}, None),
}


def _read(path: str | None, data: str | bytes | None) -> bytes | None:
    if path:
        return Path(path).read_bytes()
    if isinstance(data, str):
        return data.encode()
    return data


def _facts(c: Connection) -> dict[str, Any]:
    return {"host": c.host, "headers": c.auth_headers(), "verify": c.verify, "tls_server_name": c.tls_server_name,
            "proxy": c.proxy, "ca": _read(c.ca_file, c.ca_pem), "cert": _read(c.cert_file, c.cert_pem),
            "key": _read(c.key_file, c.key_pem)}


@pytest.mark.parametrize("case", list(CASES))
def test_a_plain_kubeconfig_reads_as_the_library_reads_it(case: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _files(tmp_path)
    cluster, user = CASES[case]
    path = write(tmp_path / "conf" / "kubeconfig", cluster, user)
    monkeypatch.chdir(tmp_path)  # relative paths are the kubeconfig's, not the working directory's
    found = read_kubeconfigs(str(path))
    assert found is not None
    mine = kube_connection.plain(found, None)
    assert mine is not None, "read by the library, not directly"
    library = kube_connection.from_library(_load_configuration(found, None))
    assert _facts(mine) == _facts(library)
    assert mine.library is None and library.library is not None


def _plugin(tmp_path: Path, token: str) -> dict[str, Any]:
    script = tmp_path / "plugin.py"
    script.write_text("import json\nprint(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1', "
                      f"'kind': 'ExecCredential', 'status': {{'token': {token!r}}}}}))\n")
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
                     "args": [str(script)], "interactiveMode": "Never"}}


def test_an_exec_plugin_goes_through_the_library_and_reaches_the_api(kube_api: FakeKubeAPI,  # noqa: F811
                                                                      tmp_path: Path) -> None:
    assert kube_api.url and kube_api.tls is not None
    cluster = {"server": kube_api.url, "certificate-authority-data": B64(kube_api.tls.cert_pem.bytes())}
    path = write(tmp_path / "kubeconfig", cluster, _plugin(tmp_path, kube_api.token))
    kube = KubeClient(str(path), None, 5)
    assert kube.connection.library is not None
    assert kube.version()["major"]
    (tmp_path / "w").mkdir()
    wrong = write(tmp_path / "wrong", cluster, _plugin(tmp_path / "w", "not-the-token"))
    with pytest.raises(Exception, match="(?i)unauthorized"):
        KubeClient(str(wrong), None, 5).version()


@pytest.mark.parametrize("cluster, user", [
    ({"server": "https://k:1", "proxy-url": "http://127.0.0.1:3128"}, {"token": "t"}),
    ({"server": "https://k:1"}, {"auth-provider": {"name": "oidc", "config": {"id-token": "x"}}}),
    ({"server": "https://k:1", "extensions": []}, {"token": "t"}),
    ({"server": "https://k:1"}, {"token": "t", "as": "someone"}),
    ({"server": 6443}, {"token": "t"}),
], ids=["proxy", "auth provider", "unknown cluster key", "unknown user key", "server not text"])
def test_what_is_not_plain_is_left_to_the_library(cluster: dict[str, Any], user: dict[str, Any],
                                                  tmp_path: Path) -> None:
    found = read_kubeconfigs(str(write(tmp_path / "kubeconfig", cluster, user)))
    assert found is not None and kube_connection.plain(found, None) is None


def test_a_missing_file_keeps_the_librarys_error(tmp_path: Path) -> None:
    cluster = {"server": "https://k:1", "certificate-authority": "gone.pem"}
    path = write(tmp_path / "kubeconfig", cluster, {"token": "t"})
    with pytest.raises(ConfigError, match=r"File does not exist: .*gone\.pem"):
        _load_connection(str(path), None)


def test_a_client_certificate_given_as_data_authenticates_and_leaves_no_file(tmp_path: Path) -> None:
    server_cert = CA.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_ctx)
    CA.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[Any] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen.append(tls.getpeercert())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    user = CASES["client certificate data"][1]
    path = write(tmp_path / "kubeconfig", {"server": f"https://127.0.0.1:{port}",
                                           "certificate-authority-data": B64(CA.cert_pem.bytes())}, user)
    before = set(os.listdir(tempfile.gettempdir()))
    connection = _load_connection(str(path), None)
    context = connection.ssl_context()
    assert context is not None
    with socket.create_connection(("127.0.0.1", port)) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1"):
        pass
    thread.join(5)
    assert seen, "the server required a client certificate and did not get one"
    assert {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("coderctl-kube-")} == set()


@pytest.mark.parametrize("user", [{"token": "s3cr3t-token-value\n"}, {"token": "s3cr3t\r\ninjected: yes"}],
                         ids=["newline", "crlf"])
def test_credentials_no_header_can_carry_are_a_configuration_error(user: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "kubeconfig", {"server": "https://127.0.0.1:1"}, user)
    with pytest.raises(ConfigError) as caught:
        KubeClient(str(path), None, 2)
    assert "control character" in str(caught.value) and "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize("case", ["token and CA data", "token file and CA file, relative"])
def test_a_named_ca_is_the_only_one_trusted(case: str, tmp_path: Path) -> None:
    """As kubectl: a kubeconfig that names its cluster's CA trusts that CA alone, not the system's store."""
    _files(tmp_path)
    cluster, user = CASES[case]
    connection = _load_connection(str(write(tmp_path / "conf" / "kubeconfig", cluster, user)), None)
    context = connection.ssl_context()
    assert context is not None
    assert len(context.get_ca_certs()) == 1  # the system store holds a hundred or more


def test_insecure_skip_tls_verify_reaches_a_server_no_ca_vouches_for(kube_api: FakeKubeAPI,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    assert kube_api.url
    path = write(tmp_path / "kubeconfig", {"server": kube_api.url, "insecure-skip-tls-verify": True},
                 {"token": kube_api.token})
    assert KubeClient(str(path), None, 5).version()["major"]
    r = run_subprocess("--kubeconfig", str(path), "--timeout", "5", "verify", "--only", "cluster")
    assert r.code == 0 and r.stderr == "", r.output  # as kubectl: no warning on every request
    checked = write(tmp_path / "checked", {"server": kube_api.url}, {"token": kube_api.token})
    with pytest.raises(Exception, match="(?i)certificate verif"):
        KubeClient(str(checked), None, 5).version()


def test_a_proxy_url_is_read_by_the_library_and_used(tmp_path: Path) -> None:
    import urllib3

    path = write(tmp_path / "kubeconfig", {"server": "https://k:6443", "proxy-url": "http://127.0.0.1:3128",
                                           "certificate-authority-data": B64(CA.cert_pem.bytes())}, {"token": "t"})
    kube = KubeClient(str(path), None, 5)
    assert kube.connection.library is not None and kube.proxy == "http://127.0.0.1:3128"
    assert isinstance(kube.pool, urllib3.ProxyManager)


def test_in_cluster_configuration_goes_through_the_library_and_reaches_the_api(
        kube_api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """coderctl run in a pod (a backup CronJob): no kubeconfig, the ServiceAccount's token and CA."""
    from kubernetes.config import incluster_config

    assert kube_api.url and kube_api.tls is not None
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text(kube_api.token)
    ca.write_bytes(kube_api.tls.cert_pem.bytes())
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    host, port = kube_api.url.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    kube = KubeClient(None, None, 5)
    assert kube.connection.library is not None and kube.host == kube_api.url
    assert kube.version()["major"]
    out = bytearray()
    result = kube_exec.exec_stream(kube, "coder", "coder-coder-postgresql-0", ["sh", "-c", "echo hello"],
                                   container="postgresql", stdout=out.extend)
    assert result.ok and out == b"hello\n"
