"""Which errno an application sees for a COS failure (after retries).

Shared by the FUSE adapter and the data path so the same failure always reads the
same way, whichever layer meets it.
"""

from __future__ import annotations

import errno

from cosfs.cos import CosError

# COS error codes whose errno is not implied by the HTTP status.
_CODE_ERRNO = {
    "NoSuchKey": errno.ENOENT,
    "NoSuchBucket": errno.EIO,
    "KeyTooLong": errno.ENAMETOOLONG,
    "EntityTooLarge": errno.EFBIG,
    "InvalidObjectState": errno.EACCES,  # archived: restore it before reading
    "AccessDenied": errno.EACCES,
    "SignatureDoesNotMatch": errno.EACCES,
    "InvalidAccessKeyId": errno.EACCES,
    "PreconditionFailed": errno.EIO,
}


def errno_for(exc: CosError) -> int:
    if exc.code in _CODE_ERRNO:
        return _CODE_ERRNO[exc.code]
    if exc.status == 404:
        return errno.ENOENT
    if exc.status == 403:
        return errno.EACCES
    return errno.EIO
