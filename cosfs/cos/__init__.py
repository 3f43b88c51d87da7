"""The COS client: a blocking, thread-safe client for one bucket of Tencent Cloud COS
(or of S3 with ``signature="s3"``)."""

from .body import FileSlice
from .client import CosClient
from .config import CosConfig
from .errors import CosError
from .types import DeleteError, ListPage, ObjectInfo, PartInfo, UploadInfo

__all__ = [
    "CosClient",
    "CosConfig",
    "CosError",
    "DeleteError",
    "FileSlice",
    "ListPage",
    "ObjectInfo",
    "PartInfo",
    "UploadInfo",
]
