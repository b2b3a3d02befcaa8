"""The store operations a flow asks its driver for, as typed values.

A flow never touches the store or the spool: it yields one of these and is
sent back the result (or has ``BudgetStoreUnavailable`` thrown into it).
The small ``yield from`` helpers give each result its type.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, Union, cast

from ..definitions import LimitDef
from ..reservation import CounterRef, CounterState
from ..stores.base import ReserveRequest, ReserveResult, SettleOutcome, SettleRequest

__all__ = [
    "ClaimAlert",
    "Define",
    "Flow",
    "Op",
    "Release",
    "Replay",
    "Reserve",
    "Reset",
    "Settle",
    "Sleep",
    "SpoolAppend",
    "Status",
    "claim_alert",
    "define",
    "release",
    "replay",
    "reserve",
    "reset",
    "settle",
    "sleep",
    "spool_append",
    "status",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reserve:
    operation: ClassVar[str] = "reserve"  # named in errors
    request: ReserveRequest


@dataclass(frozen=True, slots=True)
class Settle:
    operation: ClassVar[str] = "settle"  # named in errors
    request: SettleRequest


@dataclass(frozen=True, slots=True)
class Release:
    operation: ClassVar[str] = "release"  # named in errors
    lease_id: str
    counters: tuple[CounterRef, ...]


@dataclass(frozen=True, slots=True)
class Status:
    operation: ClassVar[str] = "status"  # named in errors
    refs: tuple[CounterRef, ...]


@dataclass(frozen=True, slots=True)
class Reset:
    operation: ClassVar[str] = "reset"  # named in errors
    scope: str  # a store key


@dataclass(frozen=True, slots=True)
class ClaimAlert:
    """Claim an alert key once for everyone (``Store.claim_alert``): True for the one claimer."""

    operation: ClassVar[str] = "claim_alert"  # named in errors
    key: str
    ttl: float | None  # seconds; None: kept for good (a lifetime window)


@dataclass(frozen=True, slots=True)
class Define:
    """Record the guard's limit definitions in the store (once per guard, after its first reserve)."""

    operation: ClassVar[str] = "define"  # named in errors
    defs: tuple[LimitDef, ...]


@dataclass(frozen=True, slots=True)
class SpoolAppend:
    """Write one line to the local spool (fsync'ed) before going on."""

    entry: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Replay:
    """Replay the spool into the store now, if it holds lines and the store is up."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Pause the call for ``seconds`` (a contention wait), without blocking an event loop.

    The driver sends back True once it paused, False if it cannot pause here
    (a sync check running on an event loop's thread): the flow then stops waiting.
    """

    seconds: float


Op = Union[Reserve, Settle, Release, Status, Reset, ClaimAlert, Define, SpoolAppend, Replay, Sleep]  # noqa: UP007
#: A generator that yields operations and returns ``T``.
Flow = Generator[Op, object, T]


def reserve(request: ReserveRequest) -> Flow[ReserveResult]:
    return cast(ReserveResult, (yield Reserve(request)))


def settle(request: SettleRequest) -> Flow[SettleOutcome]:
    return cast(SettleOutcome, (yield Settle(request)))


def release(lease_id: str, counters: tuple[CounterRef, ...]) -> Flow[bool]:
    return cast(bool, (yield Release(lease_id, counters)))


def status(refs: tuple[CounterRef, ...]) -> Flow[list[CounterState]]:
    return cast("list[CounterState]", (yield Status(refs)))


def reset(scope: str) -> Flow[int]:
    return cast(int, (yield Reset(scope)))


def claim_alert(key: str, ttl: float | None) -> Flow[bool]:
    return cast(bool, (yield ClaimAlert(key, ttl)))


def define(defs: tuple[LimitDef, ...]) -> Flow[bool]:
    """True once the store took them; False if it could not now (never raised: see DriverState)."""
    return cast(bool, (yield Define(defs)))


def spool_append(entry: dict[str, Any]) -> Flow[None]:
    yield SpoolAppend(entry)


def replay() -> Flow[None]:
    yield Replay()


def sleep(seconds: float) -> Flow[bool]:
    return cast(bool, (yield Sleep(seconds)))
