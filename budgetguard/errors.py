"""Every error budgetguard raises, each naming the problem and the fix."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, NamedTuple

from .units import Quantity, format_quantity

if TYPE_CHECKING:
    from .limits import Limit

__all__ = [
    "BudgetError",
    "BudgetExceeded",
    "BudgetStoreUnavailable",
    "CandidateRefusal",
    "ConfigError",
    "DegradeRequired",
    "MissingScope",
    "UnknownModelPrice",
]


class BudgetError(Exception):
    """Base of every budgetguard error."""

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructors do not survive the default pickling: rebuild from the fields,
        # so an error crossing a process pool keeps its class and everything it says.
        return (_rebuild, (type(self), self.__dict__.copy(), self.args))


class BudgetStoreUnavailable(BudgetError):
    """The budget store could not be reached in time, or refused the operation.

    ``operation`` is what was being done (``reserve``, ``settle``, ``release``,
    ``status``, ``reset`` or ``ping``), so the message says what it means for
    the caller: only a failed ``reserve`` means the call was not made.
    """

    def __init__(
        self,
        store: str,
        cause: BaseException | None = None,
        *,
        problem: str | None = None,
        fix: str | None = None,
        sent: bool = True,
        operation: str = "reserve",
    ) -> None:
        self.store = store
        #: False when nothing was sent (the store was known to be down), so nothing can land late.
        self.sent = sent
        self.operation = operation
        why = f": {type(cause).__name__}" if cause is not None else ""
        self.problem = problem or f"did not answer in time{why}"
        self.fix = fix if problem else "Check that the store is up and reachable, or raise store_timeout"
        fix_text = f" {self.fix[:1].upper()}{self.fix[1:]}." if self.fix else ""
        after = _AFTER.get(operation, _AFTER["reserve"])
        super().__init__(f"Budget store {store} {self.problem}.{fix_text} {after}")

    def during(self, operation: str) -> BudgetStoreUnavailable:
        """The same failure, told for ``operation`` (the driver knows what the store was asked)."""
        if operation == self.operation:
            return self
        return BudgetStoreUnavailable(
            self.store, problem=self.problem, fix=self.fix, sent=self.sent, operation=operation
        )


#: What a store failure means for the caller, by operation.
_AFTER = {
    "reserve": "The call was not made (budgets fail closed).",
    "settle": "The call already ran; its usage is not recorded yet (a guard spools it for later).",
    "release": "The reservation stays until the spool is replayed or its lease expires.",
    "status": "The budget status could not be read.",
    "reset": "Nothing was reset.",
    "ping": "The health check failed.",
}


class ConfigError(BudgetError, ValueError):
    """The guard, a limit or a price was configured wrongly."""


class UnknownModelPrice(BudgetError, LookupError):
    """No price is known for a model, so its cost cannot be charged."""

    def __init__(self, model: str, provider: str | None = None, *, reason: str | None = None) -> None:
        self.model = model
        self.provider = provider
        where = f" (provider {provider!r})" if provider else ""
        why = reason or "it is not in the bundled genai-prices data"
        super().__init__(
            f"No price for model {model!r}{where}: {why}. "
            f"Pass prices={{{model!r}: budgetguard.Price(input_per_mtok=..., output_per_mtok=...)}} "
            "to the guard (or to cost()), or opt in to a fallback with default_price=Price(...)."
        )


class MissingScope(BudgetError, KeyError):
    """A scope template needs a metadata key the run did not carry, or got a bad value."""

    def __init__(self, template: str, key: str, problem: str = "is missing") -> None:
        self.template = template
        self.key = key
        super().__init__(template, key)
        self._msg = (
            f"Scope {template!r} needs metadata[{key!r}], which {problem}. "
            f"Pass it with config={{'metadata': {{{key!r}: ...}}}} on the call, "
            f"or with guard.enforce({key}=...)."
        )

    def __str__(self) -> str:
        return self._msg


class CandidateRefusal(NamedTuple):
    """Why one candidate model (the primary, a fallback) was refused, with fallbacks."""

    role: str  # "primary", "fallback" or "primary, ignoring degrade_at"
    model: str | None
    reason: str


class BudgetExceeded(BudgetError):
    """A call was refused because its worst case does not fit a limit.

    The fields say which limit, in its own unit (USD ``Decimal`` or an ``int``
    count of tokens or requests). ``input_tokens`` and ``output_tokens`` are
    what the estimate assumed (the output cap). ``never_fits`` is True when
    even the minimal form of the call (one output token) is more than the
    whole limit: waiting will not help. ``retry_after`` is in seconds: short
    (``RETRY_RESERVED``) when calls in flight hold the budget, the time until
    the window resets when spent money does, ``None`` when waiting cannot
    help (a lifetime limit, or a call that never fits). With fallbacks,
    ``candidates`` says why each model was refused, in the order tried.
    """

    def __init__(
        self,
        *,
        scope: str,
        limit: Limit,
        quantity: Quantity,
        window: str,
        spent: Decimal | int,
        reserved: Decimal | int,
        requested: Decimal | int,
        remaining: Decimal | int,
        resets_at: datetime | None,
        model: str | None = None,
        note: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        never_fits: bool = False,
        retry_after: float | None = None,
        fix: str | None = None,
    ) -> None:
        self.scope = scope
        self.limit = limit
        self.quantity = quantity
        self.window = window
        self.spent = spent
        self.reserved = reserved
        self.requested = requested
        self.remaining = remaining
        self.resets_at = resets_at
        self.model = model
        self.note = note
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.never_fits = never_fits
        self.retry_after = retry_after
        self.fix = fix
        self.candidates: list[CandidateRefusal] = []
        super().__init__(self._message())

    def add_candidate(self, candidate: CandidateRefusal) -> None:
        """Record why another candidate was refused too (the message then says so)."""
        self.candidates.append(candidate)
        self.args = (self._message(),)

    def _fmt(self, v: Decimal | int) -> str:
        return format_quantity(self.quantity, v)

    def reason(self) -> str:
        """This refusal alone, without the other candidates'."""
        window = "lifetime" if self.window == "lifetime" else f"per-{self.window}"
        cap = self.limit.value(self.quantity)
        resets = f", resets {self.resets_at:%Y-%m-%d %H:%M} UTC" if self.resets_at else ""
        who = f"{self.model} call" if self.model else "call"
        note = f" ({self.note})" if self.note else ""
        never = " It can never fit this limit." if self.never_fits else ""
        fix = f" {self.fix}" if self.fix else ""
        return (
            f"Budget exceeded for {self.scope}: {window} limit {self._fmt(cap)}, "
            f"spent {self._fmt(self.spent)}, reserved {self._fmt(self.reserved)}, "
            f"this {who} needs up to {self._fmt(self.requested)}; "
            f"{self._fmt(self.remaining)} left{resets}{note}.{never}{fix}"
        )

    def _message(self) -> str:
        text = self.reason()
        for c in self.candidates:
            text += f"\nAlso refused, {c.model or 'a model'} ({c.role}): {c.reason}"
        return text


class DegradeRequired(BudgetExceeded):
    """The primary model would pass ``degrade_at``: a fallback should serve."""


def _rebuild(cls: type[BudgetError], state: dict[str, object], args: tuple[object, ...]) -> BudgetError:
    exc = cls.__new__(cls)
    exc.__dict__.update(state)
    exc.args = args
    return exc
