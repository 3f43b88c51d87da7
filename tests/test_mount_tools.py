"""Tools that only know files, and backup software, through a real FUSE mount of the
local COS server: git, unzip, restic and borg.

Each tool writes through the mount; the mount is then remounted, so nothing can come
from its cache, and the tool's own verification (``git fsck``, ``restic check
--read-data``, ``borg check --verify-data``) reads every byte back from the server
before the restored tree is compared with the source."""

from __future__ import annotations

import os
import random
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import run
from datapath_util import MiB


def same_tree(a: Path, b: Path) -> None:
    """Fail unless the two trees hold the same names, bytes and symlink targets."""
    run("diff", "-r", "--no-dereference", str(a), str(b))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A source tree with what backups meet: many small files, a few of several MiB
    (more than one chunk or pack), an empty file, a symlink, an executable, depth."""
    rnd = random.Random(7)
    src = tmp_path / "src"
    for d in range(4):
        sub = src / f"dir{d}" / "deeper"
        sub.mkdir(parents=True)
        for i in range(25):
            (sub.parent / f"note{i}.txt").write_text(f"file {d}/{i}\n" * (i + 1))
        (sub / "blob.bin").write_bytes(rnd.randbytes((d + 1) * 3 * MiB + 17))
    (src / "empty").write_bytes(b"")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "run.sh", 0o755)
    os.symlink("dir0/note1.txt", src / "link")
    return src


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run("git", "-c", "user.name=t", "-c", "user.email=t@example.com",
               "-C", str(repo), *args)


def test_git_repository_lives_on_the_mount(mnt, tree, tmp_path):
    repo = mnt.path / "repo"
    run("git", "init", "-q", str(repo))
    run("cp", "-a", f"{tree}/.", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "dir1" / "note3.txt").write_text("changed\n")
    git(repo, "commit", "-q", "-am", "second")
    # gc packs the loose objects, renames the pack into place and deletes the rest.
    git(repo, "gc", "-q")
    mnt.remount()
    git(repo, "fsck", "--full", "--strict")
    assert git(repo, "status", "--porcelain").stdout == ""
    assert git(repo, "rev-list", "--count", "HEAD").stdout.strip() == "2"
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(repo), str(clone))
    git(clone, "checkout", "-q", "HEAD~1")
    run("diff", "-r", "--no-dereference", "--exclude=.git", str(tree), str(clone))


def test_unzip_into_the_mount(mnt, tree, tmp_path):
    archive = tmp_path / "t.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(tree.rglob("*")):
            if path.is_file() and not path.is_symlink():
                z.write(path, path.relative_to(tree))
    run("unzip", "-q", str(archive), "-d", str(mnt.path / "unzipped"))
    mnt.remount()
    run("diff", "-r", "--exclude=link", str(tree), str(mnt.path / "unzipped"))


def test_restic_backup_check_restore_prune(mnt, tree, tmp_path):
    env = {**os.environ, "RESTIC_PASSWORD": "test", "RESTIC_CACHE_DIR": str(tmp_path / "c"),
           "RESTIC_REPOSITORY": str(mnt.path / "restic")}
    run("restic", "init", env=env)
    run("restic", "backup", "-q", str(tree), env=env)
    (tree / "dir2" / "note4.txt").write_text("second snapshot\n")
    run("restic", "backup", "-q", str(tree), env=env)
    mnt.remount()
    run("restic", "check", "--read-data", env=env)
    run("restic", "forget", "-q", "--keep-last", "1", "--prune", env=env)
    mnt.remount()
    run("restic", "check", "--read-data", env=env)
    out = tmp_path / "restored"
    run("restic", "restore", "latest", "--target", str(out), env=env)
    same_tree(tree, out / tree.relative_to("/"))


def test_borg_create_check_extract_prune(mnt, tree, tmp_path):
    env = {**os.environ, "BORG_PASSPHRASE": "test", "BORG_BASE_DIR": str(tmp_path / "b")}
    repo = str(mnt.path / "borg")
    run("borg", "init", "-e", "repokey", repo, env=env)
    run("borg", "create", f"{repo}::one", str(tree), env=env)
    (tree / "dir3" / "note5.txt").write_text("second archive\n")
    run("borg", "create", f"{repo}::two", str(tree), env=env)
    mnt.remount()
    run("borg", "check", "--verify-data", repo, env=env)
    run("borg", "prune", "--keep-last", "1", repo, env=env)
    run("borg", "compact", repo, env=env)
    mnt.remount()
    run("borg", "check", "--verify-data", repo, env=env)
    assert run("borg", "list", "--short", repo, env=env).stdout.split() == ["two"]
    out = tmp_path / "extracted"
    out.mkdir()
    run("borg", "extract", f"{repo}::two", env=env, cwd=out)
    same_tree(tree, out / tree.relative_to("/"))
