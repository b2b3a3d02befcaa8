"""examples/fastapi_tenants.py under load: many users of two orgs at once, invoke and stream mixed.

Run against the memory store and a real redis-server. The invariants: no scope spends past
its cap, each 429 names the scope that refused it and carries Retry-After, a refused call
never reaches the model, streamed bodies arrive whole, and the status endpoint's spent is
exactly the recorded cost.
"""

import asyncio
import importlib.util
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from redis_servers import RedisServer

from budgetguard import BudgetGuard, CallRecord, Limit, RedisStore, Store
from budgetguard.stores import MemoryStore
from budgetguard.testing import FakeChatModel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_tenants.py"
REPLY = "Twelve chars Twelve chars."
PER_USER = 5
#: A call reserves at most $0.0000084 (8 output tokens, its cap) and costs $0.00000555: the big
#: org's 10 calls always fit $0.0001, the small org's 25 never do (at most 18 can).
ORG_USD = Decimal("0.0001")
WORST_CALL = Decimal("0.0000084")
BIG_ORG = ("big", ["b1", "b2"])  # 2 users: only their own request caps bind
SMALL_ORG = ("small", ["s1", "s2", "s3", "s4", "s5"])  # 5 users: the org's USD cap binds
TRIES = 8  # requests per user, all at once


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_tenants", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_guard(store: Store, records: list[CallRecord]) -> BudgetGuard:
    return BudgetGuard(
        limits=[
            Limit(requests=PER_USER, per="day", scope="user:{user_id}"),
            Limit(usd=ORG_USD, per="month", scope="org:{org_id}"),
        ],
        store=store,
        on_record=records.append,
    )


async def hammer(store: Store) -> None:
    records: list[CallRecord] = []
    guard = make_guard(store, records)
    # Real await points inside each call, so dozens are in flight together.
    fake = FakeChatModel(model_name="gpt-4o-mini", responses=[REPLY], output_tokens=8, latency=0.01)
    app = load_example().make_app(guard, fake)
    transport = httpx.ASGITransport(app=app)

    async def one(org: str, user: str, i: int) -> tuple[str, str, str, httpx.Response]:
        path = "/chat/stream" if i % 2 else "/chat"
        headers = {"x-user-id": user, "x-org-id": org}
        r = await client.post(path, json={"prompt": f"question {i}", "max_tokens": 8}, headers=headers)
        return org, user, path, r

    async with httpx.AsyncClient(transport=transport, base_url="http://tenants") as client:
        jobs = [one(org, u, i) for org, users in (BIG_ORG, SMALL_ORG) for u in users for i in range(TRIES)]
        results = await asyncio.gather(*jobs)
        statuses = {
            (org, u): (await client.get("/budget", headers={"x-user-id": u, "x-org-id": org})).json()
            for org, users in (BIG_ORG, SMALL_ORG)
            for u in users
        }

    ok = Counter[str]()
    ok_org = Counter[str]()
    for org, user, path, r in results:
        if r.status_code == 200:
            ok[user] += 1
            ok_org[org] += 1
            assert (r.text if path == "/chat/stream" else r.json()["reply"]) == REPLY  # whole bodies
            continue
        assert r.status_code == 429, r.text
        body = r.json()
        assert body["error"] == "budget_exceeded"
        assert body["scope"] in (f"user:{user}", f"org:{org}")
        assert int(r.headers["retry-after"]) >= 1 and int(r.headers["retry-after"]) == body["retry_after"]
        assert body["resets_at"] is not None

    assert fake.calls.count == sum(ok.values())  # a refused request never reached the model
    # The big org: exactly each user's own request cap, under contention.
    assert all(ok[u] == PER_USER for u in BIG_ORG[1]), ok
    # The small org: never past its USD cap, and not starved either.
    assert all(ok[u] <= PER_USER for u in SMALL_ORG[1]), ok
    assert ORG_USD // WORST_CALL <= ok_org["small"] < len(SMALL_ORG[1]) * PER_USER

    settled = [r for r in records if r.outcome == "settled"]
    assert len(settled) == sum(ok.values())
    assert all(r.reserved_usd <= WORST_CALL for r in settled)  # the premise of the counts above
    for org, users in (BIG_ORG, SMALL_ORG):
        cost = sum((r.cost_usd for r in settled if r.metadata.get("org_id") == org), Decimal(0))
        for u in users:
            rows = {row["scope"]: row for row in statuses[(org, u)]["rows"]}
            org_row, user_row = rows[f"org:{org}"], rows[f"user:{u}"]
            assert Decimal(org_row["spent"]) == cost  # exact: the money of the settled calls
            assert Decimal(org_row["spent"]) <= ORG_USD and org_row["reserved"] == "0"
            assert (user_row["spent"], user_row["reserved"]) == (ok[u], 0)


async def test_concurrent_tenants_memory_store() -> None:
    await hammer(MemoryStore())


@pytest.mark.redis
async def test_concurrent_tenants_redis_store(redis_server: RedisServer) -> None:
    store = RedisStore(client=redis_server.client(), prefix=f"web-{uuid.uuid4().hex}:")
    await hammer(store)


def test_example_demo_runs_offline(capsys: Any) -> None:
    import runpy

    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("POST /chat as alice: 200") == 5 and "POST /chat as alice: 429" in out
    assert "POST /chat/stream as alice: 429 (budget_exceeded)" in out
    assert "POST /chat/stream as bob: 200 'Hello from the model!'" in out
    assert "GET /budget without x-org-id: 400" in out
