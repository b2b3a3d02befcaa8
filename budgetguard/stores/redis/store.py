"""``RedisStore``: the store operations, each one script call (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from tenacity import AsyncRetrying, Retrying

from ...errors import BudgetError, ConfigError
from ...ledger import DEFAULT_AGE, DEFAULT_MAXLEN
from ...reservation import Amount, CounterRef, CounterSpec, CounterState
from .. import registry
from ..base import ReserveRequest, ReserveResult, SettleOutcome, SettleRequest, Store
from . import codec, wire
from .calls import FAILURES, mapped
from .clients import describe, is_cluster, spool_key, sync_twin
from .connectors import RedisConnector, Target, store_options
from .ledger import LedgerRoots
from .operators import OperatorReads
from .policy import check_ledger, check_store, refuse_eviction
from .roots import Roots
from .scripts import register
from .slots import Flow, Group, Slotted, groups

__all__ = ["RedisStore"]

logger = logging.getLogger("budgetguard")

_REDIS = [c for c in registry.CONNECTORS if issubclass(c, RedisConnector)]
T = TypeVar("T")


class RedisStore(OperatorReads, Store):
    """A store in Redis: build it from a URL or from clients you already have.

    ``timeout`` bounds every operation, retries included (tenacity): a dead
    or stalled server becomes ``BudgetStoreUnavailable`` in about that long.
    Pools block (up to ``timeout``) instead of raising when exhausted.

    Leases that ran out are charged by the scripts themselves, at most 200
    per root scope per call (the next calls charge the rest); until then an
    overdue lease still counts against the budget, as reserved.

    The first operation reads ``INFO memory`` and refuses (``ConfigError``) a
    server whose ``maxmemory-policy`` may evict keys, unless ``allow_eviction``.

    Closed lease ids (what makes a replayed settle or release a no-op) are
    kept per root scope: the newest ``settled_cap`` of them, for at most
    ``tombstone_ttl`` seconds. A replay older than either may count twice.

    The ledger (``budgetguard.ledger``): one stream per root scope, kept to
    about ``ledger_maxlen`` records and ``ledger_age`` seconds (``None``: no
    age bound); ``ledger_maxlen=0`` keeps none. Both can be set in the URL:
    ``?ledger_maxlen=100000&ledger_age=7776000``.

    On Cluster, counters whose roots live in different slots are reserved
    slot by slot, in slot order, with compensation (``slots``); counters
    under one root (or roots that share a slot) take one script call.
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
        settled_cap: int = 10_000,
        cluster: bool | None = None,
        label: str | None = None,
        allow_eviction: bool = False,
        ledger_maxlen: int = DEFAULT_MAXLEN,
        ledger_age: float | None = DEFAULT_AGE,
    ) -> None:
        check_store(client, async_client, prefix, timeout, attempts)
        check_ledger(ledger_maxlen, ledger_age)
        if isinstance(settled_cap, bool) or not isinstance(settled_cap, int) or settled_cap < 1:
            raise ConfigError(f"settled_cap must be a positive number of lease ids, got {settled_cap!r}")
        if client is None:
            client = sync_twin(async_client)
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
        self.settled_cap = settled_cap
        self.cluster = is_cluster(client, async_client) if cluster is None else cluster
        self.label = label or describe(client if client is not None else async_client, self.cluster)
        self.allow_eviction = bool(allow_eviction)
        self._policy_ok = self.allow_eviction  # checked on the first operation: constructors do no I/O
        self._sync_scripts = register(client)
        self._async_scripts = register(async_client)
        self._roots = Roots(prefix)
        self.spool_key = spool_key(client if client is not None else async_client, prefix, self.label)
        self._tails: dict[tuple[CounterSpec, ...], tuple[list[str], list[bytes]]] = {}
        self.ledger_maxlen = int(ledger_maxlen)
        self.ledger_age = None if ledger_age is None else float(ledger_age)
        self._ledger = (self.ledger_maxlen, 0 if ledger_age is None else max(int(ledger_age * 1000), 1))
        self._ledger_roots = LedgerRoots(prefix, self.ledger_age)
        self._groups: dict[tuple[str, ...], list[Group] | None] = {}
        self._slotted = Slotted(self._now, self.tombstone_ttl, self.grace, self.settled_cap, self._ledger)
        hot = (self._bases, self.tombstone_ttl, self.grace, self.settled_cap, self._ledger)
        self._hot = wire.Hot(client, *hot) if client is not None else None
        self._ahot = wire.Hot(async_client, *hot) if async_client is not None else None

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
        ``redis+sentinel://h1:p1,h2:p2/<service>`` (the schemes of ``connectors``).

        Socket connect/read timeouts are a third of ``timeout`` so that the
        retries still fit in it; redis-py's own retries are off (ours bound them).
        """
        try:
            return cls._from_url(url, timeout=timeout, max_connections=max_connections, **options)
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            from .. import _redact

            raise ConfigError(
                f"bad Redis URL {_redact(url)!r} ({e}); expected e.g. redis://[user:password@]host:6379/0"
            ) from None

    @classmethod
    def _from_url(cls, url: str, *, timeout: float, max_connections: int, **options: Any) -> RedisStore:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        scheme, url, connector = registry.resolve(url)
        if connector is None:  # not '<scheme>://': let urllib read it, as redis-py will
            scheme = urlsplit(url).scheme
            connector = registry.lookup(scheme)
        if connector is None or not issubclass(connector, RedisConnector):
            raise ConfigError(f"unsupported Redis URL scheme {scheme!r}; use {registry.listing(_REDIS)}")
        url, from_query = store_options(url)
        sync, asy, own = connector.clients(Target(url, urlsplit(url), scheme, timeout, max_connections))
        return cls(sync, asy, timeout=timeout, **own, **{**from_query, **options})

    # ------------------------------------------------------------ plumbing

    def _now(self) -> str:
        return "" if self.server_time else str(int(self._clock() * 1_000_000))

    def _bases(self, scopes: Sequence[str]) -> tuple[list[str], list[int]]:
        return codec.key_bases(self.prefix, scopes, self.cluster)

    def _call(
        self, name: str, keys: list[str], args: list[Any], operation: str = "", packed: bytes | None = None
    ) -> Any:
        if not self._sync_scripts:
            raise ConfigError("this RedisStore has only an asyncio client; pass client= for sync calls")
        script = self._sync_scripts[name]
        start = time.monotonic()
        try:  # the common case: one attempt, no retry machinery
            return self._run(script, keys, args, packed)
        except FAILURES as e:
            first = e
        with mapped(self.label, self.timeout, self.attempts, operation or name) as call:
            call.start = start
            retrying = Retrying(**call.retry_policy(first))
            return retrying(self._run, script, keys, args, packed)

    async def _acall(
        self, name: str, keys: list[str], args: list[Any], operation: str = "", packed: bytes | None = None
    ) -> Any:
        if not self._async_scripts:
            return await asyncio.to_thread(self._call, name, keys, args, operation)
        script = self._async_scripts[name]
        start = time.monotonic()
        try:
            return await self._arun(script, keys, args, packed)
        except FAILURES as e:
            first = e
        with mapped(self.label, self.timeout, self.attempts, operation or name) as call:
            call.start = start
            retrying = AsyncRetrying(**call.retry_policy(first))
            return await retrying(self._arun, script, keys, args, packed)

    def _run(self, script: Any, keys: list[str], args: list[Any], packed: bytes | None = None) -> Any:
        if not self._policy_ok:
            self._check_policy(self.client.info("memory"))
        if packed is not None:  # wire.plain(client) held when it was packed
            return wire.send(self.client, script, packed)
        return script(keys=keys, args=args)

    async def _arun(self, script: Any, keys: list[str], args: list[Any], packed: bytes | None = None) -> Any:
        if not self._policy_ok:
            self._check_policy(await self.async_client.info("memory"))
        if packed is not None:
            return await wire.asend(self.async_client, script, packed)
        return await script(keys=keys, args=args)

    def _check_policy(self, info: Any) -> None:
        """Refuse an evicting server (``ConfigError``); once it passed, it is not read again."""
        refuse_eviction(info, self.label)
        self._policy_ok = True

    def _plan(self, scopes: Sequence[str]) -> list[Group] | None:
        """On Cluster, the slots of ``scopes`` when there are several (else the one-call path)."""
        if not self.cluster:
            return None
        key = tuple(scopes)
        if key not in self._groups:
            if len(self._groups) > 10_000:
                self._groups.clear()
            self._groups[key] = groups(self.prefix, key)
        return self._groups[key]

    def _drive(self, flow: Flow[T], operation: str) -> T:
        """Run a multi-slot flow: each step one script call; a failed call is thrown into it."""
        try:
            step = next(flow)
            while True:
                try:
                    reply = self._call(*step, operation)
                except BudgetError as e:
                    step = flow.throw(e)
                else:
                    step = flow.send(reply)
        except StopIteration as stop:
            return cast(T, stop.value)

    async def _adrive(self, flow: Flow[T], operation: str) -> T:
        try:
            step = next(flow)
            while True:
                try:
                    reply = await self._acall(*step, operation)
                except BudgetError as e:
                    step = flow.throw(e)
                else:
                    step = flow.send(reply)
        except StopIteration as stop:
            return cast(T, stop.value)

    # ------------------------------------------------------------ arguments

    def _reserve_args(self, req: ReserveRequest) -> tuple[list[str], list[Any]]:
        cached = self._tails.get(req.counters)  # the per-counter part, encoded once
        if cached is None:
            bases, index = self._bases([s.ref.scope for s in req.counters])
            tail = codec.reserve_tail(req.counters, index, self.tombstone_ttl, self.grace, self._ledger)
            cached = (bases, tail)
            if len(self._tails) > 10_000:
                self._tails.clear()
            self._tails[req.counters] = cached
        bases, tail = cached
        return bases, codec.reserve_head(req, self._now()) + tail

    def _settle_args(self, req: SettleRequest, mode: codec.SettleMode) -> tuple[list[str], list[Any]]:
        bases, index = self._bases([r.scope for r in req.counters] or ["global"])
        return bases, codec.settle_args(
            req, mode, index, self._now(), self.tombstone_ttl, self.grace, self.settled_cap, self._ledger
        )

    def _release_args(self, lease_id: str, counters: tuple[CounterRef, ...]) -> tuple[list[str], list[Any]]:
        return self._settle_args(SettleRequest(lease_id, counters, Amount()), "release")

    def _status_args(self, refs: Sequence[CounterRef]) -> tuple[list[str], list[Any]]:
        bases, index = self._bases([r.scope for r in refs])
        now, ttl = self._now(), self.tombstone_ttl
        return bases, codec.status_args(refs, index, now, ttl, self.grace, self._ledger)

    # ------------------------------------------------------------ the roots registry (roots.py)

    def _register_roots(self, req: ReserveRequest) -> None:
        due = self._roots.due(req.counters, self._clock())
        ledger_due = self._ledger_due(req)
        if (due or ledger_due) and self.client is not None:
            try:
                pipe = self.client.pipeline(transaction=False)
                if due:
                    self._roots.write(pipe, due, self._clock())
                if ledger_due:
                    self._ledger_roots.write(pipe, ledger_due, self._clock())
                pipe.execute()
            except FAILURES:
                self._roots.failed(due)  # listing only; retry next time
                self._ledger_roots.failed(ledger_due)

    async def _aregister_roots(self, req: ReserveRequest) -> None:
        if self.async_client is None:
            await asyncio.to_thread(self._register_roots, req)
            return
        due = self._roots.due(req.counters, self._clock())
        ledger_due = self._ledger_due(req)
        if due or ledger_due:
            try:
                pipe = self.async_client.pipeline(transaction=False)
                if due:
                    self._roots.write(pipe, due, self._clock())
                if ledger_due:
                    self._ledger_roots.write(pipe, ledger_due, self._clock())
                await pipe.execute()
            except FAILURES:
                self._roots.failed(due)  # listing only; retry next time
                self._ledger_roots.failed(ledger_due)

    def _ledger_due(self, req: ReserveRequest) -> dict[str, float]:
        """The roots to list in ``ledgerz`` now (``ledger.py``); none when no ledger is kept."""
        if not self.ledger_maxlen:
            return {}
        return self._ledger_roots.due([s.ref.scope for s in req.counters], self._clock())

    # ------------------------------------------------------------ the interface

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        plan = self._plan([s.ref.scope for s in req.counters]) if self.cluster else None
        if plan is not None:
            result = self._drive(self._slotted.reserve(req, plan), "reserve")
        elif self._hot is not None and wire.plain(self.client):
            packed = self._hot.reserve(self._sync_scripts["reserve"].sha, req, self._now())
            result = codec.decode_reserve(self._call("reserve", [], [], "", packed))
        else:
            keys, args = self._reserve_args(req)
            result = codec.decode_reserve(self._call("reserve", keys, args))
        if result.admitted:
            self._register_roots(req)
        return result

    async def areserve(self, req: ReserveRequest) -> ReserveResult:
        plan = self._plan([s.ref.scope for s in req.counters]) if self.cluster else None
        if plan is not None:
            result = await self._adrive(self._slotted.reserve(req, plan), "reserve")
        elif self._ahot is not None and wire.plain(self.async_client):
            packed = self._ahot.reserve(self._async_scripts["reserve"].sha, req, self._now())
            result = codec.decode_reserve(await self._acall("reserve", [], [], "", packed))
        else:
            keys, args = self._reserve_args(req)
            result = codec.decode_reserve(await self._acall("reserve", keys, args))
        if result.admitted:
            await self._aregister_roots(req)
        return result

    def settle(self, req: SettleRequest) -> SettleOutcome:
        plan = self._plan([r.scope for r in req.counters]) if self.cluster else None
        if plan is not None:
            out: str = self._drive(self._slotted.settle(req, plan, "settle"), "settle")
        elif self._hot is not None and wire.plain(self.client):
            packed = self._hot.settle(self._sync_scripts["settle"].sha, req, self._now())
            out = codec.decode_text(self._call("settle", [], [], "", packed))
        else:
            keys, args = self._settle_args(req, "settle")
            out = codec.decode_text(self._call("settle", keys, args))
        if self.ledger_maxlen:  # a root it never reserved: rare, and at most once an hour
            self._ledger_roots.list_now(self.client, [r.scope for r in req.counters], self._clock())
        return out  # type: ignore[return-value]

    async def asettle(self, req: SettleRequest) -> SettleOutcome:
        plan = self._plan([r.scope for r in req.counters]) if self.cluster else None
        if plan is not None:
            out: str = await self._adrive(self._slotted.settle(req, plan, "settle"), "settle")
        elif self._ahot is not None and wire.plain(self.async_client):
            packed = self._ahot.settle(self._async_scripts["settle"].sha, req, self._now())
            out = codec.decode_text(await self._acall("settle", [], [], "", packed))
        else:
            keys, args = self._settle_args(req, "settle")
            out = codec.decode_text(await self._acall("settle", keys, args))
        if self.ledger_maxlen:
            scopes = [r.scope for r in req.counters]
            await self._ledger_roots.alist_now(self.async_client, self.client, scopes, self._clock())
        return out  # type: ignore[return-value]

    def release(self, lease_id: str, counters: tuple[CounterRef, ...]) -> bool:
        plan = self._plan([r.scope for r in counters]) if self.cluster else None
        if plan is not None:
            req = SettleRequest(lease_id, counters, Amount())
            return self._drive(self._slotted.settle(req, plan, "release"), "release") == "released"
        keys, args = self._release_args(lease_id, counters)
        return codec.decode_text(self._call("settle", keys, args, "release")) == "released"

    async def arelease(self, lease_id: str, counters: tuple[CounterRef, ...]) -> bool:
        plan = self._plan([r.scope for r in counters]) if self.cluster else None
        if plan is not None:
            flow = self._slotted.settle(SettleRequest(lease_id, counters, Amount()), plan, "release")
            return await self._adrive(flow, "release") == "released"
        keys, args = self._release_args(lease_id, counters)
        return codec.decode_text(await self._acall("settle", keys, args, "release")) == "released"

    def status(self, refs: Sequence[CounterRef]) -> list[CounterState]:
        if not refs:
            return []
        plan = self._plan([r.scope for r in refs]) if self.cluster else None
        if plan is not None:
            return self._drive(self._slotted.status_all(refs, plan), "status")
        keys, args = self._status_args(refs)
        return list(codec.decode_states(self._call("status", keys, args), 0))

    async def astatus(self, refs: Sequence[CounterRef]) -> list[CounterState]:
        if not refs:
            return []
        plan = self._plan([r.scope for r in refs]) if self.cluster else None
        if plan is not None:
            return await self._adrive(self._slotted.status_all(refs, plan), "status")
        keys, args = self._status_args(refs)
        return list(codec.decode_states(await self._acall("status", keys, args), 0))

    def ping(self) -> float:
        """One round trip (PING, or on a first contact the eviction check's INFO), no retry;
        seconds taken. Raises ``BudgetStoreUnavailable`` or ``ConfigError`` naming the fix."""
        if self.client is None:
            return asyncio.run(self.aping())
        with mapped(self.label, self.timeout, 1, "ping"):
            t0 = time.monotonic()
            if self._policy_ok:
                self.client.ping()
            else:
                self._check_policy(self.client.info("memory"))
            return time.monotonic() - t0

    async def aping(self) -> float:
        if self.async_client is None:
            return await asyncio.to_thread(self.ping)
        with mapped(self.label, self.timeout, 1, "ping"):
            t0 = time.monotonic()
            if self._policy_ok:
                await self.async_client.ping()
            else:
                self._check_policy(await self.async_client.info("memory"))
            return time.monotonic() - t0

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
