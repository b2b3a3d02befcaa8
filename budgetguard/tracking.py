"""``track_usage()``: tokens and exact cost of every chat-model call in a block.

Like ``get_openai_callback`` but for any provider, with cache and reasoning
lines and a per-model breakdown. Its ContextVar hook is registered once, at
import, not on every entry (LangChain's ``get_usage_metadata_callback`` leaks
one hook per entry). A call whose model has no price is listed as unpriced,
never counted as $0.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

from .adapter.composite import FanOut
from .model_names import call_model_name
from .pricing import Price, resolve_rates
from .units import format_usd
from .usage import TokenUsage, usage_from_result

__all__ = ["track_usage", "UsageTracker", "ModelUsage"]


@dataclass
class ModelUsage:
    """Totals for one model."""

    requests: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: Decimal = Decimal(0)
    unpriced_requests: int = 0
    estimated_requests: int = 0


class _Total:
    """A token total over every model, read from the summed ``TokenUsage``."""

    def __init__(self, field: str) -> None:
        self.field = field

    def __get__(self, tracker: UsageTracker, owner: type | None = None) -> int:
        return int(getattr(tracker._sum(), self.field))


class UsageTracker(BaseCallbackHandler):
    """Collects usage; read its attributes, ``by_model`` or ``str()``."""

    def __init__(self, prices: Mapping[str, Price] | None = None, default_price: Price | None = None) -> None:
        self.prices = dict(prices or {})
        self.default_price = default_price
        self.by_model: dict[str, ModelUsage] = {}
        self._runs: dict[UUID, tuple[str | None, str | None]] = {}
        self._lock = threading.Lock()
        self._token: Token[_Trackers | None] | None = None

    # ---------------------------------------------------------- totals

    def _sum(self) -> TokenUsage:
        total = TokenUsage()
        for m in self.by_model.values():
            total = total + m.usage
        return total

    prompt_tokens = _Total("input_tokens")
    completion_tokens = _Total("output_tokens")
    total_tokens = _Total("total_tokens")
    cached_tokens = _Total("cache_read")
    cache_write_tokens = _Total("cache_write")
    reasoning_tokens = _Total("reasoning")

    @property
    def successful_requests(self) -> int:
        return sum(m.requests for m in self.by_model.values())

    @property
    def total_cost(self) -> Decimal:
        return sum((m.cost_usd for m in self.by_model.values()), Decimal(0))

    @property
    def unpriced_models(self) -> list[str]:
        return [name for name, m in self.by_model.items() if m.unpriced_requests]

    def __str__(self) -> str:
        lines = [
            f"Tokens Used: {self.total_tokens}",
            f"\tPrompt Tokens: {self.prompt_tokens}",
            f"\t\tPrompt Tokens Cached: {self.cached_tokens}",
            f"\t\tPrompt Tokens Cache Write: {self.cache_write_tokens}",
            f"\tCompletion Tokens: {self.completion_tokens}",
            f"\t\tReasoning Tokens: {self.reasoning_tokens}",
            f"Successful Requests: {self.successful_requests}",
            f"Total Cost (USD): {format_usd(self.total_cost)}",
        ]
        if self.unpriced_models:
            lines.append(f"Unpriced models (cost not included): {', '.join(self.unpriced_models)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"UsageTracker(requests={self.successful_requests}, tokens={self.total_tokens}, "
            f"cost=${self.total_cost})"
        )

    # ---------------------------------------------------------- callbacks

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        params = invocation_params or {}
        meta = metadata or {}
        model = call_model_name(params, meta)
        self._runs[run_id] = (model, meta.get("ls_provider"))

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.on_chat_model_start(serialized, [], run_id=run_id, **kwargs)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._runs.pop(run_id, None)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        configured, provider = self._runs.pop(run_id, (None, None))
        usage, served = usage_from_result(response)
        model = served or configured or "unknown"
        estimated = usage is None
        if usage is None:
            usage = TokenUsage(estimated=True)
        cost: Decimal | None
        if usage.cache_hit:
            cost = Decimal(0)
        else:
            try:
                cost = resolve_rates(model, provider, self.prices, self.default_price).usd(usage)
            except LookupError:
                cost = None
        with self._lock:
            m = self.by_model.setdefault(model, ModelUsage())
            m.requests += 1
            m.usage = m.usage + usage
            m.estimated_requests += int(estimated or usage.estimated)
            if cost is None:
                m.unpriced_requests += 1
            else:
                m.cost_usd += cost

    # ---------------------------------------------------------- context manager

    def __enter__(self) -> UsageTracker:
        current = _tracker_var.get()
        members = (*(current.members if current else ()), self)
        self._token = _tracker_var.set(_Trackers(members))
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _tracker_var.reset(self._token)
            self._token = None

    async def __aenter__(self) -> UsageTracker:
        return self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, ev, tb)


class _Trackers(FanOut):
    """Every tracker open in this context (nested blocks all count)."""

    # Trackers count nothing per token: LangChain calls the no-op, as for any handler.
    on_llm_new_token = BaseCallbackHandler.on_llm_new_token


_tracker_var: ContextVar[_Trackers | None] = ContextVar("budgetguard_track_usage", default=None)
register_configure_hook(_tracker_var, True)  # once, at import


def track_usage(
    prices: Mapping[str, Price] | None = None, default_price: Price | None = None
) -> UsageTracker:
    """Track every chat-model call in a ``with`` or ``async with`` block."""
    return UsageTracker(prices, default_price)
