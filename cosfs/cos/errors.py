"""The one error type the COS client raises."""

from __future__ import annotations


class CosError(Exception):
    """A request that did not succeed.

    ``status`` is the HTTP status (0 when no answer came: connection refused,
    reset, timeout, TLS failure); ``code`` is the COS error code from the body
    (``NoSuchKey``, ``SignatureDoesNotMatch``...) or a synthetic one for answers
    without a body (a bodiless 404 to HEAD is ``NoSuchKey``, or ``NoSuchBucket`` for
    HEAD Bucket; a bodiless 403 is ``AccessDenied``; no answer at all is
    ``ConnectionError``, ``Timeout`` or ``SSLError``). ``request_id`` is
    ``x-cos-request-id`` (or ``x-amz-request-id``) when the server sent one, else the
    body's ``RequestId``. The message never includes credentials.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str = "",
        request_id: str = "",
        *,
        operation: str = "",
        key: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.operation = operation
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        what = f"{self.operation} {self.key!r}" if self.key else self.operation
        parts = [p for p in (what.strip(), f"{self.status} {self.code}".strip()) if p]
        text = ": ".join(parts)
        if self.message:
            text += f" ({self.message})"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text

    @property
    def is_not_found(self) -> bool:
        return self.status == 404

    @property
    def is_transport(self) -> bool:
        """No HTTP answer at all (the server may or may not have acted)."""
        return self.status == 0
