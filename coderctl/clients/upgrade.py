"""Raw HTTP/1.1 upgrades (``Upgrade: DERP``) on a socket from HttpClient, under one deadline.

http.client cannot hand over the socket after a 101, and the DERP server writes its first frame right
behind the response head, so the head is read here by hand and the bytes after it are kept.
"""

from __future__ import annotations

import socket
import ssl
import time

from coderctl.clients.http import HttpClient, Response, Target

HEAD_LIMIT = 64 * 1024
BODY_PEEK = 512


class Deadline:
    """A point in time every blocking call of one operation must finish by."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def apply(self, sock: socket.socket) -> None:
        sock.settimeout(self.remaining())


class UpgradeRefused(Exception):
    """The server answered the upgrade with something other than 101; `response` says what and who."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"{response.status} {response.reason} from {response.hop()}")
        self.response = response


def read_head(sock: socket.socket, deadline: Deadline) -> tuple[int, str, dict[str, str], bytes]:
    """(status, reason, lower-case headers, bytes read past the head) of an HTTP/1.x response."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > HEAD_LIMIT:
            raise ConnectionError(f"response head longer than {HEAD_LIMIT} bytes")
        deadline.apply(sock)
        chunk = sock.recv(65536)
        if not chunk:
            if not data:
                raise ConnectionError("the server closed the connection without answering")
            raise ConnectionError(f"the connection closed inside the response head: {data[:80]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, rest


def peek_body(sock: socket.socket, headers: dict[str, str], rest: bytes, deadline: Deadline) -> bytes:
    """Up to BODY_PEEK bytes of a refused answer's body, without waiting for more than it announced."""
    want = BODY_PEEK
    if headers.get("content-length", "").isdigit():
        want = min(want, int(headers["content-length"]))
    body = rest
    try:
        while len(body) < want:
            deadline.apply(sock)
            chunk = sock.recv(want - len(body))
            if not chunk:
                break
            body += chunk
    except (TimeoutError, OSError):
        pass
    return body[:BODY_PEEK]


class RawStream:
    """The socket after a 101, starting with the bytes the server sent right behind the head."""

    def __init__(self, sock: socket.socket, initial: bytes = b"") -> None:
        self.sock = sock
        self._pending = initial
        self.deadline = Deadline(0)

    def take_pending(self) -> bytes:
        data, self._pending = self._pending, b""
        return data

    def recv(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        self.deadline.apply(self.sock)
        try:
            return self.sock.recv(65536)
        except ssl.SSLZeroReturnError:
            return b""

    def send(self, data: bytes) -> None:
        self.deadline.apply(self.sock)
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def upgrade(client: HttpClient, url: str, headers: dict[str, str], *, timeout: float | None = None
            ) -> tuple[RawStream, Response]:
    """Send GET `url` with `headers` (Upgrade, Connection, ...); the stream and the 101 response.

    Anything but 101 raises UpgradeRefused carrying the answer, with the first bytes of its body.
    """
    target = Target.parse(url)
    deadline = Deadline(timeout or client.timeout)
    start = time.monotonic()
    sock = client.connect(target, timeout=deadline.remaining())
    try:
        lines = [f"GET {target.path} HTTP/1.1", f"Host: {target.netloc}", "User-Agent: coderctl"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        deadline.apply(sock)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, reason, head, rest = read_head(sock, deadline)
        peer = sock.getpeername()
        response = Response(
            status=status, reason=reason, headers=head, body=b"", elapsed_s=time.monotonic() - start,
            peer=f"{peer[0]}:{peer[1]}",
            tls_version=sock.version() if isinstance(sock, ssl.SSLSocket) else None,
        )
        if status != 101:
            response.body = peek_body(sock, head, rest, deadline)
            raise UpgradeRefused(response)
    except BaseException:
        try:
            sock.close()
        except OSError:
            pass
        raise
    return RawStream(sock, rest), response
