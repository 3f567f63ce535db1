"""The listening socket of abdus's web servers (``abdus serve``'s REST, ``abdus review``)."""

from __future__ import annotations

import socket

from abdus.errors import AbdusInputError


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` (IPv6 when the host has a colon; port 0 =
    a free port). AbdusInputError in one line when the address cannot be used."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise AbdusInputError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(64)
    return sock
