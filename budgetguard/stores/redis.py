"""Budgets shared by every process and host, in Redis (or Valkey).

Each operation is ONE Lua script call (EVALSHA; redis-py reloads a script
after NOSCRIPT), so a reservation against several limits is all-or-nothing
and no race can overspend. Money is integer nano-dollars (no INCRBYFLOAT).
Leases live in Redis with their expiry; expired ones are charged inside the
scripts. Window boundaries use the server's clock (``TIME``) unless
``server_time=False``. The scripts are the ``.lua`` files beside this module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode as AClusterNode
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.exceptions import AuthenticationError, NoPermissionError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from tenacity import (
    AsyncRetrying,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from ..errors import BudgetStoreUnavailable, ConfigError
from ..reservation import Amount, CounterRef, CounterState, Violation
from .base import ReserveRequest, ReserveResult, SettleOutcome, SettleRequest, Store

__all__ = ["RedisStore"]

T = TypeVar("T")
_QUANTITY = ("nanos", "tokens", "requests")
_REFUSED = (AuthenticationError, NoPermissionError)  # not transient: never retried
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


def _retryable(e: BaseException) -> bool:
    return isinstance(e, _TRANSIENT) and not isinstance(e, _REFUSED)


_WIDTH = 12  # values per counter in script replies


def _script(name: str) -> str:
    pkg = resources.files("budgetguard.stores") / "lua"
    common = (pkg / "common.lua").read_text(encoding="utf-8")
    return common + "\n" + (pkg / f"{name}.lua").read_text(encoding="utf-8")


_SOURCES = {name: _script(name) for name in ("reserve", "settle", "status", "reset")}


def root_tag(scope: str) -> str:
    """The hash tag of a scope: its root (text before the first '/'), brace-free."""
    root = scope.split("/", 1)[0]
    return root.replace("{", "%7B").replace("}", "%7D")


def _state(vals: Sequence[Any]) -> CounterState:
    v = [int(x) for x in vals]
    return CounterState(
        window_start=v[0],
        spent=Amount(v[1], v[2], v[3]),
        reserved=Amount(v[4], v[5], v[6]),
        overshoot_count=v[7],
        overshoot=Amount(v[8], v[9], v[10]),
        estimated_count=v[11],
    )


def _states(reply: Sequence[Any], start: int) -> tuple[CounterState, ...]:
    return tuple(_state(reply[i : i + _WIDTH]) for i in range(start, len(reply), _WIDTH))


def _cap(v: int | None) -> str:
    return "" if v is None else str(int(v))


class RedisStore(Store):
    """A store in Redis: build it from a URL or from clients you already have.

    ``timeout`` bounds every operation, retries included (tenacity): a dead
    or stalled server becomes ``BudgetStoreUnavailable`` in about that long.
    Pools block (up to ``timeout``) instead of raising when exhausted.
    """

    blocking = True

    def __init__(
        self,
        client: Any = None,
        async_client: Any = None,
        *,
        prefix: str = "budgetguard:",
        server_time: bool = True,
        clock: Callable[[], float] = time.time,
        timeout: float = 1.0,
        attempts: int = 3,
        tombstone_ttl: int = 86400,
        grace: int = 86400,
        cluster: bool | None = None,
        label: str | None = None,
    ) -> None:
        if client is None and async_client is None:
            raise ConfigError(
                "RedisStore needs client= (redis.Redis) and/or async_client=, or use RedisStore.from_url"
            )
        if "{" in prefix or "}" in prefix:
            raise ConfigError(
                f"prefix {prefix!r} must not contain braces: the store adds the hash tags itself"
            )
        if not timeout > 0 or attempts < 1:
            raise ConfigError("timeout must be > 0 seconds and attempts >= 1")
        if client is None:
            client = _sync_twin(async_client)  # the guard's sync path needs one; None if not derivable
        self.client = client
        self.async_client = async_client
        self.supports_sync = client is not None
        self.prefix = prefix
        self.server_time = server_time
        self._clock = clock
        self.timeout = float(timeout)
        self.attempts = attempts
        self.tombstone_ttl = int(tombstone_ttl)
        self.grace = int(grace)
        if cluster is None:
            cluster = isinstance(client, redis.RedisCluster) or isinstance(async_client, aredis.RedisCluster)
        self.cluster = cluster
        self.label = label or ("redis+cluster" if cluster else "redis")
        self._sync_scripts = {k: client.register_script(v) for k, v in _SOURCES.items()} if client else {}
        self._async_scripts = (
            {k: async_client.register_script(v) for k, v in _SOURCES.items()} if async_client else {}
        )
        self._roots_seen: set[str] = set()
        self.spool_key = _spool_key(client if client is not None else async_client, prefix, self.label)
        self._tails: dict[tuple[Any, ...], tuple[list[str], list[bytes]]] = {}

    def __repr__(self) -> str:
        return f"RedisStore({self.label}, prefix={self.prefix!r})"  # never the URL: it may hold a password

    # ------------------------------------------------------------ construction

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 1.0,
        max_connections: int = 50,
        **options: Any,
    ) -> RedisStore:
        """``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://h1:p1,h2:p2``,
        ``redis+sentinel://h1:p1,h2:p2/<service>``.

        Socket connect/read timeouts are a third of ``timeout`` so that the
        retries still fit in it; redis-py's own retries are off (ours bound them).
        """
        try:
            return cls._from_url(url, timeout=timeout, max_connections=max_connections, **options)
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            from . import _redact

            raise ConfigError(
                f"bad Redis URL {_redact(url)!r} ({e}); expected e.g. redis://[user:password@]host:6379/0"
            ) from None

    @classmethod
    def _from_url(cls, url: str, *, timeout: float, max_connections: int, **options: Any) -> RedisStore:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        sock = max(timeout / 3, 0.05)
        common: dict[str, Any] = {
            "socket_timeout": sock,
            "socket_connect_timeout": sock,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        if scheme in ("redis", "rediss", "unix"):
            db_text = parse_qs(parts.query).get("db", [parts.path.strip("/") if scheme != "unix" else ""])[0]
            if db_text and not db_text.isdigit():
                raise ConfigError(
                    f"bad Redis database {db_text!r} in the URL; expected e.g. redis://[user:password@]host:6379/0"
                )
            pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=timeout, **common
            )
            apool = aredis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=timeout, **common
            )
            return cls(
                redis.Redis(connection_pool=pool),
                aredis.Redis(connection_pool=apool),
                timeout=timeout,
                label=f"{scheme}://{parts.hostname or parts.path}",
                **options,
            )
        if scheme in ("redis+cluster", "rediss+cluster"):
            nodes = _hosts(parts.netloc, 6379)
            auth = _auth(parts)
            ssl = scheme.startswith("rediss")
            try:
                sync = redis.RedisCluster(
                    startup_nodes=[ClusterNode(h, p) for h, p in nodes],  # type: ignore[no-untyped-call]
                    connection_pool_class=redis.BlockingConnectionPool,
                    max_connections=max_connections,
                    ssl=ssl,
                    **auth,
                    **common,
                )
            except (RedisClusterException, *_TRANSIENT) as e:
                raise BudgetStoreUnavailable("redis+cluster", e) from None
            asy = aredis.RedisCluster(
                startup_nodes=[AClusterNode(h, p) for h, p in nodes],
                max_connections=max_connections,
                ssl=ssl,
                **auth,
                **{k: v for k, v in common.items() if k != "health_check_interval"},
            )
            return cls(sync, asy, timeout=timeout, cluster=True, label="redis+cluster", **options)
        if scheme in ("redis+sentinel", "rediss+sentinel"):
            from redis.asyncio.sentinel import Sentinel as ASentinel
            from redis.sentinel import Sentinel

            nodes = _hosts(parts.netloc, 26379)
            service = unquote(parts.path.strip("/")) or "mymaster"
            query = parse_qs(parts.query)
            db_text = query.get("db", ["0"])[0]
            if not db_text.isdigit():
                raise ConfigError(f"bad Redis database {db_text!r} in the URL; use ?db=<number>")
            db = int(db_text)
            auth = _auth(parts)
            skw = {"socket_timeout": sock, "socket_connect_timeout": sock}
            sentinel = Sentinel(nodes, sentinel_kwargs=skw, **common)  # type: ignore[no-untyped-call]
            asentinel = ASentinel(nodes, sentinel_kwargs=skw, **common)  # type: ignore[no-untyped-call]
            sync = sentinel.master_for(service, db=db, **auth)  # type: ignore[no-untyped-call]
            asy = asentinel.master_for(service, db=db, **auth)
            return cls(sync, asy, timeout=timeout, label=f"redis+sentinel/{service}", **options)
        raise ConfigError(
            f"unsupported Redis URL scheme {scheme!r}; use redis://, rediss://, unix://, "
            "redis+cluster:// or redis+sentinel://"
        )

    # ------------------------------------------------------------ plumbing

    def _now(self) -> str:
        return "" if self.server_time else str(int(self._clock() * 1_000_000))

    def _bases(self, scopes: Sequence[str]) -> tuple[list[str], list[int]]:
        bases: list[str] = []
        index: list[int] = []
        for scope in scopes:
            base = f"{self.prefix}{{{root_tag(scope)}}}:"
            if base not in bases:
                bases.append(base)
            index.append(bases.index(base) + 1)
        if self.cluster and len(bases) > 1:
            raise ConfigError(
                "on Redis Cluster one reservation must stay in one slot, but these scopes have different "
                f"roots: {sorted({s.split('/', 1)[0] for s in scopes})}. Nest them under one root, e.g. "
                "'org:{org_id}' and 'org:{org_id}/user:{user_id}'"
            )
        return bases, index

    @staticmethod
    def _retry_policy(budget: float, attempts: int) -> dict[str, Any]:
        """One policy for both twins: transient errors only, within what is left of the timeout."""
        return {
            "stop": stop_after_delay(budget) | stop_after_attempt(attempts),
            "wait": wait_exponential(multiplier=0.01, max=0.1),
            "retry": retry_if_exception(_retryable),
            "reraise": False,
        }

    def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if not self._sync_scripts:
            raise ConfigError("this RedisStore has only an asyncio client; pass client= for sync calls")
        script = self._sync_scripts[name]
        start = time.monotonic()
        try:  # the common case: one attempt, no retry machinery
            return script(keys=keys, args=args)
        except _REFUSED as e:
            raise self._unavailable(e) from None
        except _TRANSIENT as e:
            left = self.timeout - (time.monotonic() - start)
            if left <= 0 or self.attempts < 2:
                raise BudgetStoreUnavailable(self.label, e) from None
        try:
            for attempt in Retrying(**self._retry_policy(left, self.attempts - 1)):
                with attempt:
                    return script(keys=keys, args=args)
        except _REFUSED as e:
            raise self._unavailable(e) from None
        except RetryError as e:
            raise self._unavailable(e.last_attempt.exception()) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, e: BaseException | None) -> BudgetStoreUnavailable:
        """The error for a failed store call: a refusal (auth, ACL) says so, anything else timed out."""
        if not isinstance(e, _REFUSED):
            return BudgetStoreUnavailable(self.label, e)
        if isinstance(e, AuthenticationError):
            problem = "refused the credentials (AuthenticationError); check the user and password in the URL"
        else:
            problem = (
                f"refused the command ({type(e).__name__}); the Redis user needs +@scripting "
                "(EVALSHA, SCRIPT LOAD) and +sadd +smembers on the prefix's keys"
            )
        return BudgetStoreUnavailable(self.label, None, problem=problem)

    async def _acall(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if not self._async_scripts:
            return await asyncio.to_thread(self._call, name, keys, args)
        script = self._async_scripts[name]
        start = time.monotonic()
        try:
            return await script(keys=keys, args=args)
        except _REFUSED as e:
            raise self._unavailable(e) from None
        except _TRANSIENT as e:
            left = self.timeout - (time.monotonic() - start)
            if left <= 0 or self.attempts < 2:
                raise BudgetStoreUnavailable(self.label, e) from None
        try:
            async for attempt in AsyncRetrying(**self._retry_policy(left, self.attempts - 1)):
                with attempt:
                    return await script(keys=keys, args=args)
        except _REFUSED as e:
            raise self._unavailable(e) from None
        except RetryError as e:
            raise self._unavailable(e.last_attempt.exception()) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------ arguments

    def _reserve_tail(self, counters: tuple[Any, ...]) -> tuple[list[str], list[bytes]]:
        """The arguments that depend only on the counters, encoded once and cached."""
        cached = self._tails.get(counters)
        if cached is not None:
            return cached
        bases, index = self._bases([s.ref.scope for s in counters])
        tail: list[Any] = [self.tombstone_ttl, self.grace]
        for spec, i in zip(counters, index, strict=True):
            soft = spec.soft
            tail += [i, spec.ref.scope, spec.ref.per, *map(_cap, spec.caps)]
            tail += [*(map(_cap, soft) if soft is not None else ("", "", ""))]
        encoded = (bases, [str(v).encode() for v in tail])
        if len(self._tails) > 10_000:
            self._tails.clear()
        self._tails[counters] = encoded
        return encoded

    def _reserve_args(self, req: ReserveRequest) -> tuple[list[str], list[Any]]:
        bases, tail = self._reserve_tail(req.counters)
        a = req.amount
        head: list[Any] = [
            self._now(),
            req.lease_id,
            int(req.ttl * 1000),
            "1" if req.force else "0",
            len(req.counters),
            a.nanos,
            a.tokens,
            a.requests,
        ]
        return bases, head + tail

    @staticmethod
    def _reserve_result(reply: Sequence[Any]) -> ReserveResult:
        if len(reply) == 1:
            return ReserveResult(bool(int(reply[0])), ())
        admitted, vi, vq, soft = (int(x) for x in reply[:4])
        violation = Violation(vi - 1, _QUANTITY[vq - 1], bool(soft)) if vi else None
        return ReserveResult(bool(admitted), _states(reply, 4), violation)

    def _settle_args(self, req: SettleRequest, mode: str) -> tuple[list[str], list[Any]]:
        scopes = [r.scope for r in req.counters] or ["global"]
        bases, index = self._bases(scopes)
        a = req.actual
        args: list[Any] = [
            self._now(),
            req.lease_id,
            a.nanos,
            a.tokens,
            a.requests,
            "1" if req.estimated else "0",
            "1" if req.count_overshoot else "0",
            self.tombstone_ttl,
            self.grace,
            mode,
            len(req.counters),
        ]
        for ref, i in zip(req.counters, index, strict=True):
            args += [i, ref.scope, ref.per]
        return bases, args

    def _status_args(self, refs: Sequence[CounterRef]) -> tuple[list[str], list[Any]]:
        bases, index = self._bases([r.scope for r in refs])
        args: list[Any] = [self._now(), self.tombstone_ttl, self.grace, len(refs)]
        for ref, i in zip(refs, index, strict=True):
            args += [i, ref.scope, ref.per]
        return bases, args

    def _claim_roots(self, bases: list[str]) -> list[str]:
        """Roots not yet listed by this process (marked listed now; unmarked if the write fails)."""
        new = [b for b in bases if b not in self._roots_seen]
        self._roots_seen.update(new)
        return new

    def _register_roots(self, bases: list[str]) -> None:
        new = self._claim_roots(bases)
        if new and self.client is not None:
            try:
                self.client.sadd(f"{self.prefix}roots", *new)
            except _TRANSIENT:
                self._roots_seen.difference_update(new)  # listing only; retry next time

    # ------------------------------------------------------------ the interface

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        keys, args = self._reserve_args(req)
        result = self._reserve_result(self._call("reserve", keys, args))
        if result.admitted:
            self._register_roots(keys)
        return result

    async def areserve(self, req: ReserveRequest) -> ReserveResult:
        keys, args = self._reserve_args(req)
        result = self._reserve_result(await self._acall("reserve", keys, args))
        if result.admitted and self.async_client is None:
            await asyncio.to_thread(self._register_roots, keys)
        elif result.admitted:
            new = self._claim_roots(keys)
            if new:
                try:
                    await self.async_client.sadd(f"{self.prefix}roots", *new)
                except _TRANSIENT:
                    self._roots_seen.difference_update(new)  # listing only; retry next time
        return result

    def settle(self, req: SettleRequest) -> SettleOutcome:
        keys, args = self._settle_args(req, "settle")
        return _decode(self._call("settle", keys, args))  # type: ignore[return-value]

    async def asettle(self, req: SettleRequest) -> SettleOutcome:
        keys, args = self._settle_args(req, "settle")
        return _decode(await self._acall("settle", keys, args))  # type: ignore[return-value]

    def release(self, lease_id: str, counters: tuple[CounterRef, ...]) -> bool:
        keys, args = self._settle_args(SettleRequest(lease_id, counters, Amount()), "release")
        return _decode(self._call("settle", keys, args)) == "released"

    async def arelease(self, lease_id: str, counters: tuple[CounterRef, ...]) -> bool:
        keys, args = self._settle_args(SettleRequest(lease_id, counters, Amount()), "release")
        return _decode(await self._acall("settle", keys, args)) == "released"

    def status(self, refs: Sequence[CounterRef]) -> list[CounterState]:
        if not refs:
            return []
        keys, args = self._status_args(refs)
        return list(_states(self._call("status", keys, args), 0))

    async def astatus(self, refs: Sequence[CounterRef]) -> list[CounterState]:
        if not refs:
            return []
        keys, args = self._status_args(refs)
        return list(_states(await self._acall("status", keys, args), 0))

    def reset(self, scope: str) -> int:
        keys, _ = self._bases([scope])
        return int(self._call("reset", keys, [self._now(), scope]))

    async def areset(self, scope: str) -> int:
        keys, _ = self._bases([scope])
        return int(await self._acall("reset", keys, [self._now(), scope]))

    def scopes(self) -> list[tuple[str, str]]:
        """Every (scope, period) that has held a reservation, without KEYS or SCAN."""
        if self.client is None:
            raise ConfigError("scopes() needs a sync client")
        out: list[tuple[str, str]] = []
        for base in sorted(_decode(b) for b in self.client.smembers(f"{self.prefix}roots")):
            for member in self.client.smembers(f"{base}s"):
                scope, _, per = _decode(member).rpartition("\t")
                out.append((scope, per))
        return sorted(out)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


_TWIN_KEYS = (
    "host",
    "port",
    "db",
    "username",
    "password",
    "path",
    "socket_timeout",
    "socket_connect_timeout",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_check_hostname",
)


def _sync_twin(async_client: Any) -> Any:
    """A sync client to the same server as an asyncio one (not for Cluster: pass client= there)."""
    pool = getattr(async_client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, dict) or isinstance(async_client, aredis.RedisCluster):
        return None
    picked = {k: kwargs[k] for k in _TWIN_KEYS if k in kwargs}
    name = getattr(getattr(pool, "connection_class", None), "__name__", "")
    if "path" in picked:
        picked.pop("host", None)
        picked.pop("port", None)
        conn_class: Any = redis.UnixDomainSocketConnection
    elif "SSL" in name:
        conn_class = redis.SSLConnection
    else:
        conn_class = redis.Connection
    max_connections = getattr(pool, "max_connections", None) or 50
    return redis.Redis(
        connection_pool=redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
            connection_class=conn_class,
            max_connections=max_connections,
            retry=Retry(NoBackoff(), 0),
            **picked,
        )
    )


def _spool_key(client: Any, prefix: str, label: str) -> str:
    """A short, secret-free id of (server, db, prefix): one spool directory per store."""
    import hashlib

    where = label
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if isinstance(kwargs, dict):
        where = f"{kwargs.get('host')}|{kwargs.get('port')}|{kwargs.get('path')}|{kwargs.get('db')}"
    elif hasattr(client, "get_nodes"):
        nodes = sorted(f"{n.host}:{n.port}" for n in client.get_nodes())
        where = ",".join(nodes)
    digest = hashlib.sha256(f"{where}|{prefix}".encode()).hexdigest()[:16]
    return f"redis-{digest}"


def _decode(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hostpart = netloc.rsplit("@", 1)[-1]
    out = []
    for item in hostpart.split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", str(default_port))
        out.append((host or "127.0.0.1", int(port or default_port)))
    return out


def _auth(parts: Any) -> dict[str, Any]:
    netloc = parts.netloc
    if "@" not in netloc:
        return {}
    creds = netloc.rsplit("@", 1)[0]
    user, _, password = creds.partition(":")
    out: dict[str, Any] = {}
    if password:
        out["password"] = unquote(password)
        if user:
            out["username"] = unquote(user)
    elif user:
        out["password"] = unquote(user)
    return out
