"""Socket plumbing for the tests' proxies and relays (no storage is faked here:
they forward bytes to the real local server)."""

from __future__ import annotations

import socket
from collections.abc import Callable


def shutdown_quietly(*socks: socket.socket) -> None:
    """Shut both directions of each socket, ignoring ones already gone."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def pump(read: Callable[[int], bytes], dst: socket.socket,
         close: tuple[socket.socket, ...]) -> None:
    """Copy what ``read`` returns to ``dst`` until either side ends, then shut the
    sockets in ``close`` so the other direction ends too."""
    try:
        while data := read(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        shutdown_quietly(*close)
