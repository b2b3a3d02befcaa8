"""How a failed Redis call becomes a budgetguard error: one mapping for both twins.

Connection failures and error replies that say the server cannot take the
write *now* (READONLY, LOADING, BUSY, CLUSTERDOWN, MASTERDOWN, TRYAGAIN,
NOREPLICAS) are outages: retried by tenacity within what is left of the
store's ``timeout``, then ``BudgetStoreUnavailable`` (so ``on_store_error``
applies and settles are spooled). OOM and MISCONF are outages too, but are
not retried: they last longer than one call. A refusal (authentication, ACL)
is never retried. Replies no retry can fix (a missing database, a server
that is no Sentinel, other data under the prefix, a script error) are
``ConfigError``: not spooled, since replaying them would fail the same way.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    InvalidResponse,
    MasterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError
from tenacity import (
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from ...errors import BudgetError, BudgetStoreUnavailable, ConfigError

__all__ = ["FAILURES", "REFUSED", "TRANSIENT", "Call", "Reply", "classify", "failure", "mapped"]

REFUSED = (AuthenticationError, NoPermissionError)  # not transient: never retried
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
#: Everything a call may fail with that ``failure`` turns into a budgetguard error.
FAILURES = (*TRANSIENT, ResponseError, InvalidResponse, RedisClusterException)


class Reply(NamedTuple):
    """What an error reply means: an outage or not, worth retrying, and what to tell."""

    outage: bool
    retry: bool
    problem: str
    fix: str


_ROLES = (
    "point the URL at the primary, or use redis+sentinel:// or redis+cluster:// so writes follow failovers"
)
_OOM = Reply(
    True,
    False,
    "is out of memory (OOM: used memory is over maxmemory and writes are refused)",
    "raise maxmemory or free memory on that server; keep maxmemory-policy noeviction (evicting "
    "budget keys would reset budgets)",
)
_SLOTS = "check that every hash slot is served (redis-cli --cluster check)"
_BY_CLASS: tuple[tuple[type[BaseException], Reply], ...] = (
    (OutOfMemoryError, _OOM),
    (ReadOnlyError, Reply(True, True, "is a read-only replica (READONLY), as after a failover", _ROLES)),
    (
        MasterDownError,
        Reply(True, True, "is a replica that lost its primary (MASTERDOWN)", "bring it back, or " + _ROLES),
    ),
    (
        ClusterDownError,
        Reply(True, True, "reports the cluster down (CLUSTERDOWN)", _SLOTS),
    ),
    (  # redis-py's own finding, e.g. slots not covered when it reloads the slot map
        RedisClusterException,
        Reply(True, True, "is a cluster that does not serve every hash slot (RedisClusterException)", _SLOTS),
    ),
    (
        TryAgainError,
        Reply(True, True, "asked to try again (TRYAGAIN, a slot is moving)", "retry once it moved"),
    ),
    (
        ClusterCrossSlotError,
        Reply(False, False, "refused keys in several slots (CROSSSLOT)", "pass cluster=True to RedisStore"),
    ),
    (
        AskError,  # MOVED too: a plain client sent to a Cluster node
        Reply(False, False, "is a Cluster node (MOVED)", "use redis+cluster://host1:port1,host2:port2"),
    ),
    (
        InvalidResponse,
        Reply(
            True,
            False,
            "did not answer in the Redis protocol",
            "check the host and port in the URL, and rediss:// if the server wants TLS",
        ),
    ),
)
#: Error replies redis-py has no class for, by how their text begins (after redis-py drops "ERR ").
_BY_TEXT: tuple[tuple[str, Reply], ...] = (
    ("BUSY", Reply(True, True, "is busy running a script (BUSY)", "wait for it, or end it with SCRIPT KILL")),
    (
        "MISCONF",
        Reply(
            True,
            False,
            "refuses writes because it cannot save to disk (MISCONF)",
            "fix the server's disk or RDB snapshot error",
        ),
    ),
    (
        "NOREPLICAS",
        Reply(
            True,
            True,
            "has fewer replicas than min-replicas-to-write (NOREPLICAS)",
            "bring its replicas back",
        ),
    ),
    (
        "DB index is out of range",
        Reply(
            False,
            False,
            "has no such database (DB index is out of range)",
            "use a database number below the server's 'databases' setting (16 by default), e.g. /0",
        ),
    ),
    (
        "unknown command 'SENTINEL'",
        Reply(
            False,
            False,
            "is not a Sentinel (it does not know the SENTINEL command)",
            "use redis://host:port/db for a plain Redis, or list the Sentinels (port 26379) in redis+sentinel://",
        ),
    ),
    (
        "unknown command",
        Reply(
            False,
            False,
            "does not support a command budgetguard needs",
            "use a server that runs Lua scripts (EVALSHA, SCRIPT LOAD) and INFO",
        ),
    ),
    (
        "WRONGTYPE",
        Reply(
            False,
            False,
            "holds other data under the store's prefix (WRONGTYPE)",
            "give budgetguard a prefix= or a database of its own",
        ),
    ),
)


def classify(e: BaseException) -> Reply | None:
    """What an error reply (or a non-Redis answer) means; ``None`` for connection failures."""
    for cls, reply in _BY_CLASS:
        if isinstance(e, cls):
            return reply
    if not isinstance(e, ResponseError):
        return None
    text = str(e)
    for start, reply in _BY_TEXT:
        if text.startswith(start):
            return reply
    return Reply(  # a script error: deterministic, so neither retried nor spooled
        False,
        False,
        f"rejected a budgetguard script ({type(e).__name__}: {text[:200]})",
        "if the server refuses TIME in scripts, use RedisStore(..., server_time=False); otherwise this "
        "is a bug: please report it with the server's version",
    )


def _retryable(e: BaseException) -> bool:
    if isinstance(e, REFUSED):
        return False
    reply = classify(e)
    return reply.retry if reply is not None else isinstance(e, TRANSIENT)


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = e
    for _ in range(5):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


_DNS = ("Name or service not known", "nodename nor servname", "name resolution", "No address associated")


def _connection(e: BaseException) -> tuple[str, str]:
    """A connection failure told apart: refused, DNS, loading, or no answer in time."""
    text = " ".join(str(x) for x in _chain(e))
    kinds = [type(x) for x in _chain(e)]
    if isinstance(e, BusyLoadingError):
        return "is loading its data set into memory (LOADING)", "wait until it has loaded, then retry"
    if isinstance(e, MasterNotFoundError):
        return (
            "knows no primary for that service (MasterNotFoundError)",
            "check the service name in the URL (redis+sentinel://host:26379/<service>) and the Sentinels",
        )
    if ConnectionRefusedError in kinds or "Connection refused" in text:
        return (
            "refused the connection (ConnectionRefused: nothing listens there)",
            "check that Redis runs on that host and port",
        )
    if socket.gaierror in kinds or any(s in text for s in _DNS):
        return "has a host name that does not resolve (DNS)", "check the host name in the URL"
    if isinstance(e, (RedisTimeoutError, TimeoutError)) or "Timeout" in text:
        name = type(e).__name__
        return (
            f"did not answer in time ({name})",
            "check that the store is up and not overloaded, or raise store_timeout",
        )
    return (
        f"could not be reached ({type(e).__name__})",
        "check that the store is up and reachable, or raise store_timeout",
    )


def failure(label: str, e: BaseException | None, operation: str = "reserve") -> BudgetError:
    """The budgetguard error for a failed store call, saying what happened and what to fix."""
    if e is None:
        return BudgetStoreUnavailable(label, None, operation=operation)
    if isinstance(e, AuthenticationError):
        problem = "refused the credentials (AuthenticationError)"
        fix = "check the user and password in the URL"
    elif isinstance(e, NoPermissionError):
        problem = f"refused the command ({type(e).__name__})"
        fix = (
            "the Redis user needs +@scripting (EVALSHA, SCRIPT LOAD), +info, +ping and +sadd +smembers "
            "on the prefix's keys"
        )
    elif (reply := classify(e)) is not None:
        if not reply.outage:
            return ConfigError(f"Budget store {label} {reply.problem}; {reply.fix}.")
        problem, fix = reply.problem, reply.fix
    else:
        problem, fix = _connection(e)
    return BudgetStoreUnavailable(label, None, problem=problem, fix=fix, operation=operation)


class Call:
    """One store call's error budget: the clock started, and what a failure becomes."""

    __slots__ = ("attempts", "label", "operation", "start", "timeout")

    def __init__(self, label: str, timeout: float, attempts: int, operation: str) -> None:
        self.label = label
        self.timeout = timeout
        self.attempts = attempts
        self.operation = operation
        self.start = time.monotonic()

    def retry_policy(self, first: BaseException) -> dict[str, Any]:
        """After a first failure worth retrying: tenacity's arguments for the remaining attempts.

        Anything else, or no time or attempts left, raises the store error instead.
        """
        left = self.timeout - (time.monotonic() - self.start)
        if not _retryable(first) or left <= 0 or self.attempts < 2:
            raise failure(self.label, first, self.operation) from None
        return {
            "stop": stop_after_delay(left) | stop_after_attempt(self.attempts - 1),
            "wait": wait_exponential(multiplier=0.01, max=0.1),
            "retry": retry_if_exception(_retryable),
            "reraise": False,
        }


@contextmanager
def mapped(label: str, timeout: float, attempts: int, operation: str = "reserve") -> Iterator[Call]:
    """Run one store call (sync or async body alike): every Redis failure, after any retries,
    becomes ``BudgetStoreUnavailable`` or ``ConfigError``."""
    try:
        yield Call(label, timeout, attempts, operation)
    except RetryError as e:
        raise failure(label, e.last_attempt.exception(), operation) from None
    except FAILURES as e:
        raise failure(label, e, operation) from None
