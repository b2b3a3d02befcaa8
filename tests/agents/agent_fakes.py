"""Fakes for the agent tests: a tool-calling model that never stops, and the tools it calls."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.tools import tool
from pydantic import Field, PrivateAttr

from budgetguard import Price
from budgetguard.testing import FakeChatModel

MTOK = Decimal(1_000_000)
#: gpt-4o-mini's list price, written out by hand for the tests.
MINI = Price(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60"))
BIG = Price(input_per_mtok=Decimal("2.50"), output_per_mtok=Decimal("10"))
PRICES = {"gpt-4o-mini": MINI, "gpt-4o": BIG}


class Runaway(FakeChatModel):
    """Calls its first bound tool on every turn, forever; remembers the usage it reported."""

    reported: list[UsageMetadata] = Field(default_factory=list)
    seen_kwargs: list[dict[str, Any]] = Field(default_factory=list)
    seen_messages: list[list[BaseMessage]] = Field(default_factory=list)
    _ids: Any = PrivateAttr(default_factory=lambda: itertools.count(1))

    def _reply(self, messages: list[BaseMessage], **kwargs: Any) -> tuple[AIMessage, UsageMetadata]:
        msg, usage = super()._reply(messages, **kwargs)
        self.seen_kwargs.append(dict(kwargs))
        self.seen_messages.append(list(messages))
        tools = kwargs.get("tools")
        if tools:
            call = {
                "name": tools[0]["function"]["name"],
                "args": {"query": "more"},
                "id": f"call_{next(self._ids)}",
                "type": "tool_call",
            }
            msg = AIMessage(content="", tool_calls=[call], response_metadata=msg.response_metadata)
        self.reported.append(usage)
        return msg, usage


def reported_usd(model: Runaway, price: Price = MINI) -> Decimal:
    """What the fake's reported usage costs at ``price``, computed by hand."""
    return sum(
        (
            (
                Decimal(u["input_tokens"]) * price.input_per_mtok
                + Decimal(u["output_tokens"]) * price.output_per_mtok
            )
            / MTOK
            for u in model.reported
        ),
        Decimal(0),
    )


PAGE = "Search result: " + "lorem ipsum dolor sit amet " * 60


@tool
def web_search(query: str) -> str:
    """Search the web."""
    return PAGE


@tool
def calculator(expression: str) -> str:
    """Compute an arithmetic expression."""
    return "42"
