"""Fixtures shared by the whole suite: a real local COS server process, clients for
it, and real FUSE mounts of its buckets. Nothing here mocks storage."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECRET_ID = "AKIDcosfsTestKey00000000000000000000"
SECRET_KEY = "cosfsTestSecretKey000000000000000"
APPID = "1250000000"
REGION = "ap-guangzhou"

_bucket_numbers = itertools.count(1)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["COS_SECRET_ID"] = SECRET_ID
    env["COS_SECRET_KEY"] = SECRET_KEY
    env.pop("COS_SECURITY_TOKEN", None)
    env.update(extra)
    return env


class ServerProcess:
    """A ``cosfs-server`` child process on loopback, with admin helpers."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.args = list(args)
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.url = ""

    def start(self, port: int | None = None) -> ServerProcess:
        cmd = [sys.executable, "-m", "cosfs.server", "--root", str(self.root),
               "--port", str(port if port is not None else self.port), *self.args]
        self.log = open(self.root.parent / f"{self.root.name}.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        deadline = time.monotonic() + 20
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"cosfs-server exited: {self.proc.wait()}")
            if line.startswith("listening on "):
                self.url = line.split()[-1].strip()
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
        raise RuntimeError("cosfs-server did not start in time")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()

    def restart(self) -> None:
        self.stop()
        self.start(self.port)

    # -- admin endpoint ------------------------------------------------------
    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/_admin/{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else {}

    def stats(self) -> dict[str, dict[str, int]]:
        return self.admin("GET", "stats")["ops"]

    def count(self, op: str) -> int:
        return self.stats().get(op, {}).get("count", 0)

    def reset_stats(self) -> None:
        self.admin("POST", "stats/reset", {})

    def set_faults(self, op: str = "*", **faults: float) -> None:
        self.admin("POST", "faults", {"op": op, **faults})

    def clear_faults(self) -> None:
        self.admin("DELETE", "faults")

    def create_bucket(self, name: str) -> None:
        self.admin("POST", "buckets", {"name": name})


@pytest.fixture(scope="session")
def cos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the session; tests get their own bucket from ``bucket``."""
    root = tmp_path_factory.mktemp("server") / "data"
    root.mkdir()
    server = ServerProcess(root, "--min-part-size", "65536").start()
    yield server
    server.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that inject faults or restart it."""
    root = tmp_path / "server-data"
    root.mkdir()
    server = ServerProcess(root, "--min-part-size", "65536", "--bucket",
                           f"fresh-{APPID}").start()
    server.bucket = f"fresh-{APPID}"  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
def bucket(cos_server: ServerProcess) -> str:
    """A new, empty bucket on the session server."""
    name = f"t{next(_bucket_numbers)}-{os.getpid()}-{APPID}"
    cos_server.create_bucket(name)
    cos_server.clear_faults()
    return name


def run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    """Run a command the test needs to succeed; its output is captured as text."""
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def make_client(server: ServerProcess, bucket: str, **overrides):
    from cosfs.cos import CosClient, CosConfig

    cfg = dict(secret_id=SECRET_ID, secret_key=SECRET_KEY, bucket=bucket, region=REGION,
               endpoint=server.url)
    cfg.update(overrides)
    return CosClient(CosConfig(**cfg))


@pytest.fixture
def client(cos_server: ServerProcess, bucket: str):
    """Our own client, pointed at ``bucket`` on the session server."""
    return make_client(cos_server, bucket)


def make_sdk_client(server: ServerProcess):
    """The official COS SDK, connecting to the local server while sending the
    virtual-hosted Host header, as it does against real COS."""
    from qcloud_cos import CosConfig, CosS3Client

    cfg = CosConfig(Region=REGION, SecretId=SECRET_ID, SecretKey=SECRET_KEY, Scheme="http",
                    IP="127.0.0.1", Port=server.port)
    return CosS3Client(cfg, retry=0)


@pytest.fixture
def sdk(cos_server: ServerProcess):
    return make_sdk_client(cos_server)


# -- TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed (made with openssl)."""
    from reliability_util import make_certs

    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls(cos_server: ServerProcess, certs: tuple[Path, Path, Path]) -> Iterator:
    """A TLS front for the session server, with the certificate of ``certs``."""
    from reliability_util import TlsProxy

    proxy = TlsProxy(cos_server.port, certs[1], certs[2])
    yield proxy
    proxy.close()


# -- FUSE mounts -------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    """fsync() of a directory (cosfs: waits for the background DELETEs under it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


class Mount:
    """A real cosfs mount in the foreground (``-f``) as a child process."""

    def __init__(self, server: ServerProcess, bucket: str, mountpoint: Path,
                 cache_root: Path, options: list[str]) -> None:
        self.server = server
        self.bucket = bucket
        self.path = mountpoint
        self.cache_root = cache_root  # use_cache=; the cache is a directory below it
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = mountpoint.parent / f"{mountpoint.name}.log"

    @property
    def cache_dir(self) -> Path:
        """The mount's own cache directory (one per bucket, endpoint and prefix)."""
        (found,) = self.cache_root.glob(f"{self.bucket}-*")
        return found

    def start(self, extra: list[str] | None = None) -> Mount:
        opts = [f"url={self.server.url}", f"use_cache={self.cache_root}", *self.options,
                *(extra or [])]
        cmd = [sys.executable, "-m", "cosfs", self.bucket, str(self.path), "-f",
               "-o", ",".join(opts)]
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if is_mounted(self.path):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"cosfs exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"mount did not appear:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def unmount(self) -> int:
        """Clean unmount; returns the mount process's exit status."""
        if self.proc is None:
            return 0
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", str(self.path)], check=False)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.proc = None
        return rc

    def kill(self) -> None:
        """SIGKILL the mount process, as a crash would, and clear the dead mount."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False,
                       stderr=subprocess.DEVNULL)

    def crash(self, *held: int) -> None:
        """:meth:`kill`, then close the descriptors the test still held on the mount
        (the dead mount may refuse: the crash is what is tested)."""
        self.kill()
        for fd in held:
            with contextlib.suppress(OSError):
                os.close(fd)

    def remount(self, extra: list[str] | None = None) -> Mount:
        self.unmount()
        return self.start(extra)


@pytest.fixture
def mounter(cos_server: ServerProcess, bucket: str, tmp_path: Path) -> Iterator:
    """Factory: ``mounter(options=[...], server=..., bucket=...)`` -> a started Mount."""
    mounts: list[Mount] = []

    def make(options: list[str] | None = None, server: ServerProcess | None = None,
             bucket_name: str | None = None, name: str = "mnt") -> Mount:
        mp = tmp_path / name
        mp.mkdir(exist_ok=True)
        cache = tmp_path / f"{name}-cache"
        m = Mount(server or cos_server, bucket_name or bucket, mp, cache,
                  list(options or []))
        mounts.append(m)
        return m.start()

    yield make
    for m in mounts:
        try:
            m.unmount()
        except Exception:
            m.kill()
    for m in mounts:
        if is_mounted(m.path):
            m.kill()


@pytest.fixture
def mnt(mounter) -> Mount:
    """A mount of a fresh bucket with default options (stat cache off for tests that
    write through the SDK and expect to see it at once is ``mounter([...])``)."""
    return mounter()


@pytest.fixture(scope="session", autouse=True)
def _fuse_available() -> None:
    if shutil.which("fusermount3") is None or not os.path.exists("/dev/fuse"):
        pytest.exit("FUSE is not available: run ./scripts/test, which installs fuse3",
                    returncode=3)
