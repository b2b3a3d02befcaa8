"""Issue 10: the runaway loop with the real ``ChatOpenAI`` against a local chat-completions server.

The server (``tests/wire_server.py``) answers every request with the same
tool call and usage, as a JSON completion or as an SSE stream (tool-call
deltas, the finish chunk, then the usage chunk), so the agent never stops
on its own. Nothing leaves the machine.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from agent_fakes import MTOK, PRICES, calculator
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI
from wire_server import WireServer, sse, wire_server

from budgetguard import BudgetGuard, CallRecord, Limit
from budgetguard.agents import BudgetMiddleware

# A prompt no bigger than the agent's first one: the guard's estimate bounds every call from above.
PROMPT, COMPLETION = 60, 30
BUDGET = Decimal("0.001")
CALL_USD = (PROMPT * Decimal("0.15") + COMPLETION * Decimal("0.60")) / MTOK
USAGE = {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "total_tokens": PROMPT + COMPLETION}
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'},
}

_real_connect = socket.socket.connect


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(self: socket.socket, address: Any) -> Any:
        if not (isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1", "localhost")):
            raise AssertionError(f"test tried to open a real connection to {address!r}")
        return _real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[WireServer]:
    with wire_server() as s:
        yield s


def completion() -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE,
    }


def stream_events() -> list[dict[str, Any]]:
    base = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
    }
    call = {"index": 0, **TOOL_CALL}
    return [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [call]}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**base, "choices": [], "usage": USAGE},
    ]


def agent_on(server: WireServer) -> tuple[Any, BudgetGuard, list[CallRecord]]:
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limits=[Limit(usd=BUDGET, scope="run:{run_id}")],
        prices=PRICES,
        on_record=lambda r: records.append(r) if r.outcome != "refused" else None,
    )
    llm = ChatOpenAI(
        model="gpt-4o-mini", api_key="sk-test", base_url=server.url + "/v1", max_retries=0, max_tokens=100
    )
    return create_agent(llm, [calculator], middleware=[BudgetMiddleware(guard)]), guard, records


def check_bill(guard: BudgetGuard, records: list[CallRecord], server: WireServer, run_id: str) -> Decimal:
    (row,) = [r for r in guard.remaining(run_id=run_id).rows if r.quantity == "usd"]
    spent = Decimal(row.spent)
    print(
        f"ChatOpenAI runaway utilization: {spent}/{BUDGET} = {spent / BUDGET:.4f} over {len(records)} calls"
    )
    assert row.reserved == 0 and BUDGET * Decimal("0.9") <= spent <= BUDGET
    assert len(server.seen) == len(records)  # every request the client sent is on the bill, once
    assert spent == sum(r.cost_usd for r in records) == CALL_USD * len(records)
    assert all(r.usage.input_tokens == PROMPT and r.usage.output_tokens == COMPLETION for r in records)
    sent = server.seen[-1].json()
    cap = sent.get("max_completion_tokens", sent.get("max_tokens"))
    assert sent["tools"][0]["function"]["name"] == "calculator" and 0 < cap <= 100
    return spent


def test_real_chat_openai_runaway_is_ended_by_its_run_budget(server: WireServer) -> None:
    server.json("POST", "/v1/chat/completions", completion())
    agent, guard, records = agent_on(server)
    state = agent.invoke({"messages": [HumanMessage("compute forever")]})
    final = state["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls and "budget is exhausted" in final.text
    spent = check_bill(guard, records, server, state["budget"]["run_id"])
    assert state["budget"]["spent_usd"] == spent and state["budget"]["calls"] == len(records)


@pytest.mark.parametrize("mode", ["messages", "updates"])
def test_real_chat_openai_streamed_runaway_is_ended_by_its_run_budget(server: WireServer, mode: str) -> None:
    if mode == "messages":  # the model node streams its call: the client asks for SSE
        server.route("POST", "/v1/chat/completions", sse(stream_events(), done=True))
    else:
        server.json("POST", "/v1/chat/completions", completion())
    agent, guard, records = agent_on(server)
    parts = list(agent.stream({"messages": [HumanMessage("compute forever")]}, stream_mode=mode))
    assert parts and all(bool(seen.json().get("stream")) == (mode == "messages") for seen in server.seen)
    check_bill(guard, records, server, records[0].metadata["run_id"])


async def test_real_chat_openai_async_runaway_is_ended_by_its_run_budget(server: WireServer) -> None:
    server.json("POST", "/v1/chat/completions", completion())
    agent, guard, records = agent_on(server)
    state = await agent.ainvoke({"messages": [HumanMessage("compute forever")]})
    assert state["budget"]["ended_by_budget"]
    check_bill(guard, records, server, state["budget"]["run_id"])
