"""The commonest usage reading, LangChain's ``UsageMetadata`` with totals only, without the interpreter.

``usage.py`` reads every shape with one table-driven interpreter; a settle
runs it on every call. A plain ``{"input_tokens", "output_tokens",
"total_tokens"}`` dict reads as just its two totals, so it is read directly,
but only while the bundled ``langchain`` shape is the one this mirrors
(``PLAIN``, checked at import): top-level rows, the two required totals;
every other row inside the two detail mappings, none required; rules that
change nothing without details (but a ``total_cost`` of 0, left to the
interpreter).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .providers import USAGE_METADATA_SHAPE, Shape

__all__ = ["PLAIN", "plain_totals"]

_DETAILS = ("input_token_details", "output_token_details")
_RULES = {"cache_write_covers_ttls", "zero_total_cost_is_cache_hit", "repair_contradictions"}
_TOTALS = {(("input_tokens",), "input_tokens", "required"), (("output_tokens",), "output_tokens", "required")}


def applies(shape: Shape) -> bool:
    """Whether ``plain_totals`` reads ``shape`` as the interpreter would."""
    top = {(r.path, r.to, r.need) for r in shape.rows if len(r.path) == 1}
    nested = [r for r in shape.rows if len(r.path) != 1]
    return (
        top == _TOTALS
        and all(r.path[0] in _DETAILS and r.need != "required" for r in nested)
        and set(shape.rules) <= _RULES
    )


PLAIN = applies(USAGE_METADATA_SHAPE)


def plain_totals(usage: Mapping[str, Any], max_tokens: int) -> tuple[int, int] | None:
    """(input, output) of a totals-only ``UsageMetadata`` dict; ``None``: not that case, interpret it."""
    if type(usage) is not dict or "input_token_details" in usage or not PLAIN:
        return None  # details: the interpreter reads them (bail out before any other look-up)
    get = usage.get
    i, o = get("input_tokens"), get("output_tokens")
    if (
        type(i) is int
        and type(o) is int
        and 0 <= i <= max_tokens
        and 0 <= o <= max_tokens
        and get("output_token_details") is None
        and get("total_cost") is None
    ):
        return i, o
    return None
