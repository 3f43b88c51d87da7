"""Helpers for the cosfs-server tests: raw requests signed by the official SDK's signer
(for what the SDK has no call for) and a boto3 client for the S3 side."""

from __future__ import annotations

from urllib.parse import quote

import requests
from conftest import REGION, SECRET_ID, SECRET_KEY, ServerProcess


def bucket_host(bucket: str) -> str:
    return f"{bucket}.cos.{REGION}.myqcloud.com"


def cos_request(server: ServerProcess, sdk, method: str, bucket: str, key: str = "", *,
                params: dict | None = None, headers: dict | None = None,
                data=None, sign: bool = True, **kwargs) -> requests.Response:
    """A request to ``server`` addressed like real COS (virtual-hosted ``Host``), signed
    with the official SDK's ``get_auth`` over the headers given here (and the
    Content-Length of a bytes body)."""
    headers = {"Host": bucket_host(bucket), **(headers or {})}
    if isinstance(data, bytes):
        headers.setdefault("Content-Length", str(len(data)))
    if sign:
        headers["Authorization"] = sdk.get_auth(Method=method, Bucket=bucket, Key=key or "/",
                                                Headers=dict(headers), Params=params or {})
    url = f"{server.url}/{quote(key.encode(), safe='/-_.~')}"
    return requests.request(method, url, params=params, headers=headers, data=data,
                            timeout=30, **kwargs)


def sdk_upload_parts(sdk, bucket: str, key: str, chunks: list[bytes]) -> tuple[str, list[str]]:
    """Start a multipart upload of ``key`` and upload ``chunks`` as parts 1..N with the
    official SDK; (upload id, part ETags)."""
    upload_id = sdk.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = [sdk.upload_part(Bucket=bucket, Key=key, Body=chunk, PartNumber=n + 1,
                             UploadId=upload_id)["ETag"] for n, chunk in enumerate(chunks)]
    return upload_id, etags


def sdk_complete(sdk, bucket: str, key: str, upload_id: str, etags: list[str]) -> dict:
    """Complete ``upload_id`` with parts 1..N of ``etags``."""
    return sdk.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id,
        MultipartUpload={"Part": [{"PartNumber": n + 1, "ETag": e}
                                  for n, e in enumerate(etags)]})


def s3_client(server: ServerProcess, secret_id: str = SECRET_ID,
              secret_key: str = SECRET_KEY, **config):
    """boto3, SigV4, path-style, pointed at ``server``; no retries so errors show."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=server.url, region_name=REGION, aws_access_key_id=secret_id,
        aws_secret_access_key=secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 1, "mode": "standard"}, **config))
