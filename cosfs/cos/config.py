"""Connection settings of the COS client and the addressing rules derived from them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from urllib.parse import quote, urlsplit

SIGNATURES = ("cos", "s3")


@dataclass(frozen=True, kw_only=True)
class CosConfig:
    """Everything a :class:`~cosfs.cos.CosClient` needs to reach one bucket.

    Invariants: ``signature`` is ``"cos"`` (q-sign-algorithm=sha1) or ``"s3"`` (AWS
    SigV4); timeouts and delays are positive. Immutable, so it can be shared by any
    number of threads. ``repr()`` never shows ``secret_key`` or ``token``.
    """

    secret_id: str
    secret_key: str
    bucket: str  # name-appid
    region: str
    token: str | None = None
    endpoint: str | None = None  # None: https://<bucket>.cos.<region>.myqcloud.com
    path_style: bool | None = None  # None: path-style for an IP address or localhost
    signature: str = "cos"
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    pool_size: int = 32
    ca_bundle: str | None = None
    verify_tls: bool = True
    max_retries: int = 5
    retry_base_delay: float = 0.2
    retry_max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.signature not in SIGNATURES:
            raise ValueError(f"signature must be one of {SIGNATURES}, not {self.signature!r}")
        if not self.bucket or "/" in self.bucket:
            raise ValueError(f"invalid bucket name {self.bucket!r}")
        if self.max_retries < 0 or self.pool_size < 1:
            raise ValueError("max_retries must be >= 0 and pool_size >= 1")
        if min(self.connect_timeout, self.read_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.retry_base_delay < 0 or self.retry_max_delay < self.retry_base_delay:
            raise ValueError("need 0 <= retry_base_delay <= retry_max_delay")

    def __repr__(self) -> str:
        hidden = {"secret_key", "token"}
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in hidden and value:
                shown.append(f"{f.name}='***'")
            else:
                shown.append(f"{f.name}={value!r}")
        return f"CosConfig({', '.join(shown)})"

    __str__ = __repr__

    @property
    def verify(self) -> bool | str:
        """The ``verify`` argument for requests: False, True or a CA bundle path."""
        if not self.verify_tls:
            return False
        return self.ca_bundle or True


def _is_ip_or_localhost(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def quote_key(key: str) -> str:
    """Percent-encode an object key for a URL path: every byte except unreserved
    characters and ``/`` (so ``+``, ``%``, ``#``, ``?`` and spaces survive)."""
    return quote(key, safe="/-_.~")


@dataclass(frozen=True)
class Endpoint:
    """Where requests for one bucket go, resolved once from a :class:`CosConfig`.

    ``host`` is the value of the ``Host`` header (with the port when it is not the
    scheme's default); ``base_path`` is ``""`` or a prefix such as ``/proxy`` that a
    custom endpoint URL carried; with path-style addressing it ends in ``/<bucket>``.
    """

    scheme: str
    host: str
    base_path: str

    @classmethod
    def from_config(cls, config: CosConfig) -> Endpoint:
        if config.endpoint is None:
            service_host = f"cos.{config.region}.myqcloud.com"
            scheme, netloc, base = "https", service_host, ""
        else:
            raw = config.endpoint if "://" in config.endpoint else f"https://{config.endpoint}"
            parts = urlsplit(raw)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"invalid endpoint URL {config.endpoint!r}")
            scheme, netloc, base = parts.scheme, parts.netloc.lower(), parts.path.rstrip("/")
            if "@" in netloc:
                raise ValueError("credentials do not belong in the endpoint URL")
        hostname = urlsplit(f"{scheme}://{netloc}").hostname or ""
        path_style = config.path_style
        if path_style is None:
            path_style = _is_ip_or_localhost(hostname)
        if path_style:
            base = f"{base}/{config.bucket}"
        else:
            netloc = f"{config.bucket}.{netloc}"
        return cls(scheme, _strip_default_port(scheme, netloc), base)

    def path(self, key: str) -> str:
        """The decoded request path of ``key`` (``""`` means the bucket itself)."""
        return f"{self.base_path}/{key}"

    def url(self, key: str, query: str = "") -> str:
        """The full URL of ``key`` with an already encoded query string."""
        url = f"{self.scheme}://{self.host}{quote_key(self.path(key))}"
        return f"{url}?{query}" if query else url


def _strip_default_port(scheme: str, netloc: str) -> str:
    default = {"http": ":80", "https": ":443"}[scheme]
    return netloc[: -len(default)] if netloc.endswith(default) else netloc
