"""The three mounts under test, each run in the foreground as our child so we know its
pid (for memory) and can stop it in order. Peers keep their defaults except what they
need to reach the local server."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .procs import is_mounted, process_tree, spawn, stop_process

MOUNT_KINDS = ("cosfs", "s3fs", "rclone")
RCLONE_REMOTE = "bench"


@dataclass
class MountEnv:
    """What every mount needs to reach the bucket, plus per-mount extra options."""

    url: str
    bucket: str
    key_id: str
    secret: str
    workdir: Path
    cosfs_sigv4: bool
    extra: dict[str, list[str]] = field(default_factory=dict)
    # Run cosfs under ``py-spy record`` and write one profile per mount start here.
    profile_dir: Path | None = None

    def base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("COS_SECRET_ID", "COS_SECRET_KEY", "COS_SECURITY_TOKEN",
                     "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.pop(name, None)
        return env


class Mount:
    """One FUSE mount of the bench bucket; a fresh cache directory at every start."""

    kind = ""
    _serial = itertools.count(1)

    def __init__(self, menv: MountEnv) -> None:
        self.menv = menv
        self.path = menv.workdir / f"mnt-{self.kind}"
        self.path.mkdir(parents=True, exist_ok=True)
        self.log_path = menv.workdir / f"{self.kind}.log"
        self.cache_dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.label = ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return self.menv.base_env()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, label: str = "", timeout: float = 60.0) -> None:
        """Mount; ``label`` names this start (e.g. for the profile file)."""
        serial = next(self._serial)
        self.label = label or str(serial)
        self.cache_dir = self.menv.workdir / f"cache-{self.kind}-{serial}"
        with open(self.log_path, "a") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')} ===\n")
        self.proc = spawn(self.command(), self.env(), self.log_path)
        deadline = time.monotonic() + timeout
        while not is_mounted(self.path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited {self.proc.returncode} before "
                                   f"mounting; see {self.log_path}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.kind} did not mount in {timeout:.0f} s")
            time.sleep(0.05)
        os.stat(self.path)  # the first request: the mount answers before we time anything

    def stop(self, timeout: float = 180.0) -> int | None:
        """Clean unmount (a mount may still flush), then the process must exit."""
        if self.proc is None:
            return None
        for _ in range(50):
            if not is_mounted(self.path):
                break
            r = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
            if r.returncode == 0:
                break
            time.sleep(0.2)  # busy: a just-finished child may still hold a file open
        else:
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        try:
            rc: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = stop_process(self.proc)
        self.proc = None
        self._drop_cache_dir()
        return rc

    def kill(self) -> None:
        """As a crash would: SIGKILL the mount (blocked syscalls then fail with
        ENOTCONN) and clear the dead mount point."""
        if self.proc is not None and self.proc.poll() is None:
            for pid in reversed(process_tree(self.proc.pid)):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            self.proc.wait()
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)

    def log_errors(self, limit: int = 2) -> list[str]:
        """The last error lines the mount logged since it was last started (the log
        goes with the scratch directory, so failures keep their cause this way)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        lines = text.rsplit("\n=== start ", 1)[-1].splitlines()
        errors = [ln.strip() for ln in lines if "error" in ln.lower()]
        return [e[:240] for e in errors[-limit:]]

    def _drop_cache_dir(self) -> None:
        if self.cache_dir is not None:
            shutil.rmtree(self.cache_dir, ignore_errors=True)


class CosfsMount(Mount):
    kind = "cosfs"

    def command(self) -> list[str]:
        assert self.cache_dir is not None
        opts = [f"url={self.menv.url}", f"use_cache={self.cache_dir}"]
        if self.menv.cosfs_sigv4:
            opts.append("sigv4")
        opts += self.menv.extra.get(self.kind, [])
        cmd = [sys.executable, "-m", "cosfs", self.menv.bucket, str(self.path), "-f",
               "-o", ",".join(opts)]
        return self._profiled(cmd) if self.menv.profile_dir else cmd

    def _profiled(self, cmd: list[str]) -> list[str]:
        """Wrap in py-spy: collapsed stacks (flamegraph input), written at unmount.
        Only the thread holding the GIL is sampled, so the stacks show where the
        interpreter's CPU goes, not where threads wait."""
        assert self.menv.profile_dir is not None
        self.menv.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.menv.profile_dir / f"cosfs-{self.label}.txt"
        pyspy = Path(sys.executable).with_name("py-spy")
        return [str(pyspy), "record", "--format", "raw", "--rate", "200", "--threads", "--gil",
                "--output", str(out), "--", *cmd]

    def env(self) -> dict[str, str]:
        env = self.menv.base_env()
        env["COS_SECRET_ID"] = self.menv.key_id
        env["COS_SECRET_KEY"] = self.menv.secret
        return env


class S3fsMount(Mount):
    kind = "s3fs"

    def command(self) -> list[str]:
        passwd = self.menv.workdir / "s3fs.passwd"
        if not passwd.exists():
            # s3fs refuses a passwd file others can read.
            fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, f"{self.menv.key_id}:{self.menv.secret}\n".encode())
            os.close(fd)
        opts = [f"url={self.menv.url}", "use_path_request_style", f"passwd_file={passwd}"]
        opts += self.menv.extra.get(self.kind, [])
        return ["s3fs", self.menv.bucket, str(self.path), "-f", "-o", ",".join(opts)]


class RcloneMount(Mount):
    kind = "rclone"

    def command(self) -> list[str]:
        assert self.cache_dir is not None
        return ["rclone", "mount", f"{RCLONE_REMOTE}:{self.menv.bucket}", str(self.path),
                "--vfs-cache-mode", "writes", "--cache-dir", str(self.cache_dir),
                *self.menv.extra.get(self.kind, [])]

    def env(self) -> dict[str, str]:
        env = self.menv.base_env()
        # rclone 1.60 fails to start when AWS_CA_BUNDLE is set and the endpoint is plain
        # HTTP ("unable to load custom CA bundle"); nothing here uses TLS.
        env.pop("AWS_CA_BUNDLE", None)
        # An empty config file of our own: the remote comes from the environment only,
        # so neither the user's config nor the keys on the command line are involved.
        conf = self.menv.workdir / "rclone.conf"
        conf.touch()
        prefix = f"RCLONE_CONFIG_{RCLONE_REMOTE.upper()}_"
        env.update({"RCLONE_CONFIG": str(conf), prefix + "TYPE": "s3",
                    prefix + "PROVIDER": "Other", prefix + "ENDPOINT": self.menv.url,
                    prefix + "ACCESS_KEY_ID": self.menv.key_id,
                    prefix + "SECRET_ACCESS_KEY": self.menv.secret})
        return env


def make_mount(kind: str, menv: MountEnv) -> Mount:
    classes: dict[str, type[Mount]] = {"cosfs": CosfsMount, "s3fs": S3fsMount,
                                       "rclone": RcloneMount}
    return classes[kind](menv)


def missing_tools(kinds: list[str]) -> list[str]:
    return [k for k in kinds if k != "cosfs" and shutil.which(k) is None]
