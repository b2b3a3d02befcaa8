"""The adjustments a usage shape may name in ``providers.json``, by name (``usage.RULES``).

Each takes the reading so far, every count read (scratch ones too) and the
shape's root, and returns the reading itself when it has nothing to change:
``_replace`` is the dearest step of a parse, and a parse runs on every settle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # usage.py imports this module: the type only, at run time duck-typed
    from .usage import TokenUsage

__all__ = ["RULES", "Rule"]


def _consistent(u: TokenUsage) -> TokenUsage:
    """Repair counts that contradict each other, upward, and flag the repair."""
    cached = u.cache_read + u.cache_write
    if cached + u.input_audio > u.input_tokens:
        # Some paths report input *excluding* cache; charge the larger reading.
        u = u._replace(input_tokens=u.input_tokens + cached + u.input_audio, estimated=True)
    if u.reasoning + u.output_audio > u.output_tokens:
        u = u._replace(output_tokens=u.output_tokens + u.reasoning + u.output_audio, estimated=True)
    return u


#: A shape rule: the reading so far, every count read (scratch ones too), the root.
Rule = Callable[["TokenUsage", Mapping[str, int], Mapping[str, Any]], "TokenUsage"]


def _input_excludes_cache(u: TokenUsage, c: Mapping[str, int], r: Mapping[str, Any]) -> TokenUsage:
    # Anthropic and Bedrock Converse count input without the cache.
    cached = u.cache_read + u.cache_write
    return u._replace(input_tokens=u.input_tokens + cached) if cached else u


def _cache_write_1h_within_cache_write(
    u: TokenUsage, c: Mapping[str, int], r: Mapping[str, Any]
) -> TokenUsage:
    return u._replace(cache_write_1h=u.cache_write) if u.cache_write_1h > u.cache_write else u


def _cache_write_covers_ttls(u: TokenUsage, c: Mapping[str, int], r: Mapping[str, Any]) -> TokenUsage:
    # LangChain may report the TTL split without (or above) the total.
    ttls = c.get("cache_write_5m", 0) + u.cache_write_1h
    return u._replace(cache_write=ttls) if ttls > u.cache_write else u


def _zero_total_cost_is_cache_hit(u: TokenUsage, c: Mapping[str, int], r: Mapping[str, Any]) -> TokenUsage:
    hit = r.get("total_cost") == 0
    return u._replace(cache_hit=hit) if hit != u.cache_hit else u


def _repair_contradictions(u: TokenUsage, c: Mapping[str, int], r: Mapping[str, Any]) -> TokenUsage:
    if (
        u.cache_read + u.cache_write + u.input_audio > u.input_tokens
        or u.reasoning + u.output_audio > u.output_tokens
    ):
        return _consistent(u)
    return u


#: The adjustments a shape may name in ``providers.json``, by name.
RULES: Mapping[str, Rule] = MappingProxyType(
    {
        "input_excludes_cache": _input_excludes_cache,
        "cache_write_1h_within_cache_write": _cache_write_1h_within_cache_write,
        "cache_write_covers_ttls": _cache_write_covers_ttls,
        "zero_total_cost_is_cache_hit": _zero_total_cost_is_cache_hit,
        "repair_contradictions": _repair_contradictions,
    }
)
