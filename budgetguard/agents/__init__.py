"""Budgets on LangChain agents (``create_agent``): ``BudgetMiddleware``.

Needs the ``langchain`` package (``pip install 'langchain-budgetguard[agents]'``);
``import budgetguard`` never loads it.
"""

from __future__ import annotations

try:
    import langchain.agents  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "budgetguard.agents needs the langchain package (create_agent and its middleware): "
        "pip install 'langchain-budgetguard[agents]'"
    ) from exc

from .middleware import BUDGET_EXHAUSTED, BudgetMiddleware
from .state import BudgetState, RunBudget

__all__ = ["BUDGET_EXHAUSTED", "BudgetMiddleware", "BudgetState", "RunBudget"]
