"""The errors the local COS server answers with.

Every failure inside a request handler is a :class:`CosServerError`; the HTTP layer
turns it into the COS error document (see ``xmlio.error_document``).
"""

from __future__ import annotations

# The status of each error code the server can produce. Codes come from the COS
# error-code table; a few S3 codes that COS also returns to S3-signed requests are
# added (XAmzContentSHA256Mismatch, MetadataTooLarge, AuthorizationHeaderMalformed).
STATUS_OF_CODE: dict[str, int] = {
    "AuthorizationHeaderMalformed": 400,
    "BadDigest": 400,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRequest": 400,
    "InvalidURI": 400,
    "KeyTooLong": 400,
    "MalformedXML": 400,
    "MetadataTooLarge": 400,
    "XAmzContentSHA256Mismatch": 400,
    "AccessDenied": 403,
    "InvalidAccessKeyId": 403,
    "InvalidObjectState": 403,
    "RequestTimeTooSkewed": 403,
    "SignatureDoesNotMatch": 403,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "MethodNotAllowed": 405,
    "AppendPositionErr": 409,
    "BucketAlreadyExists": 409,
    "BucketNotEmpty": 409,
    "ObjectNotAppendable": 409,
    "MissingContentLength": 411,
    "PreconditionFailed": 412,
    "InvalidRange": 416,
    "InternalError": 500,
    "NotImplemented": 501,
    "ServiceUnavailable": 503,
    "SlowDown": 503,
}

# The code an injected fault uses for a status that has no obvious one.
_CODE_OF_INJECTED_STATUS = {
    400: "InvalidRequest",
    403: "AccessDenied",
    404: "NoSuchKey",
    409: "PathConflict",
    429: "SlowDown",
    500: "InternalError",
    502: "BadGateway",
    503: "SlowDown",
    504: "GatewayTimeout",
}


class CosServerError(Exception):
    """A COS error answer: HTTP status, COS error code and a human message.

    ``headers`` are extra response headers (e.g. ``Content-Range`` on 416).
    """

    def __init__(self, code: str, message: str, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS_OF_CODE[code]
        self.headers = dict(headers or {})


def injected_error(status: int) -> CosServerError:
    """The error a fault injection answers with for ``status``."""
    code = _CODE_OF_INJECTED_STATUS.get(status, "InjectedError")
    message = "Please reduce your request rate." if code == "SlowDown" \
        else "We encountered an internal error. Please try again. (injected fault)"
    return CosServerError(code, message, status)
