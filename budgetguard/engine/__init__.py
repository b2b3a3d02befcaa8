"""The guard's engine: limits, store and prices behind one small façade.

Layers, each in its own module: ``plans`` (which counters a call must fit),
``flows`` (what a call does, as generators of store operations, no I/O),
``ops`` (those operations as typed values), ``drivers`` (the sync and async
code that carries them out, with the fail-fast breaker and the spool
replay), ``pending`` (calls in flight) and ``refusals`` (the errors).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from ..errors import BudgetExceeded
from ..limits import Limit
from ..records import CallRecord
from ..reservation import Amount
from ..spool import Spool
from ..status import MINIMAL_CALL_TOKENS, BudgetStatus
from ..stores.base import Store
from .config import EngineConfig
from .drivers import AsyncDriver, DriverState, SyncDriver
from .flows import Begun
from .ops import Flow
from .pending import Pending, PendingRuns, current_task
from .pipe import PipeFlows
from .plans import CallStart, ModelHint, Plan, Planner
from .settler import Settler

__all__ = ["CallStart", "Engine", "EngineConfig", "ModelHint", "Plan"]

logger = logging.getLogger("budgetguard")

T = TypeVar("T")


def _cancels(task: asyncio.Task[Any] | None) -> int:
    """The cancellations requested of ``task`` and not withdrawn (0 where Python cannot tell)."""
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return int(cancelling()) if cancelling is not None else 0


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
        config = config or EngineConfig()
        self.flows = PipeFlows(
            Planner(self.limits),
            self.pending,
            config,
            None if spool is None else spool.dir,
        )
        state = DriverState(store, spool)
        self._sync = SyncDriver(state)
        self._async = AsyncDriver(state)
        #: settles off the caller's path: a network store with a spool (a fault there is never lost)
        self.settler: Settler | None = None
        if config.settle == "background" and store.blocking and store.supports_sync and spool is not None:
            self.settler = Settler(self._sync)
        self._tasks: set[asyncio.Task[None]] = set()  # closing cancelled calls, in the background
        self.pending.on_abandoned = self._abandoned
        self._priced = False  # a model was noted: minimal_nanos is its price, not the 1-nano default

    def note_model(self, model: str | None, provider: str | None) -> None:
        """A model this guard serves: the status's minimal call is priced at the cheapest one's rates."""
        if not model:
            return
        try:
            rates = self.flows._rates(model, provider)
        except LookupError:
            return
        nanos = max(rates.worst_nanos(MINIMAL_CALL_TOKENS - 1, 1), 1)
        known = self.flows.minimal_nanos if self._priced else None
        self.flows.minimal_nanos = nanos if known is None else min(known, nanos)
        self._priced = True

    def plan(self, metadata: Mapping[str, Any], soft_ppm: int | None = None) -> Plan:
        return self.flows.planner.plan(metadata, soft_ppm)

    # ------------------------------------------------------------ a model call

    @property
    def tag(self) -> str:
        return self.flows.tag

    def begin(self, call: CallStart) -> None:
        if asyncio._get_running_loop() is not None:  # (no event loop: no task, none stale)
            for stale in self._stale(call):
                self._sync.run(self.flows.abandon(stale))
        begun = self.flows.start(call)
        if begun is None:
            return
        if call.deferred:
            self.flows.defer(begun)
        else:
            self._sync.run(self.flows.reserve(begun))

    async def abegin(self, call: CallStart) -> None:
        for stale in self._stale(call):
            self._background(self.flows.abandon(stale))
        begun = self.flows.start(call)
        if begun is None:
            return
        if call.deferred:
            self.flows.defer(begun)
        else:
            await self._areserve(begun)

    async def _areserve(self, begun: Begun) -> None:
        """Reserve in the caller's task. Cancelled meanwhile, the model is never called: the
        reserve may have landed, so it is released without holding up the cancellation.

        A cancellation a layer below swallowed counts too: on Python 3.11, ``asyncio.wait_for``
        (redis-py's asyncio client sends and connects through it) returns its inner result when
        that finished just as the cancel came, so the call would otherwise run to its end.
        """
        await self._withdrawable(self.flows.reserve(begun), lambda: self.flows.withdraw(begun))

    async def _withdrawable(self, reserve: Flow[T], withdraw: Callable[[], Flow[None]]) -> T:
        """Run a reserving flow in the caller's task; cancelled meanwhile (or a cancel swallowed
        below), ``withdraw``'s flow releases what may have landed, in the background."""
        task = asyncio.current_task()
        asked = _cancels(task)
        try:
            out = await self._async.run(reserve)
        except asyncio.CancelledError:
            self._background(withdraw())
            raise
        if _cancels(task) > asked:
            self._background(withdraw())
            raise asyncio.CancelledError
        return out

    def reserve_deferred(self, run_id: UUID | None, owner: object) -> None:
        """Reserve a call left to LangChain's cache, now that its model is called after all."""
        begun = self.flows.undefer(run_id, owner)
        if begun is not None:
            self._sync.run(self.flows.reserve(begun))

    async def areserve_deferred(self, run_id: UUID | None, owner: object) -> None:
        begun = self.flows.undefer(run_id, owner)
        if begun is not None:
            await self._areserve(begun)

    def fitted_cap(self, run_id: UUID | None, owner: object) -> int | None:
        """The output cap this owner's call was fitted to, if it was (``PendingRuns.fitted``)."""
        return self.pending.fitted(run_id, owner)

    def observe(
        self, run_id: UUID, chunk_message: BaseMessage | None, text: str, owner: object = None
    ) -> None:
        self.flows.observe(run_id, chunk_message, text, owner)

    def end(self, run_id: UUID, response: LLMResult, owner: object = None) -> CallRecord | None:
        """Settle a call; ``None`` when its settle went to the background (``engine/settler.py``)."""
        flow = self.flows.end(run_id, response, owner)
        settler = self.settler
        if settler is None or self._watched():
            return self._sync.run(flow)
        return settler.hand_over(flow)  # type: ignore[no-any-return]

    async def aend(self, run_id: UUID, response: LLMResult, owner: object = None) -> CallRecord | None:
        flow = self.flows.end(run_id, response, owner)
        settler = self.settler
        if settler is None or self._watched():
            return await self._async.run(flow)
        try:  # up to the settle here (pricing, no I/O); the settle itself in the settler's thread
            op = flow.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if settler.take(flow, op):
            return None
        return await self._async.resume(flow, op)  # the queue is full: settled here (backpressure)

    def _watched(self) -> bool:
        """Telemetry or alerts follow the settle: kept in the caller (its context, its event loop)."""
        watch = self.flows.watch
        return watch is not None and watch.active()

    def settled(self, timeout: float | None = None) -> bool:
        """Wait for the settles handed to the background before now; False if ``timeout`` ran out."""
        settler = self.settler
        return settler is None or settler.idle or settler.drain(timeout)

    async def asettled(self, timeout: float | None = None) -> bool:
        """``settled``, after the closes of this loop's cancelled calls (so their records are out)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while mine := [t for t in self._tasks if t.get_loop() is loop and not t.done()]:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            await asyncio.wait(mine, timeout=left)
        settler = self.settler
        if settler is None or settler.idle:
            return True
        left = None if deadline is None else max(0.0, deadline - loop.time())
        return await asyncio.to_thread(settler.drain, left)

    def fail(self, run_id: UUID, error: BaseException, owner: object = None) -> CallRecord | None:
        return self._sync.run(self.flows.fail(run_id, error, owner))

    async def afail(self, run_id: UUID, error: BaseException, owner: object = None) -> CallRecord | None:
        return await self._async.run(self.flows.fail(run_id, error, owner))

    # ------------------------------------------------------------ cancelled calls

    def _stale(self, call: CallStart) -> list[Pending]:
        """Calls this task began and left without an event (it moved on after a timeout)."""
        task = current_task()
        if task is None:
            return []
        return [p for run_id, p in self.pending.stale(task, call.event) if self.pending.discard(run_id, p)]

    def _abandoned(self, run_id: UUID, p: Pending) -> None:
        """A task ended with this call in flight (cancelled): settle it now, by the conservative rule."""
        if self.store.blocking:
            self._background(self.flows.abandon(p))
        else:  # answers at once: settle inline, in the task's done callback
            self._sync.run(self.flows.abandon(p))

    def _background(self, flow: Flow[object]) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(flow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, flow: Flow[object]) -> None:
        try:
            await self._async.run(flow)
        except Exception:  # no caller is left to hear it; a lease that stays open expires
            logger.warning("budgetguard: could not close a cancelled call's reservation", exc_info=True)

    async def drain(self) -> None:
        """Wait for the releases and settles of cancelled calls, and the background settles, under way."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.asettled()

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
        req, plan = self.flows.probe_request(metadata, amount)
        return self._sync.run(self.flows.probe(req, plan, metadata, model))

    async def aprobe(
        self, metadata: Mapping[str, Any], amount: Amount, model: str | None
    ) -> tuple[str, Plan]:
        """``probe``; a probe cancelled while it reserves is released (its caller never sees its lease)."""
        req, plan = self.flows.probe_request(metadata, amount)
        flows = self.flows
        probe = flows.probe(req, plan, metadata, model)
        return await self._withdrawable(probe, lambda: flows.release_probe(req.lease_id, plan, req.amount))

    def settle_stream(
        self, lease_id: str, plan: Plan, message: BaseMessage | None, model_hint: str | None, amount: Amount
    ) -> CallRecord | None:
        return self._sync.run(self.flows.settle_stream(lease_id, plan, message, model_hint, amount))

    async def asettle_stream(
        self, lease_id: str, plan: Plan, message: BaseMessage | None, model_hint: str | None, amount: Amount
    ) -> CallRecord | None:
        return await self._async.run(self.flows.settle_stream(lease_id, plan, message, model_hint, amount))

    # ------------------------------------------------------------ operators

    # Each first waits for the settles handed to the background: what it reads or zeroes includes them.

    def reset(self, scope: str) -> int:
        self.settled()
        return self._sync.run(self.flows.reset(scope))

    async def areset(self, scope: str) -> int:
        await self.asettled()
        return await self._async.run(self.flows.reset(scope))

    def replay_spool(self) -> int:
        """Replay spooled store writes now; how many were applied."""
        self.settled()
        return self._sync.state.replay_all()

    def status(self, metadata: Mapping[str, Any]) -> BudgetStatus:
        self.settled()
        return self._sync.run(self.flows.status(metadata))

    async def astatus(self, metadata: Mapping[str, Any]) -> BudgetStatus:
        await self.asettled()
        return await self._async.run(self.flows.status(metadata))
