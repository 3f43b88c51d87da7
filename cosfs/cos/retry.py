"""Which failures are worth another attempt, and how long to wait before it."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import CosError

# Codes that say "try again later" whatever the status they come with; COS answers
# RequestTimeout with 400 and may put InternalError in a 200 body (copy, complete).
RETRYABLE_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)
# 501 NotImplemented will not change on retry; other 5xx (including a proxy's 502/504)
# are transient.
PERMANENT_5XX = frozenset({501, 505})


def is_retryable(err: CosError) -> bool:
    """True for transport failures, 5xx and throttling. A 403 never is: a wrong key or
    a skewed clock stays wrong, and hammering would look like an attack."""
    if err.status == 403:
        return False
    if err.status == 0:
        return err.code != "SSLError"  # a certificate will not become valid
    if err.status >= 500:
        return err.status not in PERMANENT_5XX
    return err.code in RETRYABLE_CODES


def is_server_fault(err: CosError) -> bool:
    """No answer came, or a 5xx did: the store (or the way to it) is failing, and the
    same request may succeed later. What was asked is still wanted: keep it to try
    again, unlike a refusal (4xx), which asking again would not change."""
    return err.status == 0 or err.status >= 500


def is_unknown_outcome(err: CosError) -> bool:
    """The server may have acted although we got no success answer: the connection
    failed after the request went out, or a 5xx came from somewhere along the way."""
    return is_server_fault(err) or err.code in RETRYABLE_CODES


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by ``max_retries`` extra attempts.

    The n-th retry (n = 1, 2, ...) sleeps uniformly in ``[0, min(max_delay,
    base_delay * 2**(n-1))]``: full jitter spreads clients that failed together, so
    they do not come back together. Immutable; ``rng`` may be shared between threads
    (``random.Random`` methods are thread-safe in CPython).
    """

    max_retries: int = 5
    base_delay: float = 0.2
    max_delay: float = 10.0

    def ceiling(self, retry: int) -> float:
        """The longest sleep before retry number ``retry`` (1-based)."""
        if retry < 1:
            return 0.0
        # Cap the exponent: 2**1000 would overflow a float long before max_delay binds.
        return min(self.max_delay, self.base_delay * 2 ** min(retry - 1, 60))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        return (rng or random).uniform(0.0, self.ceiling(retry))

    def should_retry(self, err: CosError, retries_done: int) -> bool:
        return retries_done < self.max_retries and is_retryable(err)
