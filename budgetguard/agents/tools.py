"""Charging a paid tool call: reserved before the tool runs, settled at its fixed price after.

A tool call costs what ``tool_costs`` says (no tokens, no model request). It
is reserved on every counter its run's scopes fill, through the engine's
pipe-form probe (refused when it does not fit; spooled when the store is
down and the guard fails open), then settled at that same price once the
tool has run, whatever its result: a tool that raised may have been billed
too. Both steps are I/O-free flows of engine operations (``engine/ops.py``)
run by the engine's own drivers. The settle's record names the tool
(``model="tool:<name>"``), so ``on_record`` and the run's bill see it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any, NamedTuple

from ..engine import Engine, Plan
from ..engine.flows import _NO_RATES
from ..engine.ops import Flow
from ..engine.pending import Pending
from ..engine.pipe import PipeFlows
from ..records import CallRecord
from ..reservation import Amount
from ..stores.base import SettleRequest
from ..usage import TokenUsage
from .runs import TOOL_PREFIX

__all__ = ["ToolLease", "parse_tool_costs", "reserve", "areserve", "settle", "asettle"]


class ToolLease(NamedTuple):
    name: str
    lease_id: str
    plan: Plan
    amount: Amount
    metadata: Mapping[str, Any]
    started: float


def parse_tool_costs(costs: Mapping[str, Any] | None) -> dict[str, int]:
    """``{"web_search": "0.01"}`` as nano-dollars per call (rounded up); a clear error for a bad entry."""
    from ..errors import ConfigError

    out: dict[str, int] = {}
    for name, usd in (costs or {}).items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"tool_costs keys are tool names, got {name!r}")
        if isinstance(usd, bool) or not isinstance(usd, (str, int, Decimal, float)):
            raise ConfigError(f"tool_costs[{name!r}] must be USD as a string or Decimal, got {usd!r}")
        try:
            value = Decimal(repr(usd)) if isinstance(usd, float) else Decimal(usd)
        except ArithmeticError:
            raise ConfigError(f"tool_costs[{name!r}] = {usd!r} is not a number of dollars") from None
        if not value.is_finite() or value < 0:
            raise ConfigError(f"tool_costs[{name!r}] must be a finite amount >= 0, got {usd!r}")
        out[name] = int((value * 1_000_000_000).to_integral_value(rounding=ROUND_CEILING))
    return out


def reserve(engine: Engine, name: str, nanos: int, metadata: Mapping[str, Any]) -> ToolLease:
    """Reserve one call of tool ``name`` (``BudgetExceeded`` when it does not fit)."""
    amount = Amount(nanos, 0, 0)
    lease_id, plan = engine.probe(metadata, amount, TOOL_PREFIX + name)
    return ToolLease(name, lease_id, plan, amount, metadata, time.time())


async def areserve(engine: Engine, name: str, nanos: int, metadata: Mapping[str, Any]) -> ToolLease:
    amount = Amount(nanos, 0, 0)
    lease_id, plan = await engine.aprobe(metadata, amount, TOOL_PREFIX + name)
    return ToolLease(name, lease_id, plan, amount, metadata, time.time())


def settle(engine: Engine, lease: ToolLease) -> CallRecord | None:
    return engine._sync.run(_settle(engine.flows, lease))


async def asettle(engine: Engine, lease: ToolLease) -> CallRecord | None:
    return await engine._async.run(_settle(engine.flows, lease))


def _settle(flows: PipeFlows, lease: ToolLease) -> Flow[CallRecord | None]:
    """Charge the reserved price exactly (in the spool, after its reserve, if that was spooled)."""
    spooled = flows.took_spooled(lease.lease_id)
    plan = lease.plan
    p = Pending(lease.lease_id, plan.refs, plan.labels, lease.amount, _NO_RATES, None, 0, 0, spooled=spooled)
    p.metadata, p.started = lease.metadata, lease.started
    req = SettleRequest(lease.lease_id, plan.refs, lease.amount, False)
    outcome = yield from flows._settle_or_spool(p, req)
    return flows._emit(p, TokenUsage(), lease.amount.nanos, outcome, TOOL_PREFIX + lease.name)
