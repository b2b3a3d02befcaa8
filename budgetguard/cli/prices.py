"""``prices MODEL``: the rates a guard would charge for a model, and where they come from."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from decimal import Decimal
from typing import Any

from ..errors import UnknownModelPrice
from ..model_names import bare_model_name
from ..pricing import Rates, resolve_rates
from ..units import format_usd
from .common import EXIT_OK, EXIT_PROBLEM, money, table

__all__ = ["add_commands", "describe"]


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "prices",
        help="the resolved rates of a model and their source",
        description="The rates budgetguard resolves for MODEL from genai-prices' bundled data "
        "(USD per million tokens, per token class), as a guard without prices= would charge them.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument(
        "--provider", metavar="NAME", help="LangChain's ls_provider, e.g. openai, anthropic, bedrock"
    )
    p.add_argument("--json", action="store_true", help="machine-readable, rates as strings")
    p.set_defaults(run=prices)


def describe(rates: Rates) -> list[tuple[str, Decimal, tuple[tuple[int, Decimal], ...]]]:
    """Each priced token class: (class, USD per million tokens, tiers as (above input tokens, rate))."""
    scale = Decimal(10) ** rates.scale
    return [
        (u.key, Decimal(u.base) / scale, tuple((start, Decimal(r) / scale) for start, r in u.tiers))
        for u in rates.units
    ]


def _version() -> str:
    try:
        return importlib.metadata.version("genai-prices")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "?"


def prices(args: argparse.Namespace) -> int:
    try:
        rates = resolve_rates(args.model, args.provider)
    except UnknownModelPrice as e:
        sys.stdout.write(f"{e}\n")
        return EXIT_PROBLEM
    source = f"genai-prices {_version()} bundled data, provider {rates.provider or '?'}"
    per_request = Decimal(rates.per_request) / Decimal(10) ** rates.scale
    units = describe(rates)
    if args.json:
        json.dump(
            {
                "model": bare_model_name(args.model),
                "resolved": rates.model,
                "provider": rates.provider,
                "source": source,
                "per_request_usd": money(per_request),
                "per_mtok_usd": {k: money(v) for k, v, _ in units},
                "tiers": {k: [[s, money(r)] for s, r in t] for k, _, t in units if t},
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
        return EXIT_OK
    sys.stdout.write(f"{rates.model}  (source: {source})\n")
    rows = [
        [k, format_usd(v), "; ".join(f"{format_usd(r)} above {s:,} input tokens" for s, r in t)]
        for k, v, t in units
    ]
    if per_request:
        rows.append(["per request", format_usd(per_request), ""])
    table(sys.stdout, ["token class", "USD per 1M tokens", "tiers"], rows, right=["USD per 1M tokens"])
    sys.stdout.write(
        "A guard's prices= table overrides these; classes without a rate of their own bill at their "
        "parent's (cache reads at input).\n"
    )
    return EXIT_OK
