"""How a failed Redis call becomes ``BudgetStoreUnavailable``: one mapping for both twins.

A refusal (authentication, ACL) is never retried and says what to fix; a
transient error (connection, timeout) is retried by tenacity within what is
left of the store's ``timeout``, then reported as "did not answer in time".
Any other error (a script error, say) passes through unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import (
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from ...errors import BudgetStoreUnavailable

__all__ = ["REFUSED", "TRANSIENT", "Call", "unavailable"]

REFUSED = (AuthenticationError, NoPermissionError)  # not transient: never retried
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


def _retryable(e: BaseException) -> bool:
    return isinstance(e, TRANSIENT) and not isinstance(e, REFUSED)


def unavailable(label: str, e: BaseException | None) -> BudgetStoreUnavailable:
    """The error for a failed store call: a refusal (auth, ACL) says so, anything else timed out."""
    if not isinstance(e, REFUSED):
        return BudgetStoreUnavailable(label, e)
    if isinstance(e, AuthenticationError):
        problem = "refused the credentials (AuthenticationError); check the user and password in the URL"
    else:
        problem = (
            f"refused the command ({type(e).__name__}); the Redis user needs +@scripting "
            "(EVALSHA, SCRIPT LOAD) and +sadd +smembers on the prefix's keys"
        )
    return BudgetStoreUnavailable(label, None, problem=problem)


class Call:
    """One store call's error budget: the clock started, and what a failure becomes."""

    __slots__ = ("attempts", "label", "start", "timeout")

    def __init__(self, label: str, timeout: float, attempts: int) -> None:
        self.label = label
        self.timeout = timeout
        self.attempts = attempts
        self.start = time.monotonic()

    def retry_policy(self, first: BaseException) -> dict[str, Any]:
        """After a transient first failure: tenacity's arguments for the remaining attempts.

        A refusal, or no time or attempts left, raises the store error instead.
        """
        if isinstance(first, REFUSED):
            raise unavailable(self.label, first) from None
        left = self.timeout - (time.monotonic() - self.start)
        if left <= 0 or self.attempts < 2:
            raise BudgetStoreUnavailable(self.label, first) from None
        return {
            "stop": stop_after_delay(left) | stop_after_attempt(self.attempts - 1),
            "wait": wait_exponential(multiplier=0.01, max=0.1),
            "retry": retry_if_exception(_retryable),
            "reraise": False,
        }


@contextmanager
def mapped(label: str, timeout: float, attempts: int) -> Iterator[Call]:
    """Run one store call (sync or async body alike): refusals and exhausted retries become
    ``BudgetStoreUnavailable``; what else the call raises passes through."""
    try:
        yield Call(label, timeout, attempts)
    except REFUSED as e:
        raise unavailable(label, e) from None
    except RetryError as e:
        raise unavailable(label, e.last_attempt.exception()) from None
