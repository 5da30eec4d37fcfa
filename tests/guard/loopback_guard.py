"""Loopback only: the test suite's guard against traffic leaving the machine, in the test process (with
pytest-socket) and in every Python subprocess the tests start (coderctl run as a command, lab servers), which
pytest-socket cannot see. `sitecustomize.py` beside this file installs it in subprocesses: the suite puts this
directory on their PYTHONPATH.

Name lookups would reach the system resolver: only addresses and `localhost` resolve; every other name must
come from `--resolve` or a lab nameserver. Connections and datagrams (DNS over UDP is sent, not
connected) go to loopback addresses or Unix sockets only."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto


def _literal(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return None


def lab_only_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name not in (None, "localhost") and _literal(str(name)) is None:
        raise socket.gaierror(socket.EAI_NONAME, f"test guard: no system DNS lookups ({name!r})")
    return _real_getaddrinfo(host, *args, **kwargs)


def _refuse(sock: socket.socket, address: Any) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        return
    host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
    ip = _literal(host)
    if host != "localhost" and (ip is None or not ip.is_loopback):
        raise ConnectionRefusedError(f"test guard: connections go to loopback only, not {host!r}")


def _loopback_connect(self: socket.socket, address: Any) -> None:
    _refuse(self, address)
    _real_connect(self, address)


def _loopback_connect_ex(self: socket.socket, address: Any) -> int:
    _refuse(self, address)
    return _real_connect_ex(self, address)


def _loopback_sendto(self: socket.socket, data: Any, *rest: Any) -> int:
    _refuse(self, rest[-1] if rest else None)
    return _real_sendto(self, data, *rest)


def install() -> None:
    """For a subprocess: name lookups and connections, for the whole process."""
    socket.getaddrinfo = lab_only_getaddrinfo
    socket.socket.connect = _loopback_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _loopback_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _loopback_sendto  # type: ignore[method-assign]
