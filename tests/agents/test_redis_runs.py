"""Issue 10 on a real Redis: run budgets shared by two guards (two workers), and run counters expire."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from agent_fakes import PRICES, Runaway, reported_usd, web_search
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from redis_servers import RedisServer

from budgetguard import BudgetGuard, CallRecord, Limit
from budgetguard.agents import BudgetMiddleware
from budgetguard.stores.redis import RedisStore

LIMITS = [Limit(usd="0.02", scope="run:{run_id}"), Limit(usd="0.03", per="day", scope="user:{user_id}")]


def worker(server: RedisServer, prefix: str) -> tuple[Any, Runaway, BudgetGuard, list[CallRecord]]:
    records: list[CallRecord] = []
    store = RedisStore.from_url(server.url, prefix=prefix)
    guard = BudgetGuard(limits=LIMITS, prices=PRICES, store=store, on_record=records.append)
    model = Runaway(max_tokens=200, output_tokens=40)
    return create_agent(model, [web_search], middleware=[BudgetMiddleware(guard)]), model, guard, records


def test_two_workers_share_the_users_budget_and_each_run_has_its_own(redis_server: RedisServer) -> None:
    prefix = f"ag-{uuid.uuid4().hex[:10]}:"
    (agent_a, model_a, guard_a, _), (agent_b, model_b, guard_b, _) = (
        worker(redis_server, prefix),
        worker(redis_server, prefix),
    )
    config: Any = {"metadata": {"user_id": "alice"}}
    a = agent_a.invoke({"messages": [HumanMessage("go")]}, config)["budget"]
    b = agent_b.invoke({"messages": [HumanMessage("go")]}, config)["budget"]
    assert "Budget exceeded for run:" in a["reason"]  # the first run met its own budget
    assert "Budget exceeded for user:alice" in b["reason"]  # the second met what the user had left
    user = next(r for r in guard_a.remaining(user_id="alice").rows if r.scope == "user:alice")
    spent = Decimal(user.spent)
    assert user.reserved == 0 and Decimal("0.027") <= spent <= Decimal("0.03")
    assert spent == a["spent_usd"] + b["spent_usd"] == reported_usd(model_a) + reported_usd(model_b)
    # the run counters expire (an hour after their last use); the user's day counter lives out its day
    client = redis_server.client()
    run_keys = [k for k in client.scan_iter(match=f"{prefix}{{run:*:c:*") if not k.endswith(b":d")]
    assert len(run_keys) == 2
    assert all(0 < client.ttl(k) <= 3600 for k in run_keys)
    assert guard_b.remaining(run_id=a["run_id"]).rows[0].spent == a["spent_usd"]
