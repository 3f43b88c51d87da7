"""Retry classification and backoff arithmetic (pure)."""

from __future__ import annotations

import random
import statistics

import pytest

from cosfs.cos import CosError
from cosfs.cos.retry import RetryPolicy, is_retryable, is_unknown_outcome


@pytest.mark.parametrize("status, code, retry", [
    (0, "ConnectionError", True),
    (0, "Timeout", True),
    (0, "SSLError", False),
    (500, "InternalError", True),
    (502, "HTTP502", True),
    (503, "SlowDown", True),
    (503, "ServiceUnavailable", True),
    (501, "NotImplemented", False),
    (400, "RequestTimeout", True),
    (200, "InternalError", True),  # a 200 copy/complete with an error body
    (403, "AccessDenied", False),
    (403, "SignatureDoesNotMatch", False),
    (403, "SlowDown", False),  # a 403 is never retried, whatever the code
    (404, "NoSuchKey", False),
    (409, "AppendPositionErr", False),
    (412, "PreconditionFailed", False),
])
def test_classification(status: int, code: str, retry: bool) -> None:
    assert is_retryable(CosError(status, code)) is retry


def test_unknown_outcome() -> None:
    assert is_unknown_outcome(CosError(0, "Timeout"))
    assert is_unknown_outcome(CosError(503, "SlowDown"))
    assert not is_unknown_outcome(CosError(409, "AppendPositionErr"))
    assert not is_unknown_outcome(CosError(403, "AccessDenied"))


def test_ceiling_doubles_then_caps() -> None:
    policy = RetryPolicy(max_retries=10, base_delay=0.1, max_delay=1.0)
    assert [policy.ceiling(n) for n in range(0, 7)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.ceiling(10_000) == 1.0  # no overflow for absurd counts


def test_full_jitter_stays_in_range_and_spreads() -> None:
    policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=3.0)
    rng = random.Random(42)
    for retry in range(1, 8):
        samples = [policy.delay(retry, rng) for _ in range(2000)]
        top = policy.ceiling(retry)
        assert all(0.0 <= s <= top for s in samples)
        # Full jitter: uniform over [0, top], so the mean is near top/2, not near top.
        assert statistics.mean(samples) == pytest.approx(top / 2, rel=0.1)
        assert min(samples) < top * 0.05 and max(samples) > top * 0.95


def test_should_retry_is_bounded() -> None:
    policy = RetryPolicy(max_retries=2)
    err = CosError(503, "SlowDown")
    assert [policy.should_retry(err, n) for n in range(4)] == [True, True, False, False]
    assert not RetryPolicy(max_retries=0).should_retry(err, 0)
    assert not policy.should_retry(CosError(403, "AccessDenied"), 0)
