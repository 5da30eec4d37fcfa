"""Repeated GETs over one kept-alive connection, each timed from request to full response.

Timing requests on one connection measures the path's round trip without a TCP and TLS handshake in
every sample; the connection is reopened (untimed) only when the server closes it.
"""

from __future__ import annotations

import http.client
import socket
import time

from coderctl.clients.http import HttpClient, Response, Target


def timed_gets(client: HttpClient, url: str, count: int) -> list[Response]:
    """`count` responses to GET `url`; a failure raises like HttpClient.request (after the first, too)."""
    target = Target.parse(url)
    responses: list[Response] = []
    conn: http.client.HTTPConnection | None = None
    sock: socket.socket | None = None
    try:
        while len(responses) < count:
            if conn is None:
                sock = client.connect(target)
                peer = sock.getpeername()  # before a `Connection: close` reply closes the socket
                conn = http.client.HTTPConnection(target.host, target.port, timeout=client.timeout)
                conn.sock = sock
            start = time.monotonic()
            conn.putrequest("GET", target.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", target.netloc)
            conn.putheader("User-Agent", "coderctl")
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read(64 * 1024)
            responses.append(Response(status=resp.status, reason=resp.reason,
                                      headers={k.lower(): v for k, v in resp.getheaders()}, body=body,
                                      elapsed_s=time.monotonic() - start, peer=f"{peer[0]}:{peer[1]}"))
            if resp.will_close:
                conn.close()
                conn = None
    finally:
        if conn is not None:
            conn.close()
    return responses
