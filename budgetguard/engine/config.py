"""What a guard's flows need beyond its limits and store: prices, leases, estimates, callbacks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..estimate import DEFAULT_MAX_OUTPUT_TOKENS, DEFAULT_MIN_OUTPUT_TOKENS
from ..pricing import Price
from ..records import CallRecord
from ..tokencount import Counter, bytes_counter
from .contention import DEFAULT_CONTENTION_WAIT

__all__ = ["EngineConfig"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Validated by ``budgetguard.settings.GuardSettings`` before it gets here."""

    prices: Mapping[str, Price] = field(default_factory=dict)
    default_price: Price | None = None
    lease_ttl: float = 600.0
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    on_record: Callable[[CallRecord], None] | None = None
    fit_max_tokens: bool = True  # lower a call's output cap to what the budget affords
    min_output_tokens: int = DEFAULT_MIN_OUTPUT_TOKENS  # never fitted below this: refused instead
    on_store_error: str = "closed"  # or "open": let calls through and spool them
    token_counter: Counter = bytes_counter  # the input bound (``tokencount.resolve_counter``)
    #: seconds a call refused only by other calls' reservations waits for them; 0: not at all
    contention_wait: float = DEFAULT_CONTENTION_WAIT
    #: "background": a network store's settles leave the caller's path (``engine/settler.py``); "inline"
    settle: str = "inline"
