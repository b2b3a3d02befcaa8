"""The calls between their start and end events, keyed by LangChain run id.

``on_llm_end`` carries no metadata, only the run id, so the guard must
remember each reservation itself until the call ends.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from uuid import UUID

from ..pricing import Rates
from ..reservation import Amount, CounterRef
from ..usage import TokenUsage

__all__ = ["Pending", "PendingRuns"]


@dataclass(slots=True)
class Pending:
    """One reservation in flight, and what its stream has shown so far."""

    lease_id: str
    refs: tuple[CounterRef, ...]
    labels: tuple[str, ...]  # the scopes as the user wrote them, for records
    amount: Amount
    rates: Rates
    provider: str | None
    input_est: int
    output_cap: int
    chunks: int = 0
    out_seen: int = 0
    partial: TokenUsage | None = None
    spooled: bool = False  # reserved in the spool (store down, fail-open): settle there too
    probe: bool = False  # pipe form: the reservation was a 1-unit probe, not an estimate
    audio_in: bool = (
        False  # the prompt carries audio: a reading that does not split it out is charged as audio
    )


class PendingRuns:
    """Thread-safe run id -> ``Pending`` map."""

    __slots__ = ("_lock", "_runs")

    def __init__(self) -> None:
        self._runs: dict[UUID, Pending] = {}
        self._lock = threading.Lock()

    def __contains__(self, run_id: UUID) -> bool:
        return run_id in self._runs

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: UUID) -> Pending | None:
        return self._runs.get(run_id)

    def add(self, run_id: UUID, pending: Pending) -> None:
        with self._lock:
            self._runs[run_id] = pending

    def pop(self, run_id: UUID) -> Pending | None:
        with self._lock:
            return self._runs.pop(run_id, None)
