"""What other tools stored on an object survives what the mount does to it: their
user metadata, its Content-Type, Cache-Control and the like, and its storage class;
and the storage class of what the mount uploads. Objects are put and checked with
the official COS SDK."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

THEIRS = {"x-cos-meta-author": "alice", "cache-control": "max-age=60",
          "content-disposition": "attachment", "content-type": "text/plain",
          "x-cos-storage-class": "STANDARD_IA"}


def put_theirs(sdk, bucket: str, key: str, body: bytes = b"hello world") -> None:
    sdk.put_object(Bucket=bucket, Key=key, Body=body, StorageClass="STANDARD_IA",
                   CacheControl="max-age=60", ContentDisposition="attachment",
                   ContentType="text/plain", Metadata={"x-cos-meta-author": "alice"})


def stored(sdk, bucket: str, key: str) -> dict[str, str]:
    """The headers of ``key`` that are the object's own, lower-cased names."""
    head = sdk.head_object(Bucket=bucket, Key=key)
    return {k.lower(): v for k, v in head.items()
            if k.lower().startswith("x-cos-meta-") or k.lower() in THEIRS}


def cosfs_mode(headers: dict[str, str]) -> int:
    return stat.S_IMODE(int(headers["x-cos-meta-mode"]))


@pytest.mark.parametrize("options", [[], ["listing_attrs"]])
def test_metadata_changes_and_renames_keep_what_other_tools_stored(
        mounter, sdk, bucket, options):
    """With -o listing_attrs the mount knows a listed object from its listing only:
    what a copy must keep is asked for by a HEAD first."""
    for key in ("chmod", "utime", "xattr", "mv", "utime-mv", "tree/f"):
        put_theirs(sdk, bucket, key)
    m = mounter(options)
    os.listdir(m.path)
    os.listdir(m.path / "tree")
    os.chmod(m.path / "chmod", 0o600)
    os.utime(m.path / "utime", (1, 1))
    os.setxattr(m.path / "xattr", "user.note", b"1")
    os.rename(m.path / "mv", m.path / "moved")
    # A change still pending when the rename comes rides on its copy.
    os.utime(m.path / "utime-mv", (2, 2))
    os.rename(m.path / "utime-mv", m.path / "utime-moved")
    os.rename(m.path / "tree", m.path / "tree2")
    m.unmount()  # stores what is still pending
    for key in ("chmod", "utime", "xattr", "moved", "utime-moved", "tree2/f"):
        got = stored(sdk, bucket, key)
        assert {k: got.get(k) for k in THEIRS} == THEIRS, key
    assert cosfs_mode(stored(sdk, bucket, "chmod")) == 0o600
    assert stored(sdk, bucket, "utime")["x-cos-meta-mtime"] == "1"
    assert "user.note" in os.listxattr(mounter().path / "xattr")
    assert stored(sdk, bucket, "utime-moved")["x-cos-meta-mtime"] == "2"


def test_a_renamed_appendable_object_keeps_its_content_type_and_metadata(mounter, sdk, bucket):
    # COS cannot copy an appendable object: a rename appends its bytes anew.
    sdk.append_object(Bucket=bucket, Key="log", Position=0, Data=b"line\n",
                      ContentType="text/plain", Metadata={"x-cos-meta-author": "alice"})
    m = mounter()
    os.rename(m.path / "log", m.path / "log.1")
    m.unmount()
    got = stored(sdk, bucket, "log.1")
    assert (got["content-type"], got["x-cos-meta-author"]) == ("text/plain", "alice")
    assert sdk.get_object(Bucket=bucket, Key="log.1")["Body"].get_raw_stream().read() == \
        b"line\n"


@pytest.mark.parametrize("how", ["overwrite", "append", "truncate"])
def test_a_rewrite_keeps_user_metadata_and_content_type(mounter, sdk, bucket, how):
    put_theirs(sdk, bucket, "f")
    m = mounter()
    if how == "overwrite":
        with open(m.path / "f", "r+b") as f:
            f.write(b"J")
    elif how == "append":
        with open(m.path / "f", "ab") as f:
            f.write(b"!")
    else:
        (m.path / "f").write_bytes(b"new")
    got = stored(sdk, bucket, "f")  # close() returned: the new object is there
    assert got["x-cos-meta-author"] == "alice"
    assert got["content-type"] == "text/plain"
    assert cosfs_mode(got) == 0o644
    # New bytes make a new object: Cache-Control and the like described the old
    # ones, and the storage class is the bucket's default again.
    assert "cache-control" not in got and "x-cos-storage-class" not in got
    # A later metadata change is of that new object: nothing of the old one returns.
    os.chmod(m.path / "f", 0o600)
    m.unmount()
    got = stored(sdk, bucket, "f")
    assert (cosfs_mode(got), got["x-cos-meta-author"]) == (0o600, "alice")
    assert "cache-control" not in got and "x-cos-storage-class" not in got


@pytest.mark.parametrize("options", [[], ["listing_attrs"]])
def test_metadata_recovered_after_a_crash_keeps_what_other_tools_stored(
        mounter, sdk, bucket, options):
    put_theirs(sdk, bucket, "f")
    m = mounter(options)
    os.listdir(m.path)
    os.chmod(m.path / "f", 0o611)
    m.kill()  # before the deferred copy ran
    assert "x-cos-meta-mode" not in stored(sdk, bucket, "f")
    m.start()
    got = stored(sdk, bucket, "f")
    assert cosfs_mode(got) == 0o611
    assert {k: got.get(k) for k in THEIRS} == THEIRS


def test_storage_class_option_sets_the_class_of_uploaded_data_only(mounter, sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="standard", Body=b"s")
    m = mounter(["storage_class=standard_ia", "multipart_size=1"])
    (m.path / "small").write_bytes(b"x" * 100)
    fd = os.open(m.path / "big", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, os.urandom(3 << 20))  # its first parts go up while it is written
        os.fchmod(fd, 0o600)  # the upload began with other metadata: fixed by a copy
    finally:
        os.close(fd)
    os.mkdir(m.path / "dir")
    os.symlink("small", m.path / "link")
    os.chmod(m.path / "standard", 0o600)
    os.rename(m.path / "standard", m.path / "moved")
    m.unmount()
    for key in ("small", "big"):
        assert stored(sdk, bucket, key).get("x-cos-storage-class") == "STANDARD_IA", key
    assert cosfs_mode(stored(sdk, bucket, "big")) == 0o600
    # Markers and symlinks are not data (and IA bills at least 64 KB an object);
    # a copy keeps its source's class.
    for key in ("dir/", "link", "moved"):
        assert "x-cos-storage-class" not in stored(sdk, bucket, key), key


@pytest.mark.parametrize("options", [[], ["writeback"]])
def test_a_renamed_file_takes_the_type_of_its_new_name_unless_it_was_set(
        mounter, sdk, bucket, tmp_path, options):
    """rsync writes .index.html.XXXXXX and renames it: the object must be text/html
    (as s3fs-fuse does), while a type another tool chose stays."""
    src = tmp_path / "site"
    src.mkdir()
    (src / "index.html").write_text("<html></html>")
    (src / "style.css").write_text("body {}")
    sdk.put_object(Bucket=bucket, Key="notes.txt", Body=b"n", ContentType="text/plain")
    sdk.put_object(Bucket=bucket, Key="pic.bin", Body=b"p", ContentType="image/png")
    m = mounter(options)
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.path}/site/"], check=True)
    os.rename(m.path / "notes.txt", m.path / "notes.html")
    os.rename(m.path / "pic.bin", m.path / "pic.dat")
    m.unmount()
    types = {k: stored(sdk, bucket, k)["content-type"]
             for k in ("site/index.html", "site/style.css", "notes.html", "pic.dat")}
    assert types == {"site/index.html": "text/html", "site/style.css": "text/css",
                     "notes.html": "text/html", "pic.dat": "image/png"}
