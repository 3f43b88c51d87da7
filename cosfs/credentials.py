"""Where the key pair comes from: ``-o passwd_file``, the environment
(``COS_SECRET_ID``, ``COS_SECRET_KEY``, ``COS_SECURITY_TOKEN``), ``~/.passwd-cosfs``,
then ``/etc/passwd-cosfs``, in that order (as COSFS and s3fs-fuse do).

A passwd file holds ``bucket:SecretId:SecretKey`` lines (a line without the bucket
applies to every bucket); it is refused when other users may read it. Secrets are
never put in messages.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path


class CredentialError(ValueError):
    """No usable key pair; the message is safe to print."""


@dataclass(frozen=True)
class Credentials:
    secret_id: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    source: str = ""


def _from_file(path: Path, bucket: str) -> Credentials | None:
    st = path.stat()
    if st.st_mode & (stat.S_IRWXO):
        raise CredentialError(
            f"credentials file {path} must not be accessible by others (chmod 600 {path})")
    default: Credentials | None = None
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) == 3 and parts[0] == bucket:
            return Credentials(parts[1], parts[2], source=str(path))
        if len(parts) == 2 and default is None:
            default = Credentials(parts[0], parts[1], source=str(path))
        elif len(parts) not in (2, 3):
            raise CredentialError(f"{path} line {lineno}: expected bucket:SecretId:SecretKey")
    return default


def find_credentials(bucket: str, passwd_file: Path | None = None,
                     environ: dict[str, str] | None = None,
                     home: Path | None = None) -> Credentials:
    env = os.environ if environ is None else environ
    if passwd_file is not None:
        if not passwd_file.is_file():
            raise CredentialError(f"credentials file {passwd_file} does not exist")
        found = _from_file(passwd_file, bucket)
        if found is None:
            raise CredentialError(f"no key pair for bucket {bucket} in {passwd_file}")
        return found
    if env.get("COS_SECRET_ID") and env.get("COS_SECRET_KEY"):
        return Credentials(env["COS_SECRET_ID"], env["COS_SECRET_KEY"],
                           env.get("COS_SECURITY_TOKEN") or None, source="environment")
    home = home or Path(os.path.expanduser("~"))
    for path in (home / ".passwd-cosfs", Path("/etc/passwd-cosfs")):
        if path.is_file():
            found = _from_file(path, bucket)
            if found is not None:
                return found
    raise CredentialError(
        "no credentials: set COS_SECRET_ID and COS_SECRET_KEY, or write "
        "bucket:SecretId:SecretKey to ~/.passwd-cosfs (mode 600)")
