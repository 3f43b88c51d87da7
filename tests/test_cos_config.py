"""Configuration rules and URL building (virtual-hosted and path-style)."""

from __future__ import annotations

import pytest

from cosfs.cos import CosConfig
from cosfs.cos.config import Endpoint, quote_key

BUCKET = "examplebucket-1250000000"


def config(**overrides) -> CosConfig:
    values = dict(secret_id="AKIDid", secret_key="s3cr3t-key", bucket=BUCKET,
                  region="ap-guangzhou")
    values.update(overrides)
    return CosConfig(**values)


def endpoint(**overrides) -> Endpoint:
    return Endpoint.from_config(config(**overrides))


def test_default_is_virtual_hosted_https() -> None:
    ep = endpoint()
    assert ep.url("a/b.txt") == f"https://{BUCKET}.cos.ap-guangzhou.myqcloud.com/a/b.txt"
    assert ep.host == f"{BUCKET}.cos.ap-guangzhou.myqcloud.com"
    assert ep.path("") == "/"


def test_default_path_style_when_asked() -> None:
    ep = endpoint(path_style=True)
    assert ep.url("k") == f"https://cos.ap-guangzhou.myqcloud.com/{BUCKET}/k"
    assert ep.path("") == f"/{BUCKET}/"


@pytest.mark.parametrize("url, host", [
    ("http://127.0.0.1:9000", "127.0.0.1:9000"),
    ("http://localhost:9000/", "localhost:9000"),
    ("http://[::1]:9000", "[::1]:9000"),
])
def test_ip_and_localhost_endpoints_are_path_style(url: str, host: str) -> None:
    ep = endpoint(endpoint=url)
    assert ep.host == host
    assert ep.url("a b") == f"http://{host}/{BUCKET}/a%20b"
    assert ep.path("a b") == f"/{BUCKET}/a b"


def test_custom_domain_is_virtual_hosted_under_its_host() -> None:
    ep = endpoint(endpoint="https://cos.example.com:8443")
    assert ep.url("k") == f"https://{BUCKET}.cos.example.com:8443/k"
    assert endpoint(endpoint="https://proxy.example.com", path_style=True).url("k") == (
        f"https://proxy.example.com/{BUCKET}/k")
    assert endpoint(endpoint="http://127.0.0.1:80", path_style=False).url("k") == (
        f"http://{BUCKET}.127.0.0.1/k")


def test_endpoint_without_scheme_base_path_and_default_port() -> None:
    assert endpoint(endpoint="cos.ap-beijing.myqcloud.com").url("k") == (
        f"https://{BUCKET}.cos.ap-beijing.myqcloud.com/k")
    ep = endpoint(endpoint="https://gw.example.com:443/cos/", path_style=True)
    assert ep.host == "gw.example.com"
    assert ep.url("k", "uploads") == f"https://gw.example.com/cos/{BUCKET}/k?uploads"


@pytest.mark.parametrize("bad", ["ftp://host", "http://", "http://user:pw@host"])
def test_bad_endpoints(bad: str) -> None:
    with pytest.raises(ValueError):
        endpoint(endpoint=bad)


@pytest.mark.parametrize("key, quoted", [
    ("a b", "a%20b"),
    ("100%", "100%25"),
    ("c++", "c%2B%2B"),
    ("#?&=", "%23%3F%26%3D"),
    ("腾讯云/", "%E8%85%BE%E8%AE%AF%E4%BA%91/"),
    ("dir/sub/", "dir/sub/"),
    ("~a_b-c.d", "~a_b-c.d"),
])
def test_quote_key(key: str, quoted: str) -> None:
    assert quote_key(key) == quoted


def test_repr_hides_secrets() -> None:
    cfg = config(token="session-token-value")
    for text in (repr(cfg), str(cfg)):
        assert "s3cr3t-key" not in text and "session-token-value" not in text
        assert "AKIDid" in text and "secret_key='***'" in text


@pytest.mark.parametrize("bad", [dict(signature="v2"), dict(bucket=""), dict(max_retries=-1),
                                 dict(pool_size=0), dict(read_timeout=0),
                                 dict(retry_base_delay=5, retry_max_delay=1)])
def test_invalid_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        config(**bad)


def test_tls_verification() -> None:
    assert config().verify is True
    assert config(ca_bundle="/etc/ca.pem").verify == "/etc/ca.pem"
    assert config(verify_tls=False, ca_bundle="/etc/ca.pem").verify is False
