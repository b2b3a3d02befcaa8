"""budgetguard: hard token and USD budgets for LangChain chat models."""

from __future__ import annotations

from .alerts import Alert
from .definitions import LimitDef
from .errors import (
    BudgetError,
    BudgetExceeded,
    BudgetStoreUnavailable,
    ConfigError,
    DegradeRequired,
    MissingScope,
    UnknownModelPrice,
)
from .guard import BudgetGuard
from .health import Health
from .ledger import LedgerRecord
from .limits import Limit
from .pricing import Price, cost
from .records import CallRecord
from .status import BudgetStatus, LimitStatus
from .stores import MemoryStore, Store, store_from_url
from .tracking import UsageTracker, track_usage
from .usage import TokenUsage

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # RedisStore imports redis-py's asyncio and cluster modules: load them only when asked for.
    if name == "RedisStore":
        from .stores.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module 'budgetguard' has no attribute {name!r}")


__all__ = [
    "Alert",
    "BudgetError",
    "BudgetExceeded",
    "BudgetGuard",
    "BudgetStatus",
    "BudgetStoreUnavailable",
    "CallRecord",
    "ConfigError",
    "DegradeRequired",
    "Health",
    "LedgerRecord",
    "Limit",
    "LimitDef",
    "LimitStatus",
    "MemoryStore",
    "MissingScope",
    "RedisStore",
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
