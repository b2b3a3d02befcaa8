"""``BudgetMiddleware``: a guard's budgets on a ``create_agent`` run, ending it with an answer.

Each model call of the agent goes to the request's model carrying the
guard's handler (``models.py``), so it is reserved before it is sent and
settled after, by the same engine as ``guard.wrap()``; a refused primary is
served by the guard's fallbacks through ``request.override(model=...)``. The
middleware fills the run's scope values (``run_id``, ``thread_id``, the
runtime context) into every call's metadata (``adapter.handler.context_scopes``),
so ``run:{run_id}`` and ``thread:{thread_id}`` limits work as written. When a
call cannot fit, ``exit_behavior="end"`` answers with a final ``AIMessage``
(no tool calls, so the agent stops and returns its state); ``"error"`` raises
the ``BudgetExceeded``. Paid tools are charged through ``wrap_tool_call``
(``tools.py``); a tool's own model calls, a nested agent's included, are
checked against the same run (``enforce()`` around the tool).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain.agents.middleware.types import ExtendedModelResponse
from langchain_core.messages import AIMessage, SystemMessage, ToolMessage
from langgraph.config import get_config
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command

from ..adapter.enforce import enforcing
from ..adapter.handler import context_scopes
from ..engine import Engine
from ..errors import BudgetExceeded, BudgetStoreUnavailable, ConfigError
from ..guard import BudgetGuard
from ..status import BudgetStatus
from ..units import format_quantity
from . import tools as tool_charges
from .models import Candidates
from .runs import Run, active_run, install_tap, runs, scope_values
from .state import BudgetState, RunBudget

__all__ = ["BudgetMiddleware"]

#: The final answer of a run the budget ended (``exit_behavior="end"``); the full reason is in the state.
END_TEXT = "I have to stop here: this run's budget is exhausted ({limit})."
#: Added to the system message of the calls after ``wrap_up_at`` (sent with no tools).
WRAP_UP_TEXT = (
    "Budget notice: this run has used {percent}% of its budget. Do not call tools. "
    "Conclude now: give your best final answer from what you already have."
)
#: The result of a paid tool call the budget refused.
TOOL_REFUSED_TEXT = (
    "The budget refused this {name} call, so it did not run: {reason} "
    "Do not call it again; answer from what you already have."
)
#: ``finish_reason`` of the final message of a run the budget ended.
BUDGET_EXHAUSTED = "budget_exhausted"

Response = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]


class BudgetMiddleware(AgentMiddleware[BudgetState, Any, Any]):
    """Hard budgets on an agent run: ``create_agent(..., middleware=[BudgetMiddleware(guard)])``.

    ``exit_behavior``: ``"end"`` (a final answer saying the budget is
    exhausted; the state is returned) or ``"error"`` (``BudgetExceeded``).
    ``wrap_up_at``: once the run has used this fraction of its tightest
    applicable limit, later calls are sent without tools and told to conclude.
    ``tool_costs``: USD per call of a tool, by name, charged before it runs.
    ``run_scope_ttl``: seconds a ``{run_id}`` limit without ``expire_after``
    keeps its counter after the run's last use (default: an hour, at least
    twice the guard's ``lease_ttl``).
    """

    state_schema = BudgetState

    def __init__(
        self,
        guard: BudgetGuard,
        *,
        exit_behavior: Literal["end", "error"] = "end",
        wrap_up_at: float | None = None,
        tool_costs: Mapping[str, Decimal | str | int] | None = None,
        run_scope_ttl: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(guard, BudgetGuard):
            raise ConfigError(f"BudgetMiddleware needs a BudgetGuard, got {type(guard).__name__}")
        if exit_behavior not in ("end", "error"):
            raise ConfigError(f"exit_behavior must be 'end' or 'error', got {exit_behavior!r}")
        if wrap_up_at is not None and (
            isinstance(wrap_up_at, bool) or not isinstance(wrap_up_at, (int, float)) or not 0 < wrap_up_at < 1
        ):
            raise ConfigError(f"wrap_up_at is a fraction of the budget between 0 and 1, got {wrap_up_at!r}")
        self.guard = guard
        self.engine: Engine = guard.engine
        self.exit_behavior = exit_behavior
        self.wrap_up_at = None if wrap_up_at is None else Decimal(repr(float(wrap_up_at)))
        self.tool_costs = tool_charges.parse_tool_costs(tool_costs)
        self.models = Candidates(self.engine, Candidates.check(guard.fallbacks), guard.degrade_at)
        lease_ttl = self.engine.flows.lease_ttl
        ttl = max(3600.0, 2 * lease_ttl) if run_scope_ttl is None else float(run_scope_ttl)
        if ttl <= lease_ttl:
            raise ConfigError(
                f"run_scope_ttl ({ttl} s) must be longer than the guard's lease_ttl ({lease_ttl} s), "
                "or a run's counter could go before its last reservation is settled"
            )
        _expire_run_scopes(self.engine, ttl)
        install_tap(self.engine)

    # ------------------------------------------------------------ the run

    def before_agent(self, state: BudgetState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return {"budget": self._open(runtime).snapshot()}

    async def abefore_agent(self, state: BudgetState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return self.before_agent(state, runtime)

    def after_agent(self, state: BudgetState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        budget = state.get("budget")
        run = runs.get(budget.get("run_id") if budget else None)
        if run is None:
            return None
        if active_run.get() is not run:  # a nested agent leaves its parent's run open
            runs.close(run.run_id)
        return {"budget": run.snapshot()}

    async def aafter_agent(self, state: BudgetState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return self.after_agent(state, runtime)

    def _open(self, runtime: object) -> Run:
        parent = active_run.get()
        if parent is not None and parent.engine is self.engine:
            return parent  # an agent inside a tool of a run: it spends that run's budget
        scopes = scope_values(getattr(runtime, "context", None), _config())
        scopes["run_id"] = str(uuid.uuid4())
        return runs.open(Run(scopes["run_id"], self.engine, scopes))

    def _run(self, state: Mapping[str, Any], runtime: object) -> Run:
        budget: RunBudget | None = state.get("budget")
        run = runs.get(budget.get("run_id") if budget else None)
        if run is not None:
            return run
        if budget is None:  # no before_agent ran (a graph built by hand): this call opens the run
            return self._open(runtime)
        # the run began elsewhere (a thread resumed in another process): carry its bill on
        scopes = scope_values(getattr(runtime, "context", None), _config())
        scopes["run_id"] = budget["run_id"]
        run = Run(budget["run_id"], self.engine, scopes, spent=Decimal(budget.get("spent_usd", 0)))
        run.calls, run.tool_calls = budget.get("calls", 0), budget.get("tool_calls", 0)
        run.wrapped_up = budget.get("wrapped_up", False)
        return runs.open(run)

    def _metadata(self, run: Run) -> dict[str, Any]:
        return {**(_config().get("metadata") or {}), **run.scopes}

    # ------------------------------------------------------------ model calls

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]
    ) -> Response:
        run = self._run(request.state, request.runtime)
        with _scoped(run):
            if self.wrap_up_at is not None and not run.wrapped_up:
                try:
                    self._check_wrap_up(run, self.guard.remaining(**self._metadata(run)))
                except BudgetStoreUnavailable:  # the call itself meets the guard's on_store_error
                    pass
            request = self._wrapped_up(request, run)
            first: BudgetExceeded | None = None
            for model in self.models.of(request.model):
                try:
                    return self._answer(run, handler(request.override(model=model)))
                except BudgetExceeded as exc:
                    first = first or exc
            assert first is not None
            return self._refused(run, first)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> Response:
        run = self._run(request.state, request.runtime)
        with _scoped(run):
            if self.wrap_up_at is not None and not run.wrapped_up:
                try:
                    self._check_wrap_up(run, await self.guard.aremaining(**self._metadata(run)))
                except BudgetStoreUnavailable:
                    pass
            request = self._wrapped_up(request, run)
            first: BudgetExceeded | None = None
            for model in self.models.of(request.model):
                try:
                    return self._answer(run, await handler(request.override(model=model)))
                except BudgetExceeded as exc:
                    first = first or exc
            assert first is not None
            return self._refused(run, first)

    def _check_wrap_up(self, run: Run, status: BudgetStatus) -> None:
        assert self.wrap_up_at is not None
        for row in status.rows:
            used = Decimal(row.spent) + Decimal(row.reserved)
            if used >= Decimal(row.cap) * self.wrap_up_at:
                run.wrapped_up = True
                return

    def _wrapped_up(self, request: ModelRequest[Any], run: Run) -> ModelRequest[Any]:
        if not run.wrapped_up:
            return request
        percent = round(float(self.wrap_up_at or 0) * 100)
        return request.override(
            tools=[],
            tool_choice=None,
            system_message=_with_note(request.system_message, WRAP_UP_TEXT.format(percent=percent)),
        )

    def _answer(self, run: Run, response: ModelResponse[Any] | AIMessage) -> Response:
        if isinstance(response, AIMessage):
            response = ModelResponse(result=[response])
        update: Command[Any] = Command(update={"budget": run.snapshot()})
        return ExtendedModelResponse(model_response=response, command=update)

    def _refused(self, run: Run, exc: BudgetExceeded) -> Response:
        if self.exit_behavior == "error":
            raise exc
        run.ended_by_budget, run.reason = True, exc.reason()
        final = AIMessage(
            content=END_TEXT.format(limit=_short(exc)),
            response_metadata={"finish_reason": BUDGET_EXHAUSTED},
        )
        return self._answer(run, ModelResponse(result=[final]))

    # ------------------------------------------------------------ tool calls

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]]
    ) -> ToolMessage | Command[Any]:
        run = self._run(request.state, request.runtime)
        name, nanos = request.tool_call["name"], self.tool_costs.get(request.tool_call["name"])
        lease = None
        if nanos is not None:
            try:
                lease = tool_charges.reserve(self.engine, name, nanos, self._metadata(run))
            except BudgetExceeded as exc:
                return _tool_refused(request, exc)
        try:
            with self._in_tool(run):
                return handler(request)
        finally:
            if lease is not None:
                tool_charges.settle(self.engine, lease)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        run = self._run(request.state, request.runtime)
        name, nanos = request.tool_call["name"], self.tool_costs.get(request.tool_call["name"])
        lease = None
        if nanos is not None:
            try:
                lease = await tool_charges.areserve(self.engine, name, nanos, self._metadata(run))
            except BudgetExceeded as exc:
                return _tool_refused(request, exc)
        try:
            with self._in_tool(run):
                return await handler(request)
        finally:
            if lease is not None:
                await tool_charges.asettle(self.engine, lease)

    @contextmanager
    def _in_tool(self, run: Run) -> Iterator[None]:
        """The tool's own model calls (a nested agent's too) are this run's, checked by this guard."""
        token = active_run.set(run)
        try:
            with _scoped(run), enforcing(self.engine, self.guard.model_hint, run.scopes):
                yield
        finally:
            active_run.reset(token)


@contextmanager
def _scoped(run: Run) -> Iterator[None]:
    token = context_scopes.set(run.scopes)
    try:
        yield
    finally:
        context_scopes.reset(token)


def _config() -> Mapping[str, Any]:
    try:
        return get_config()
    except RuntimeError:  # outside a graph run: no config, no thread
        return {}


def _with_note(system: SystemMessage | None, note: str) -> SystemMessage:
    if system is None:
        return SystemMessage(content=note)
    content = system.content
    if isinstance(content, str):
        return SystemMessage(content=f"{content}\n\n{note}" if content else note)
    return SystemMessage(content=[*content, {"type": "text", "text": note}])


def _short(exc: BudgetExceeded) -> str:
    """Which limit, and what is left of it: ``run:abc, $0.50 limit, $0.0012 left``."""
    q = exc.quantity
    cap, left = format_quantity(q, exc.limit.value(q)), format_quantity(q, exc.remaining)
    return f"{exc.scope}, {cap} limit, {left} left"


def _tool_refused(request: ToolCallRequest, exc: BudgetExceeded) -> ToolMessage:
    name = request.tool_call["name"]
    return ToolMessage(
        content=TOOL_REFUSED_TEXT.format(name=name, reason=exc.reason()),
        tool_call_id=request.tool_call["id"] or "",
        name=name,
        status="error",
    )


def _expire_run_scopes(engine: Engine, seconds: float) -> None:
    """Give the guard's ``{run_id}`` limits that have no ``expire_after`` one: runs do not pile up."""
    planner = engine.flows.planner
    changed = False
    templates = []
    for tpl, lim in planner.templates:
        if "run_id" in tpl.fields and lim.expire_after is None:
            lim = lim.model_copy(update={"expire_after": timedelta(seconds=seconds)})
            changed = True
        templates.append((tpl, lim))
    if changed:
        planner.templates = templates
        engine.limits = tuple(lim for _, lim in templates)
