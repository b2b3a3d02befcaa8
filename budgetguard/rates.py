"""A model's prices compiled to integers, and the arithmetic on them.

Where prices come from (genai-prices' bundled data, a user's ``Price``
table) is ``pricing.py``'s business; this is only what a call costs at
given rates: exactly, as an integer numerator, rounded up to nano-dollars
so budgets never undercount.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from .usage import TokenUsage

__all__ = ["NANOS_PER_USD", "Rates"]

NANOS_PER_USD = 1_000_000_000
_MTOK = 1_000_000

#: The usage classes LangChain can report, by genai-prices usage key: each one's index in a
#: ``TokenUsage``; -1 and -2: the 5-minute and 1-hour cache writes (derived); -3 (other keys): none.
_COUNT_AT = {
    "input_tokens": 0,
    "output_tokens": 1,
    "cache_read_tokens": 2,
    "cache_write_tokens": 3,
    "cache_write_5m_tokens": -1,
    "cache_write_1h_tokens": -2,
    "input_audio_tokens": 5,
    "output_audio_tokens": 6,
    "output_reasoning_tokens": 7,
}


#: A unit as ``numerator`` walks it: its count's place (``_COUNT_AT``), rate, tiers and descendants.
_Step = tuple[int, int, tuple[tuple[int, int], ...], tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class _Unit:
    key: str
    direction: str | None
    #: rate, in units of 10**-scale USD per token-million; tiers as (start, rate)
    base: int
    tiers: tuple[tuple[int, int], ...]
    descendants: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Rates:
    """One model's prices compiled to integers. Build with ``resolve_rates``."""

    model: str
    provider: str | None
    scale: int
    units: tuple[_Unit, ...]
    per_request: int  # same scale, per single request
    priced: bool = True  # False: no price was known (a tokens-only budget needs none); costs are 0
    #: the dearest input and output rates when no unit has tiers (``worst_nanos``'s answer, found once)
    _flat_worst: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)
    _plan: tuple[_Step, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plan = tuple((_COUNT_AT.get(x.key, -3), x.base, x.tiers, x.descendants) for x in self.units)
        object.__setattr__(self, "_plan", plan)
        if not any(unit.tiers for unit in self.units):
            object.__setattr__(self, "_flat_worst", self._dearest(0))

    def numerator(self, u: TokenUsage) -> int:
        """Cost times ``10**(scale+6)`` USD, exactly."""
        leaves: list[int] = []
        total = self.per_request * _MTOK
        for at, rate, tiers, descendants in self._plan:
            if at >= 0:
                leaf = u[at]
            elif at == -3 or not u.cache_write:  # the TTL split counts only under a cache write
                leaf = 0
            else:
                leaf = u.cache_write_1h if at == -2 else u.cache_write - u.cache_write_1h
            for d in descendants:
                leaf -= leaves[d]
            if leaf < 0:
                leaf = 0  # a contradictory report: never refund
            leaves.append(leaf)
            for start, tier_rate in tiers:
                if u.input_tokens > start:
                    rate = tier_rate
            total += rate * leaf
        return total

    def worst_nanos(self, input_tokens: int, output_tokens: int) -> int:
        """Worst-case nano-dollars: every token at the dearest rate of its direction.

        Input could all be cache writes (dearer than plain input on Anthropic),
        output could all be audio; tiers are chosen by ``input_tokens``.
        """
        best_in, best_out = self._flat_worst or self._dearest(input_tokens)
        num = self.per_request * _MTOK + best_in * input_tokens + best_out * output_tokens
        return _ceil_nanos(num, self.scale)

    def _dearest(self, input_tokens: int) -> tuple[int, int]:
        """The dearest input and output rates, tiers chosen by ``input_tokens``."""
        best = {"input": 0, "output": 0}
        for unit in self.units:
            if unit.direction not in best:
                continue
            rate = unit.base
            for start, tier_rate in unit.tiers:
                if input_tokens > start:
                    rate = tier_rate
            if rate > best[unit.direction]:
                best[unit.direction] = rate
        return best["input"], best["output"]

    def usd(self, u: TokenUsage) -> Decimal:
        return _plain(Decimal(self.numerator(u)).scaleb(-(self.scale + 6)))

    def nanos(self, u: TokenUsage) -> int:
        """Cost in nano-dollars, rounded up so budgets never undercount."""
        return _ceil_nanos(self.numerator(u), self.scale)


def _plain(d: Decimal) -> Decimal:
    """Drop trailing zeros (same value; print with ``format(d, "f")`` to avoid exponents)."""
    n = d.normalize()
    if n.adjusted() < 0:  # below one, so a negative exponent (most costs): no as_tuple() to build
        return n
    return n if n.as_tuple().exponent <= 0 else n.quantize(Decimal(1))  # type: ignore[operator]


def _ceil_nanos(numerator: int, scale: int) -> int:
    shift = scale + 6 - 9
    if shift <= 0:
        return int(numerator * 10**-shift)
    return int(-(-numerator // 10**shift))
