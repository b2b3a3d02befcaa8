"""budgetguard: hard token and USD budgets for LangChain chat models."""

from __future__ import annotations

from ._engine import CallRecord, DegradeRequired
from .errors import BudgetError, BudgetExceeded, ConfigError, MissingScope, UnknownModelPrice
from .guard import BudgetGuard
from .limits import Limit
from .pricing import Price, cost
from .status import BudgetStatus, LimitStatus
from .stores import MemoryStore, Store, store_from_url
from .tracking import UsageTracker, track_usage
from .usage import TokenUsage

__version__ = "0.1.0"

__all__ = [
    "BudgetError",
    "BudgetExceeded",
    "BudgetGuard",
    "BudgetStatus",
    "CallRecord",
    "ConfigError",
    "DegradeRequired",
    "Limit",
    "LimitStatus",
    "MemoryStore",
    "MissingScope",
    "Price",
    "Store",
    "TokenUsage",
    "UnknownModelPrice",
    "UsageTracker",
    "cost",
    "store_from_url",
    "track_usage",
    "__version__",
]
