"""The guard's engine: limits, store and prices behind one small façade.

Layers, each in its own module: ``plans`` (which counters a call must fit),
``flows`` (what a call does, as generators of store operations, no I/O),
``ops`` (those operations as typed values), ``drivers`` (the sync and async
code that carries them out, with the fail-fast breaker and the spool
replay), ``pending`` (calls in flight) and ``refusals`` (the errors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from ..errors import BudgetExceeded
from ..limits import Limit
from ..records import CallRecord
from ..reservation import Amount
from ..spool import Spool
from ..status import BudgetStatus
from ..stores.base import Store
from .config import EngineConfig
from .drivers import AsyncDriver, DriverState, SyncDriver
from .flows import Flows
from .pending import PendingRuns
from .plans import CallStart, ModelHint, Plan, Planner

__all__ = ["CallStart", "Engine", "EngineConfig", "ModelHint", "Plan"]


class Engine:
    """Every check and settle a guard makes, each in a sync and an async form."""

    def __init__(
        self,
        limits: Sequence[Limit],
        store: Store,
        config: EngineConfig | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.limits = tuple(limits)
        self.store = store
        self.spool = spool
        self.pending = PendingRuns()
        self.flows = Flows(
            Planner(self.limits),
            self.pending,
            config or EngineConfig(),
            None if spool is None else spool.dir,
        )
        state = DriverState(store, spool)
        self._sync = SyncDriver(state)
        self._async = AsyncDriver(state)

    def plan(self, metadata: Mapping[str, Any], soft_ppm: int | None = None) -> Plan:
        return self.flows.planner.plan(metadata, soft_ppm)

    # ------------------------------------------------------------ a model call

    def begin(self, call: CallStart) -> None:
        self._sync.run(self.flows.begin(call))

    async def abegin(self, call: CallStart) -> None:
        await self._async.run(self.flows.begin(call))

    def observe(self, run_id: UUID, chunk_message: BaseMessage | None, text: str) -> None:
        self.flows.observe(run_id, chunk_message, text)

    def end(self, run_id: UUID, response: LLMResult) -> CallRecord | None:
        return self._sync.run(self.flows.end(run_id, response))

    async def aend(self, run_id: UUID, response: LLMResult) -> CallRecord | None:
        return await self._async.run(self.flows.end(run_id, response))

    def fail(self, run_id: UUID, error: BaseException) -> CallRecord | None:
        return self._sync.run(self.flows.fail(run_id, error))

    async def afail(self, run_id: UUID, error: BaseException) -> CallRecord | None:
        return await self._async.run(self.flows.fail(run_id, error))

    # ------------------------------------------------------------ pipe form

    def record(
        self, message: BaseMessage, metadata: Mapping[str, Any], model_hint: str | None
    ) -> BudgetExceeded | None:
        return self._sync.run(self.flows.record(message, metadata, model_hint))

    async def arecord(
        self, message: BaseMessage, metadata: Mapping[str, Any], model_hint: str | None
    ) -> BudgetExceeded | None:
        return await self._async.run(self.flows.record(message, metadata, model_hint))

    def pipe_amount(self, message: BaseMessage | None, model_hint: str | None) -> Amount:
        return self.flows.pipe_amount(message, model_hint)

    def probe(self, metadata: Mapping[str, Any], amount: Amount, model: str | None) -> tuple[str, Plan]:
        return self._sync.run(self.flows.probe(metadata, amount, model))

    async def aprobe(
        self, metadata: Mapping[str, Any], amount: Amount, model: str | None
    ) -> tuple[str, Plan]:
        return await self._async.run(self.flows.probe(metadata, amount, model))

    def settle_stream(
        self, lease_id: str, plan: Plan, message: BaseMessage | None, model_hint: str | None, amount: Amount
    ) -> CallRecord | None:
        return self._sync.run(self.flows.settle_stream(lease_id, plan, message, model_hint, amount))

    async def asettle_stream(
        self, lease_id: str, plan: Plan, message: BaseMessage | None, model_hint: str | None, amount: Amount
    ) -> CallRecord | None:
        return await self._async.run(self.flows.settle_stream(lease_id, plan, message, model_hint, amount))

    # ------------------------------------------------------------ operators

    def reset(self, scope: str) -> int:
        return self._sync.run(self.flows.reset(scope))

    async def areset(self, scope: str) -> int:
        return await self._async.run(self.flows.reset(scope))

    def replay_spool(self) -> int:
        """Replay spooled store writes now; how many were applied."""
        return self._sync.state.replay_all()

    def status(self, metadata: Mapping[str, Any]) -> BudgetStatus:
        return self._sync.run(self.flows.status(metadata))

    async def astatus(self, metadata: Mapping[str, Any]) -> BudgetStatus:
        return await self._async.run(self.flows.status(metadata))
