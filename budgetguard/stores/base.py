"""The store interface: five operations, each one atomic, with async twins.

A store keeps counters and leases and nothing else; the decisions are the
pure functions in ``budgetguard.reservation``. The operations are shaped so
that one Lua script can implement ``reserve`` and one ``settle``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar, Literal, NamedTuple

from ..definitions import LimitDef
from ..errors import ConfigError
from ..ledger import LedgerNote, LedgerRecord
from ..reservation import Amount, CounterRef, CounterSpec, CounterState, Violation

__all__ = [
    "Connector",
    "Store",
    "ReserveRequest",
    "ReserveResult",
    "SettleRequest",
    "SettleOutcome",
]

SettleOutcome = Literal["settled", "replay", "late", "unreserved"]


class ReserveRequest(NamedTuple):
    """Reserve ``amount`` on every counter, all or nothing, under lease ``lease_id``.

    ``force`` records the lease even if a cap would break (for usage that
    has already happened and must not be lost).
    """

    lease_id: str
    counters: tuple[CounterSpec, ...]
    amount: Amount
    ttl: float
    force: bool = False


class ReserveResult(NamedTuple):
    admitted: bool
    #: counter states, filled when refused or forced (they explain the refusal)
    states: tuple[CounterState, ...] = ()
    violation: Violation | None = None


class SettleRequest(NamedTuple):
    """Replace lease ``lease_id`` by ``actual``, exactly once.

    ``counters`` lets a store record usage for a lease it never saw (or no
    longer remembers) instead of losing it.
    """

    lease_id: str
    counters: tuple[CounterRef, ...]
    actual: Amount
    estimated: bool = False
    #: False when the reservation was only a probe (pipe form): no overshoot to report.
    count_overshoot: bool = True
    #: model, provider, tokens by kind and run id, for the ledger record this settle writes
    note: LedgerNote | None = None


class Store(abc.ABC):
    """Where budgets live. Sync and async methods mirror each other."""

    #: True if calls may block on I/O (then async paths must use the ``a*`` twins).
    blocking: bool = True
    #: Names the data this store holds, so a spool is replayed only into the store it was written for.
    spool_key: str = "default"
    #: False if only the ``a*`` methods work (the guard needs the sync ones: LangChain's callbacks are sync).
    supports_sync: bool = True

    @abc.abstractmethod
    def reserve(self, req: ReserveRequest) -> ReserveResult: ...

    @abc.abstractmethod
    def settle(self, req: SettleRequest) -> SettleOutcome: ...

    @abc.abstractmethod
    def release(self, lease_id: str, counters: tuple[CounterRef, ...]) -> bool:
        """Drop a reservation without charging (the call never reached the provider).

        A lease that already expired (and was charged its estimate) is refunded.

        ``counters`` are the reservation's, in the same order (a store may file
        the lease under the first one).
        """

    @abc.abstractmethod
    def status(self, refs: Sequence[CounterRef]) -> list[CounterState]:
        """Current-window states of ``refs``, read in one step."""

    @abc.abstractmethod
    def reset(self, scope: str) -> int:
        """Forget every counter of ``scope`` (all periods); returns how many."""

    #: False for a store that cannot deduplicate alerts (``claim_alert``): the guard refuses ``alerts=``.
    supports_alerts: bool = False

    def claim_alert(self, key: str, ttl: float | None) -> bool:
        """Claim ``key`` for ``ttl`` seconds (``None``: for good), atomically: True for one caller only.

        What makes an alert fire once across every process sharing the store.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot deduplicate alerts")

    async def aclaim_alert(self, key: str, ttl: float | None) -> bool:
        return self.claim_alert(key, ttl)

    async def areserve(self, req: ReserveRequest) -> ReserveResult:
        return self.reserve(req)

    async def asettle(self, req: SettleRequest) -> SettleOutcome:
        return self.settle(req)

    async def arelease(self, lease_id: str, counters: tuple[CounterRef, ...]) -> bool:
        return self.release(lease_id, counters)

    async def astatus(self, refs: Sequence[CounterRef]) -> list[CounterState]:
        return self.status(refs)

    async def areset(self, scope: str) -> int:
        return self.reset(scope)

    # ------------------------------------------------------------ operators' reads (the CLI)

    def define_limits(self, defs: Sequence[LimitDef]) -> None:  # noqa: B027 - optional
        """Record a guard's limit definitions (idempotent), so operators' tools know every cap."""

    async def adefine_limits(self, defs: Sequence[LimitDef]) -> None:
        self.define_limits(defs)

    def limit_definitions(self) -> list[LimitDef]:
        """Every limit definition guards recorded here, the most recently written first."""
        return []

    def ledger_records(self, since: float | None = None, until: float | None = None) -> list[LedgerRecord]:
        """The ledger's records with ``since <= time < until`` (epoch seconds), oldest first."""
        return []

    def scopes(self) -> list[tuple[str, str]]:
        """Every (scope key, period) that holds a counter."""
        raise ConfigError(f"{type(self).__name__} cannot list its scopes")

    def ping(self) -> float:
        """One round trip to the store, for health checks; the seconds it took.

        Raises ``BudgetStoreUnavailable`` (or ``ConfigError``) when the store cannot serve.
        """
        return 0.0  # an in-process store is always there

    async def aping(self) -> float:
        return self.ping()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections, if any."""


class Connector(abc.ABC):
    """Builds a store from a URL, for the schemes it declares (as the ``limits`` storages do).

    ``budgetguard.stores.registry`` lists every connector; a scheme is named
    there once and every message that lists schemes reads it from there.
    """

    #: The URL schemes this connector serves, lower case.
    schemes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abc.abstractmethod
    def connect(cls, url: str, *, timeout: float) -> Store:
        """The store for ``url`` (its scheme already lower case); ``timeout`` bounds each operation."""
