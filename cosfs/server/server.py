"""The server object: configuration, store, faults and stats behind one listening
socket, each connection served by its own daemon thread."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

from .admin import Admin
from .auth import Credentials
from .faults import ALL, Fault, FaultTable, Stats
from .handler import CosRequestHandler
from .messages import Context
from .routing import BUCKET_NAME
from .store import Store


@dataclass
class ServerConfig:
    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    buckets: tuple[str, ...] = ()
    credentials: Credentials | None = None
    anonymous: bool = False
    min_part_size: int = 1 << 20
    host_suffix: str | None = None
    startup_fault: Fault = field(default_factory=Fault)
    verbose: bool = False


class CosHTTPServer(ThreadingHTTPServer):
    """A COS-compatible HTTP server over the store at ``config.root``.

    Requests run concurrently in daemon threads (a stuck client never keeps the process
    alive); everything they share (store, faults, stats) is thread-safe.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, config: ServerConfig) -> None:
        for name in config.buckets:
            if not BUCKET_NAME.match(name):
                raise ValueError(f"not a bucket name (<name>-<APPID>): {name!r}")
        self.config = config
        self.store = Store(config.root)
        try:
            self.faults = FaultTable()
            self.faults.set(ALL, config.startup_fault)
            self.stats = Stats()
            self.context = Context(self.store, config.min_part_size, config.host_suffix)
            self.admin = Admin(self.store, self.faults, self.stats)
            for name in config.buckets:
                self.store.create_bucket(name)
            super().__init__((config.host, config.port), CosRequestHandler)
        except BaseException:
            self.store.close()
            raise

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up mid-request is routine; anything else is worth a trace.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        self.store.close()
