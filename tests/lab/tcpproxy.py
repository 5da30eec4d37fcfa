"""Copying one TCP connection into another, for the lab's proxies (a round-robin in front of two relays, a
proxy in front of the S3 server that cuts connections)."""

from __future__ import annotations

import socket
from collections.abc import Callable


def pipe(src: socket.socket, dst: socket.socket, allow: Callable[[int], bool] | None = None) -> bool:
    """Copy `src` into `dst` until either side closes, then shut both down. False when `allow` (given each
    chunk's size) refused a chunk: that chunk and the rest were not copied."""
    try:
        while data := src.recv(65536):
            if allow is not None and not allow(len(data)):
                return False
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    return True
