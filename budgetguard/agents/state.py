"""The ``budget`` entry the middleware adds to an agent's state: the run's bill, as it stands."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from langchain.agents.middleware import AgentState
from typing_extensions import NotRequired, TypedDict

__all__ = ["BudgetState", "RunBudget"]


class RunBudget(TypedDict):
    """One agent run's spend: written after every model call and when the run ends.

    ``run_id`` is the value the middleware fills into ``{run_id}`` scopes and
    into every ``CallRecord.metadata["run_id"]`` of the run (a nested agent's
    entry is its parent run's). ``spent_usd`` sums the run's records (model
    calls and charged tools); ``calls`` counts model calls that reached the
    provider, ``tool_calls`` the charged tool calls. ``ended_by_budget`` is
    True when a refusal ended the run (``exit_behavior="end"``) and ``reason``
    then says why; ``wrapped_up`` is True once the run crossed ``wrap_up_at``.
    """

    run_id: str
    spent_usd: Decimal
    calls: int
    tool_calls: int
    ended_by_budget: bool
    wrapped_up: bool
    reason: str | None


class BudgetState(AgentState[Any]):
    """``AgentState`` plus the run's ``budget`` (returned with the messages)."""

    budget: NotRequired[RunBudget]
