"""What a call's start event says of its model, found once per distinct parameters.

Most calls of an app repeat the same invocation parameters (model, output
cap, temperature...) and the same run metadata names: the requested model,
its provider, the output cap, the prompt fingerprint's root and (for a price
that does not change by date) the rates follow from them alone. They are
kept here, keyed by the parameters as given (order, values and the type of
each value, so ``1`` and ``True`` stay apart), the metadata's two model
keys and the handler's hint, so a start event finds them in one look-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ..estimate import max_output_tokens
from ..model_names import call_model_name, first_name
from ..pricing import Rates, fixed_price
from .plans import ModelHint, Plan
from .prefixes import _root

__all__ = ["StartShape", "StartShapes"]

_MAX = 512  # distinct shapes kept (cleared when full: a hit costs one look-up, a miss a few calls)


class StartShape(NamedTuple):
    """What follows from a call's parameters, metadata model names and hint alone."""

    hint: ModelHint  # (held: its id is in the key, so it stays this hint's while kept)
    model: str | None
    provider: str | None
    output_cap: int
    root: bytes  # the prompt fingerprint's root (``prefixes._root``)
    rates: Rates | None  # None: resolved at each call (priced by date, or no price and a plan to ask)


class StartShapes:
    """A guard's call shapes, by parameters (thread-safe: a dict read, a whole entry written)."""

    __slots__ = ("_known", "default_max_output_tokens", "prices", "rates")

    def __init__(
        self,
        rates: Callable[[str, str | None, Plan], Rates],
        prices: Mapping[str, Any],
        default_max_output_tokens: int,
    ) -> None:
        self.rates = rates  # the guard's rate resolution for a call (``Flows._call_rates``)
        self.prices = prices
        self.default_max_output_tokens = default_max_output_tokens
        self._known: dict[tuple[object, ...], StartShape] = {}

    def of(
        self, params: Mapping[str, Any], metadata: Mapping[str, Any], hint: ModelHint, plan: Plan
    ) -> tuple[StartShape, Rates]:
        """The call's shape, and its rates (the shape's, or resolved now)."""
        try:  # (an unhashable value, a list of tools...: no key, worked out each time)
            key: tuple[object, ...] | None = (
                id(hint),
                metadata.get("ls_model_name"),
                metadata.get("ls_provider"),
                tuple(params.items()),
                tuple(map(type, params.values())),
            )
            shape = self._known.get(key)  # type: ignore[arg-type]
        except TypeError:
            key = shape = None
        if shape is None or shape.hint is not hint:
            shape = self._find(params, metadata, hint, plan, key)
        rates = shape.rates
        return shape, self.rates(shape.model or "", shape.provider, plan) if rates is None else rates

    def _find(
        self,
        params: Mapping[str, Any],
        metadata: Mapping[str, Any],
        hint: ModelHint,
        plan: Plan,
        key: tuple[object, ...] | None,
    ) -> StartShape:
        model = call_model_name(params, metadata, hint.model)
        provider = first_name((metadata.get("ls_provider"), hint.provider))
        found = self.rates(model or "", provider, plan)  # (raises for no price: nothing kept)
        rates = found if found.priced and fixed_price(model or "", provider, self.prices) else None
        out = max_output_tokens(params, hint.profile_max, self.default_max_output_tokens)
        shape = StartShape(hint, model, provider, out, _root(params, model), rates)
        if key is not None:
            if len(self._known) >= _MAX:
                self._known.clear()
            self._known[key] = shape
        return shape
