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

__all__ = ["DETAILED", "PLAIN", "detailed_counts", "plain_counts", "plain_totals"]

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

#: The detail rows and rules ``detailed_counts`` mirrors, in ``TokenUsage`` order (5m is scratch).
_INPUT_DETAILS = (
    ("cache_read", "cache_read"),
    ("cache_creation", "cache_write"),
    ("ephemeral_5m_input_tokens", "cache_write_5m"),
    ("ephemeral_1h_input_tokens", "cache_write_1h"),
    ("audio", "input_audio"),
)
_OUTPUT_DETAILS = (("reasoning", "reasoning"), ("audio", "output_audio"))
_DETAIL_TABLES = (("input_token_details", _INPUT_DETAILS), ("output_token_details", _OUTPUT_DETAILS))
_DETAILED_RULES = ("cache_write_covers_ttls", "zero_total_cost_is_cache_hit", "repair_contradictions")


def _mirrors(shape: Shape) -> bool:
    """Whether ``detailed_counts`` reads ``shape`` as the interpreter would: exactly these rows and rules."""
    rows = {(r.path, r.to, r.need) for r in shape.rows}
    details = {((parent, key), to, "checked") for parent, table in _DETAIL_TABLES for key, to in table}
    return len(rows) == len(shape.rows) and rows == _TOTALS | details and shape.rules == _DETAILED_RULES


DETAILED = _mirrors(USAGE_METADATA_SHAPE)


def _details(node: Any, keys: tuple[tuple[str, str], ...], max_tokens: int) -> list[int] | None:
    """The counts of one details dict, 0 where absent; ``None`` (interpret it) for anything odd."""
    if node is None:
        return [0] * len(keys)
    if type(node) is not dict:
        return None
    out = []
    get = node.get
    for key, _ in keys:
        v = get(key)
        if v is None:
            out.append(0)
        elif type(v) is int and 0 <= v <= max_tokens:
            out.append(v)
        else:
            return None
    return out


def detailed_counts(usage: Mapping[str, Any], max_tokens: int) -> tuple[int, ...] | None:
    """``TokenUsage``'s eight counts of a ``UsageMetadata`` dict with details, read directly.

    ``None`` (interpret it) for anything but valid counts in plain dicts, for a
    ``total_cost``, and for counts that contradict each other (the repair rule's case).
    """
    if type(usage) is not dict or not DETAILED:
        return None
    get = usage.get
    i, o = get("input_tokens"), get("output_tokens")
    if type(i) is not int or type(o) is not int or not (0 <= i <= max_tokens and 0 <= o <= max_tokens):
        return None
    ins = _details(get("input_token_details"), _INPUT_DETAILS, max_tokens)
    outs = _details(get("output_token_details"), _OUTPUT_DETAILS, max_tokens)
    if ins is None or outs is None or get("total_cost") is not None:
        return None
    cache_read, cache_write, cache_5m, cache_1h, audio_in = ins
    reasoning, audio_out = outs
    cache_write = max(cache_write, cache_5m + cache_1h)  # cache_write_covers_ttls
    if cache_read + cache_write + audio_in > i or reasoning + audio_out > o:
        return None  # repair_contradictions has work to do
    return i, o, cache_read, cache_write, cache_1h, audio_in, audio_out, reasoning


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


def plain_counts(usage: Mapping[str, Any], max_tokens: int) -> tuple[int, ...] | None:
    """``TokenUsage``'s eight counts, read directly (totals only, or with details); ``None``: interpret."""
    totals = plain_totals(usage, max_tokens)
    return detailed_counts(usage, max_tokens) if totals is None else (*totals, 0, 0, 0, 0, 0, 0)
