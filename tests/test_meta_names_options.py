"""Unit tests of the pure pieces: metadata mapping, names and keys, options,
credentials lookup."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from cosfs import meta, names, options
from cosfs.cos.types import ObjectInfo
from cosfs.credentials import CredentialError, find_credentials

D = meta.Defaults(uid=1000, gid=100, file_mode=0o640, dir_mode=0o750)


def info(**kw) -> ObjectInfo:
    base = dict(key="a", size=5, etag="e", last_modified=1_700_000_000.5)
    base.update(kw)
    return ObjectInfo(**base)


def test_attr_without_metadata_uses_defaults_and_last_modified():
    a = meta.attr_from_object(info(), D)
    assert a.mode == stat.S_IFREG | 0o640
    assert (a.uid, a.gid, a.size) == (1000, 100, 5)
    assert a.mtime_ns == 1_700_000_000_500_000_000


def test_attr_from_cosfs_metadata():
    m = {"mode": str(stat.S_IFREG | 0o600), "uid": "7", "gid": "8", "mtime": "1600000000"}
    a = meta.attr_from_object(info(metadata=m), D)
    assert (a.mode, a.uid, a.gid, a.mtime_ns) == (stat.S_IFREG | 0o600, 7, 8, 1600000000 * 10**9)


def test_symlink_mode_kept_and_directory_forced():
    link = meta.attr_from_object(info(metadata={"mode": str(stat.S_IFLNK | 0o777)}), D)
    assert link.is_symlink()
    d = meta.attr_from_object(info(key="d/", metadata={"mode": str(0o700)}), D, is_dir=True)
    assert d.mode == stat.S_IFDIR | 0o700 and d.size == 0


def test_without_metadata_reading_an_object_is_its_listing_entry():
    no_meta = meta.Defaults(uid=1000, gid=100, file_mode=0o640, use_metadata=False)
    m = {"mode": str(stat.S_IFLNK | 0o777), "uid": "7", "mtime": "1600000000",
         "xattr": meta.encode_xattrs({"user.k": b"v"})}
    headed = meta.attr_from_object(info(metadata=m), no_meta)
    listed = meta.attr_from_object(info(from_listing=True), no_meta)
    assert headed.mode == listed.mode == stat.S_IFREG | 0o640
    assert headed.mtime_ns == listed.mtime_ns == 1_700_000_000_500_000_000
    assert (headed.uid, headed.xattrs) == (1000, {})
    assert not listed.partial  # nothing a HEAD could add
    assert meta.attr_from_object(info(from_listing=True), D).partial


def test_malformed_metadata_falls_back():
    a = meta.attr_from_object(info(metadata={"mode": "x", "uid": "", "mtime": "later"}), D)
    assert a.mode == stat.S_IFREG | 0o640 and a.uid == 1000
    assert a.mtime_ns == 1_700_000_000_500_000_000


@pytest.mark.parametrize("ns", [0, 1_600_000_000 * 10**9, 1_600_000_000_123_456_789])
def test_mtime_round_trip(ns):
    assert meta.parse_mtime(meta.format_mtime(ns)) == ns


def test_mtime_integer_readers_see_seconds():
    # COSFS parses an integer: the seconds come first.
    assert meta.format_mtime(1_600_000_000_500_000_000).split(".")[0] == "1600000000"


def test_xattr_round_trip_and_lenient_decode():
    x = {"user.a": b"\x00\xffbinary", "user.b": "ünï".encode()}
    assert meta.decode_xattrs(meta.encode_xattrs(x)) == x
    assert meta.decode_xattrs("%7Bnot json") == {}


def test_metadata_written_matches_cosfs_names():
    a = meta.Attr(mode=stat.S_IFREG | 0o644, uid=1, gid=2, mtime_ns=5 * 10**9, mtime_set=True)
    assert meta.metadata_for(a) == {"mode": "33188", "uid": "1", "gid": "2", "mtime": "5"}
    # An mtime nobody set is the object's Last-Modified: no header for it.
    a.mtime_set = False
    assert "mtime" not in meta.metadata_for(a)
    info_with = info(metadata={"mtime": "7"})
    assert meta.attr_from_object(info_with, D).mtime_set
    assert not meta.attr_from_object(info(), D).mtime_set


def test_other_tools_metadata_is_written_back_with_cosfs_own():
    theirs = {"author": "alice", "mode": str(stat.S_IFREG | 0o600), "mtime": "9",
              "odd_name": "x", "note": "caf\u00e9"}  # two COS would refuse
    a = meta.attr_from_object(info(metadata=theirs,
                                   content_headers={"Cache-Control": "no-cache"}), D)
    assert a.foreign == {"author": "alice"}
    assert a.content_headers == {"Cache-Control": "no-cache"}
    a.mode = stat.S_IFREG | 0o644  # cosfs's own values win
    assert meta.metadata_for(a) == {"author": "alice", "mode": "33188", "uid": "1000",
                                    "gid": "100", "mtime": "9"}
    # Not reading metadata (-o listing_attrs) is no reason to drop theirs.
    no_meta = meta.Defaults(use_metadata=False)
    assert meta.attr_from_object(info(metadata=theirs), no_meta).foreign == {"author": "alice"}


def test_a_renamed_file_is_retyped_only_where_its_type_came_from_its_name():
    guess = {"a.html": "text/html", "a.txt": "text/plain"}.get

    def retyped(current: str, old: str, new: str) -> str | None:
        return meta.retyped(current, old, new, lambda k: guess(k, meta.DEFAULT_CONTENT_TYPE))

    assert retyped(meta.DEFAULT_CONTENT_TYPE, ".a.html.Xy12", "a.html") == "text/html"
    assert retyped("text/plain", "a.txt", "a.html") == "text/html"
    assert retyped("image/png", "a.txt", "a.html") is None  # set on purpose
    assert retyped("text/html", "b", "a.html") is None  # already right
    assert retyped("", "a.txt", "a.html") is None  # unknown: left as it is


def test_metadata_limit():
    a = meta.Attr(mode=0o100644, uid=0, gid=0, xattrs={"user.big": b"x" * 1500})
    assert not meta.fits_metadata_limit(a)
    a.xattrs = {"user.small": b"x" * 100}
    assert meta.fits_metadata_limit(a)


@pytest.mark.parametrize("bad,code", [("", errno.EINVAL), (".", errno.EINVAL),
                                      ("..", errno.EINVAL), ("a/b", errno.EINVAL),
                                      ("x" * 256, errno.ENAMETOOLONG)])
def test_bad_components(bad, code):
    with pytest.raises(OSError) as e:
        names.check_component(bad)
    assert e.value.errno == code


def test_decode_name_refuses_non_utf8():
    with pytest.raises(OSError) as e:
        names.decode_name(b"\xff\xfe")
    assert e.value.errno == errno.EINVAL


def test_keys_and_prefixes():
    assert names.child_key("", "a") == "a"
    assert names.child_key("a/b", "c") == "a/b/c"
    assert names.dir_prefix("") == "" and names.dir_prefix("a") == "a/"
    assert names.normalize_root("/x/y/") == "x/y"
    with pytest.raises(ValueError):
        names.normalize_root("/x/../y")
    names.check_key("k" * 850)
    with pytest.raises(OSError):
        names.check_key("k" * 850, directory=True)


def test_listable_hides_odd_components():
    assert not names.is_listable("") and not names.is_listable("..")
    assert names.is_listable("ok name #%+?&")


def test_parse_args_cosfs_style():
    a = options.parse_args(["demo-1250000000:/sub", "/mnt/x", "-o",
                            "url=http://127.0.0.1:9000,uid=5,umask=0077,allow_other,_netdev",
                            "--stat-cache-expire=0", "-f"])
    assert (a.bucket, a.prefix, a.mountpoint) == ("demo-1250000000", "/sub", Path("/mnt/x"))
    assert a.uid == 5 and a.umask == 0o077 and a.allow_other is True
    assert a.stat_cache_expire == 0.0 and a.foreground
    assert a.region == "ap-guangzhou"  # default
    assert a.storage_class == "STANDARD"
    assert options.parse_args(["b-1250000000", "/m", "-o", "storage_class=standard_ia"]
                              ).storage_class == "STANDARD_IA"


@pytest.mark.parametrize("argv,fragment", [
    (["b-1250000000", "/m", "-o", "bogus=1"], "unknown option 'bogus'"),
    (["b-1250000000", "/m", "-o", "uid=abc"], "option uid: invalid value"),
    (["b-1250000000", "/m", "-o", "uid"], "needs a value"),
    (["b-1250000000"], "usage:"),
    (["NoAppId", "/m"], "invalid bucket name"),
    (["b-1250000000", "/m", "-x"], "unknown flag"),
    (["b-1250000000", "/m", "-o", "storage_class=archive"], "storage_class 'archive'"),
    (["b-1250000000", "/m", "-o", "storage_class=cold"], "use one of STANDARD,"),
])
def test_parse_args_errors(argv, fragment):
    with pytest.raises(options.UsageError) as e:
        options.parse_args(argv)
    assert fragment in str(e.value)


def test_security_flags_reach_the_kernel(tmp_path):
    from cosfs import mount

    a = options.parse_args(["b-1250000000", "/m", "-o", "nosuid,nodev,noexec,_netdev"])
    p = mount.Prepared(a, "/m", None, "", tmp_path, None, None, None)  # type: ignore[arg-type]
    opts = mount.fuse_options(p)
    assert {"nosuid", "nodev", "noexec", "default_permissions"} <= opts
    assert "_netdev" not in opts


def test_option_table_lists_every_option():
    table = options.option_table()
    for o in options.OPTIONS:
        assert f"`{o.name}`" in table


def test_credentials_order_and_permissions(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("other-1:ID1:KEY1\nb-1250000000:ID2:KEY2\n")
    os.chmod(pw, 0o600)
    c = find_credentials("b-1250000000", pw, environ={})
    assert (c.secret_id, c.secret_key) == ("ID2", "KEY2")
    assert "KEY2" not in repr(c)
    env = {"COS_SECRET_ID": "E1", "COS_SECRET_KEY": "E2", "COS_SECURITY_TOKEN": "T"}
    c = find_credentials("b-1250000000", None, environ=env, home=tmp_path)
    assert (c.secret_id, c.token) == ("E1", "T")
    os.chmod(pw, 0o644)
    with pytest.raises(CredentialError) as e:
        find_credentials("b-1250000000", pw, environ={})
    assert "must not be accessible by others" in str(e.value)
    with pytest.raises(CredentialError):
        find_credentials("b-1250000000", None, environ={}, home=tmp_path / "none")
