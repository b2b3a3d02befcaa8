"""Exact USD prices for one call.

Rates come from genai-prices' bundled data (never its updater) or from the
user's ``Price`` table. A model's rates are looked up once, compiled into
integers and cached, so a warm ``cost()`` is integer arithmetic plus one
``Decimal`` at the end. Billing follows genai-prices exactly: every priced
token class is charged at its own rate, and a class without a rate of its own
(say cache reads on a model with no cache price) is billed at its parent's.

An API-path prefix (``models/gemini-2.5-flash``) is stripped first, as
LangChain does. Resolution order, first hit wins:

1. ``prices`` given by the caller: the exact model name, then its lower case.
2. Bundled data, with the provider (LangChain's ``ls_provider`` mapped to a
   genai-prices id, e.g. ``amazon_bedrock`` -> ``aws``, by the table in
   ``data/providers.json``).
3. Bundled data, provider guessed from the model name; never for a local
   provider (``ls_provider`` ``ollama``), whose models are not the hosted
   API's that share their names.
4. Bedrock ids: without a region prefix (``us.``, ``eu.`` ...) under ``aws``,
   then the vendor's own name (``anthropic.claude-v2`` -> ``claude-v2``)
   under the vendor.
5. ``default_price``, only if the caller opted in.
6. Otherwise ``UnknownModelPrice``: never a silent $0.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from genai_prices.data_snapshot import DataSnapshot
from genai_prices.types import ModelInfo, ModelPrice, TieredPrices
from genai_prices.units import UnitRegistry

from .errors import ConfigError, UnknownModelPrice
from .model_names import bare_model_name
from .price import Price
from .providers import (
    BEDROCK_REGION_PREFIXES,
    LOCAL_PROVIDERS,
    PROVIDER_ALIASES,
    UNKNOWN_PRICE_HINTS,
)
from .rates import _COUNT_AT, _MTOK, NANOS_PER_USD, Rates, _Unit
from .usage import TokenUsage

__all__ = [
    "NANOS_PER_USD",
    "Price",
    "Rates",
    "context_window",
    "cost",
    "cost_nanos",
    "fixed_price",
    "resolve_rates",
    "unpriced_rates",
]

# --------------------------------------------------------------------------- data

_snapshot_lock = threading.Lock()
_snapshot: DataSnapshot | None = None
_registry: UnitRegistry | None = None


def _data() -> tuple[DataSnapshot, UnitRegistry]:
    """Our own reference to the bundled data, immune to genai-prices' updater."""
    global _snapshot, _registry
    if _snapshot is None or _registry is None:
        with _snapshot_lock:
            if _snapshot is None or _registry is None:
                from genai_prices.data import providers
                from genai_prices.data_units import unit_data

                _registry = UnitRegistry(unit_data)
                _snapshot = DataSnapshot(providers=providers, from_auto_update=False)
    return _snapshot, _registry


def _scaled(value: Decimal, scale: int) -> int:
    return int(value.scaleb(scale))  # exact: scale covers every exponent


def _scale_for(values: list[Decimal]) -> int:
    exps = [-int(v.as_tuple().exponent) for v in values if v.is_finite()]
    return max([0, *exps])


def _compile(model: str, provider: str | None, prices: Mapping[str, Decimal | TieredPrices]) -> Rates:
    """Turn genai-prices price keys into integer rates over the units we report."""
    _, registry = _data()
    priced: list[tuple[Any, Decimal | TieredPrices]] = []
    per_request_usd = Decimal(0)
    for price_key, price in prices.items():
        try:
            unit = registry.unit_for_price_key(price_key)
        except KeyError:
            continue
        if unit.usage_key == "requests":  # priced per `per` requests
            base = price.base if isinstance(price, TieredPrices) else price
            per_request_usd = base / unit.per
        elif unit.usage_key in _COUNT_AT and unit.per == _MTOK:
            priced.append((unit, price))
        # searches, pages, seconds...: LangChain never reports them
    decimals = [per_request_usd]
    for _, p in priced:
        if isinstance(p, TieredPrices):
            decimals.append(p.base)
            decimals.extend(t.price for t in p.tiers)
        else:
            decimals.append(p)
    scale = _scale_for(decimals)
    return _build(model, provider, priced, scale, _scaled(per_request_usd, scale))


def _build(model: str, provider: str | None, priced: list[Any], scale: int, per_request: int) -> Rates:
    # Most specific first, as genai-prices' leaf decomposition does.
    priced.sort(key=lambda up: (-len(up[0].dimensions), up[0].usage_key))
    units: list[_Unit] = []
    for i, (unit, price) in enumerate(priced):
        desc = tuple(
            j
            for j, (other, _) in enumerate(priced[:i])
            if other is not unit and unit.dimensions.items() <= other.dimensions.items()
        )
        if isinstance(price, TieredPrices):
            base = _scaled(price.base, scale)
            tiers = tuple((t.start, _scaled(t.price, scale)) for t in price.tiers)
        else:
            base, tiers = _scaled(price, scale), ()
        units.append(_Unit(unit.usage_key, unit.dimensions.get("direction"), base, tiers, desc))
    return Rates(model, provider, scale, tuple(units), per_request)


def _rates_from_price(model: str, price: Price) -> Rates:
    prices: dict[str, Decimal | TieredPrices] = {
        "input_mtok": price.input_per_mtok,
        "output_mtok": price.output_per_mtok,
    }
    if price.cache_read_per_mtok is not None:
        prices["cache_read_mtok"] = price.cache_read_per_mtok
    if price.cache_write_per_mtok is not None:
        prices["cache_write_mtok"] = price.cache_write_per_mtok
    return _compile(model, None, prices)


def _model_price_items(mp: ModelPrice) -> dict[str, Decimal | TieredPrices]:
    return {k: v for k, v in mp.__dict__.items() if not k.startswith("_") and v is not None}


@dataclass(slots=True)
class _Entry:
    """A resolved bundled model: static rates, or rates chosen by date."""

    model: str
    provider: str
    info: ModelInfo
    static: Rates | None
    by_price: dict[int, Rates]

    def rates(self) -> Rates:
        if self.static is not None:
            return self.static
        mp = self.info.get_prices(datetime.now(tz=timezone.utc))
        r = self.by_price.get(id(mp))
        if r is None:
            r = self.by_price[id(mp)] = _compile(self.model, self.provider, _model_price_items(mp))
        return r


_cache: dict[tuple[str, str | None], _Entry | None] = {}
_user_cache: dict[tuple[Price, str], Rates] = {}


def _find(model: str, provider: str | None) -> tuple[str, ModelInfo] | None:
    snap, _ = _data()
    candidates: list[tuple[str, str | None]] = []
    pid = PROVIDER_ALIASES.get(provider.lower(), provider.lower()) if provider else None
    if pid:
        candidates.append((model, pid))
    if provider and provider.lower() in LOCAL_PROVIDERS:
        candidates.clear()  # a local model: no hosted vendor's price, guessed or not
    else:
        candidates.append((model, None))
    low = model.lower()
    stripped = low
    for region in BEDROCK_REGION_PREFIXES:
        if low.startswith(region):
            stripped = low[len(region) :]
            break
    if stripped != low:
        candidates += [(low, "aws"), (stripped, "aws")]
    if "." in stripped:
        vendor, _, name = stripped.partition(".")
        if not name[:1].isdigit():
            candidates += [(stripped, "aws"), (stripped, vendor), (name, vendor)]
            if name.endswith(":0"):
                candidates.append((name.rsplit("-v", 1)[0], vendor))
    for ref, prov in candidates:
        try:
            p, info = snap.find_provider_model(ref, None, prov, None)
        except LookupError:
            continue
        return p.id, info
    return None


def _bundled(model: str, provider: str | None) -> _Entry | None:
    key = (model, provider)
    try:
        return _cache[key]
    except KeyError:
        pass
    found = _find(model, provider)
    entry: _Entry | None = None
    if found is not None:
        pid, info = found
        static = None
        if isinstance(info.prices, ModelPrice):
            static = _compile(model, pid, _model_price_items(info.prices))
        entry = _Entry(model, pid, info, static, {})
    _cache[key] = entry
    return entry


def resolve_rates(
    model: str,
    provider: str | None = None,
    prices: Mapping[str, Price] | None = None,
    default_price: Price | None = None,
) -> Rates:
    """The compiled rates for ``model``, by the documented resolution order."""
    if not isinstance(model, str) or not model:
        raise UnknownModelPrice(str(model), provider, reason="no model name was reported")
    model = bare_model_name(model)
    price = _user_price(prices, model)
    if price is not None:
        return _user_rates(model, price)
    entry = _bundled(model, provider)
    if entry is not None:
        return entry.rates()
    if default_price is not None:
        return _user_rates(model, default_price)
    hint = UNKNOWN_PRICE_HINTS.get((provider or "").lower())
    reason = (
        None if hint is None else f"it is not in the bundled genai-prices data; {hint.format(model=model)}"
    )
    raise UnknownModelPrice(model, provider, reason=reason)


def fixed_price(model: str, provider: str | None, prices: Mapping[str, Price] | None = None) -> bool:
    """Whether ``resolve_rates`` gives ``model`` the same rates at every date (a caller may keep them):
    a price of the user's, or bundled prices that do not change by date."""
    model = bare_model_name(model)
    if _user_price(prices, model) is not None:
        return True
    entry = _bundled(model, provider)
    return entry is None or entry.static is not None


def _user_price(prices: Mapping[str, Price] | None, model: str) -> Price | None:
    """The user's price for a bare model name, as written or in lower case."""
    return (prices.get(model) or prices.get(model.lower())) if prices else None


def unpriced_rates(model: str, provider: str | None) -> Rates:
    """Zero rates for a model with no price, for calls no USD limit applies to."""
    return Rates(bare_model_name(model), provider, 0, (), 0, priced=False)


def context_window(model: str, provider: str | None = None) -> int | None:
    """The model's context window in tokens, from the bundled data; ``None`` if unknown."""
    entry = _bundled(model, provider) if model else None
    window = entry.info.context_window if entry is not None else None
    return window if isinstance(window, int) and window > 0 else None


def _user_rates(model: str, price: Price) -> Rates:
    if not isinstance(price, Price):
        raise ConfigError(
            f"prices[{model!r}] is a {type(price).__name__}; "
            "use budgetguard.Price(input_per_mtok=..., output_per_mtok=...)"
        )
    key = (price, model)  # by value: equal prices share rates, and no id() is ever reused stale
    r = _user_cache.get(key)
    if r is None:
        r = _user_cache[key] = _rates_from_price(model, price)
    return r


def _as_usage(usage: TokenUsage | Mapping[str, Any]) -> TokenUsage:
    if isinstance(usage, TokenUsage):
        return usage
    parsed = TokenUsage.from_usage_metadata(usage)
    if parsed is None:
        raise ConfigError(
            "usage is not a valid LangChain UsageMetadata: it needs non-negative integer "
            f"input_tokens and output_tokens, got {dict(usage) if isinstance(usage, Mapping) else usage!r}"
        )
    return parsed


def cost(
    usage: TokenUsage | Mapping[str, Any],
    model: str,
    *,
    provider: str | None = None,
    prices: Mapping[str, Price] | None = None,
    default_price: Price | None = None,
) -> Decimal:
    """USD cost of one call, exactly, as a ``Decimal``.

    ``usage`` is a LangChain ``UsageMetadata`` dict (or a ``TokenUsage``).
    Raises ``UnknownModelPrice`` for a model with no price, unless
    ``default_price`` is given.
    """
    return resolve_rates(model, provider, prices, default_price).usd(_as_usage(usage))


def cost_nanos(
    usage: TokenUsage | Mapping[str, Any],
    model: str,
    *,
    provider: str | None = None,
    prices: Mapping[str, Price] | None = None,
    default_price: Price | None = None,
) -> int:
    """Like ``cost`` but in integer nano-dollars, rounded up."""
    return resolve_rates(model, provider, prices, default_price).nanos(_as_usage(usage))
