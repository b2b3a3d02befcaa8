"""budgetguard.fastapi through a real FastAPI app and an httpx client (in-process ASGI transport)."""

# No `from __future__ import annotations`: FastAPI must evaluate the local Depends(...) annotations.

import asyncio
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from redis_servers import free_port

from budgetguard import (
    BudgetExceeded,
    BudgetGuard,
    BudgetStatus,
    CallRecord,
    ConfigError,
    Limit,
)
from budgetguard.fastapi import (
    add_exception_handlers,
    budget_metadata,
    error_response,
    status_response,
    stream_response,
)
from budgetguard.testing import FakeChatModel

ROOT = Path(__file__).resolve().parents[2]
REPLY = "The quick brown fox jumps over the lazy dog."


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def app_for(guard: BudgetGuard, model: FakeChatModel | None = None) -> tuple[FastAPI, FakeChatModel]:
    """Endpoints over every helper; metadata from the x-user-id header."""
    fake = model or FakeChatModel(model_name="gpt-4o-mini", responses=[REPLY], input_tokens=20)
    llm = guard.wrap(fake)
    meta_dep = budget_metadata(guard, user_id="x-user-id")
    app = FastAPI()
    add_exception_handlers(app)

    async def chat(meta: Annotated[dict[str, Any], Depends(meta_dep)]) -> dict[str, str]:
        reply = await llm.ainvoke("hi", config={"metadata": meta}, max_tokens=50)
        return {"reply": str(reply.content)}

    async def chat_no_meta() -> dict[str, str]:  # the engine itself raises MissingScope
        reply = await llm.ainvoke("hi", max_tokens=50)
        return {"reply": str(reply.content)}

    async def astream(meta: Annotated[dict[str, Any], Depends(meta_dep)]) -> StreamingResponse:
        return await stream_response(llm.astream("hi", config={"metadata": meta}, max_tokens=50))

    async def sync_stream(meta: Annotated[dict[str, Any], Depends(meta_dep)]) -> StreamingResponse:
        return await stream_response(llm.stream("hi", config={"metadata": meta}, max_tokens=50))

    async def budget(meta: Annotated[dict[str, Any], Depends(meta_dep)]) -> JSONResponse:
        return status_response(await guard.aremaining(**meta))

    app.post("/chat")(chat)
    app.post("/chat-no-meta")(chat_no_meta)
    app.post("/astream")(astream)
    app.post("/stream")(sync_stream)
    app.get("/budget")(budget)
    return app, fake


def floats_in(value: Any) -> list[Any]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in floats_in(v)]
    if isinstance(value, list):
        return [f for v in value for f in floats_in(v)]
    return []


# ---------------------------------------------------------------- 429


async def test_refusal_is_429_with_retry_after_and_money_as_strings() -> None:
    guard = BudgetGuard(limits=[Limit(usd="0.0001", per="day", scope="user:{user_id}")])
    app, fake = app_for(guard)
    user = {"x-user-id": "alice@example.com"}
    async with client(app) as c:
        codes = [(await c.post("/chat", headers=user)).status_code for _ in range(6)]
        before = time.time()
        r = await c.post("/chat", headers=user)
    assert codes[0] == 200 and 429 in codes
    assert r.status_code == 429
    body = r.json()
    assert body["error"] == "budget_exceeded"
    assert body["scope"] == "user:alice@example.com"  # as written, not the store's encoded key
    assert body["quantity"] == "usd" and body["window"] == "day"
    assert floats_in(body) == []
    for key in ("cap", "spent", "reserved", "requested", "remaining"):
        assert isinstance(body[key], str), key
    assert body["cap"] == "0.0001"
    status = guard.remaining(user_id="alice@example.com")
    assert Decimal(body["spent"]) == status.rows[0].spent > 0
    assert Decimal(body["remaining"]) == status.rows[0].remaining
    assert Decimal(body["spent"]) + Decimal(body["remaining"]) <= Decimal("0.0001")
    assert "user:alice@example.com" in body["detail"]
    resets = datetime.fromisoformat(body["resets_at"])
    assert resets == status.rows[0].resets_at and resets.tzinfo is not None
    # money spent blocks it, so it is the time until the window resets, rounded up to whole seconds
    retry = int(r.headers["retry-after"])
    assert retry == body["retry_after"]
    assert math.ceil(resets.timestamp() - time.time()) <= retry <= math.ceil(resets.timestamp() - before)
    assert fake.calls.count == codes.count(200)


def _refusal(retry_after: float | None, per: str = "minute") -> BudgetExceeded:
    return BudgetExceeded(
        scope="org:acme",
        limit=Limit(tokens=100, per=per),  # type: ignore[arg-type]
        quantity="tokens",
        window=per,
        spent=90,
        reserved=5,
        requested=30,
        remaining=5,
        resets_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
        retry_after=retry_after,
    )


@pytest.mark.parametrize(("retry_after", "header"), [(0.2, "1"), (1.0, "1"), (3.0001, "4"), (59.0, "59")])
def test_retry_after_is_the_integer_ceiling(retry_after: float, header: str) -> None:
    resp = error_response(_refusal(retry_after))
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == header


def test_no_retry_after_when_waiting_cannot_help() -> None:
    resp = error_response(_refusal(None, per="lifetime"))
    assert resp.status_code == 429
    assert "retry-after" not in resp.headers
    body = bytes(resp.body).decode()
    assert '"retry_after":null' in body and '"cap":100' in body  # token counts stay integers


async def test_lifetime_refusal_over_http_has_no_retry_after() -> None:
    guard = BudgetGuard(limits=[Limit(requests=1, scope="user:{user_id}")])
    app, _ = app_for(guard)
    async with client(app) as c:
        assert (await c.post("/chat", headers={"x-user-id": "u"})).status_code == 200
        r = await c.post("/chat", headers={"x-user-id": "u"})
    assert r.status_code == 429
    assert "retry-after" not in r.headers
    assert r.json()["retry_after"] is None and r.json()["resets_at"] is None


# ---------------------------------------------------------------- 400 and 503


async def test_missing_header_is_400_naming_scope_and_header() -> None:
    guard = BudgetGuard(limits=[Limit(requests=5, per="day", scope="user:{user_id}")])
    app, fake = app_for(guard)
    async with client(app) as c:
        r = await c.post("/chat")
        empty = await c.post("/chat", headers={"x-user-id": "  "})
    for resp in (r, empty):
        assert resp.status_code == 400
        body = resp.json()
        assert body["error"] == "missing_scope"
        assert body["template"] == "user:{user_id}" and body["key"] == "user_id"
        assert body["header"] == "x-user-id"
        assert "x-user-id" in body["detail"] and "user:{user_id}" in body["detail"]
    assert fake.calls.count == 0


async def test_missing_scope_from_the_engine_is_400() -> None:
    guard = BudgetGuard(limits=[Limit(requests=5, per="day", scope="user:{user_id}")])
    app, fake = app_for(guard)
    async with client(app) as c:
        r = await c.post("/chat-no-meta")
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "missing_scope" and body["key"] == "user_id" and "header" not in body
    assert "metadata['user_id']" in body["detail"]
    assert fake.calls.count == 0


async def test_store_down_is_503() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    guard = BudgetGuard(limits=[Limit(requests=5, scope="user:{user_id}")], store=url, store_timeout=0.5)
    app, fake = app_for(guard)
    async with client(app) as c:
        r = await c.post("/chat", headers={"x-user-id": "u"})
    assert r.status_code == 503
    body = r.json()
    assert body["error"] == "budget_store_unavailable" and body["operation"] == "reserve"
    assert "The call was not made" in body["detail"]
    assert fake.calls.count == 0


# ---------------------------------------------------------------- streaming


@pytest.mark.parametrize("path", ["/astream", "/stream"])
async def test_stream_admitted_then_refused_as_429_not_broken_200(path: str) -> None:
    guard = BudgetGuard(limits=[Limit(requests=2, per="hour", scope="user:{user_id}")])
    app, fake = app_for(guard)
    user = {"x-user-id": "streamer"}
    async with client(app) as c:
        ok = [await c.post(path, headers=user) for _ in range(2)]
        refused = await c.post(path, headers=user)
    for r in ok:
        assert r.status_code == 200 and r.text == REPLY
        assert r.headers["content-type"].startswith("text/plain")
    assert refused.status_code == 429
    assert refused.json()["scope"] == "user:streamer" and "retry-after" in refused.headers
    assert fake.calls.count == 2
    row = guard.remaining(user_id="streamer").rows[0]
    assert (row.spent, row.reserved) == (2, 0)  # both streams were settled when their bodies ended


async def test_a_client_that_goes_away_mid_stream_is_charged_and_released() -> None:
    """Raw ASGI (httpx's transport reads whole bodies): the client disconnects after one chunk."""
    records: list[CallRecord] = []
    guard = BudgetGuard(limits=[Limit(usd="1", per="day")], on_record=records.append)
    llm = guard.wrap(FakeChatModel(responses=["word " * 2000], latency=0.001))
    app = FastAPI()

    @app.get("/s")
    async def s() -> StreamingResponse:
        return await stream_response(llm.astream("hi", max_tokens=5000))

    sent: list[dict[str, Any]] = []
    first_body = asyncio.Event()
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_body.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_body.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/s",
        "raw_path": b"/s",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("test", 1),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body" and m.get("body")]
    assert sent[0]["status"] == 200 and 1 <= len(bodies) < 100  # of 2,500 chunks
    assert [r.outcome for r in records] == ["estimated"]  # the abandoned stream is charged
    row = guard.remaining().rows[0]
    assert row.reserved == 0 and row.spent == records[0].cost_usd > 0


async def test_a_naive_streaming_response_breaks_its_200() -> None:
    """Why the helper exists: a refusal inside StreamingResponse's body cannot become a 429."""
    guard = BudgetGuard(limits=[Limit(requests=0, scope="user:{user_id}")])
    llm = guard.wrap(FakeChatModel())
    app = FastAPI()
    add_exception_handlers(app)

    @app.post("/naive")
    async def naive() -> StreamingResponse:
        chunks = llm.astream("hi", config={"metadata": {"user_id": "u"}})
        return StreamingResponse(str(c.content) async for c in chunks)

    async with client(app) as c:
        with pytest.raises(Exception) as info:  # the 200 was already sent; the body cannot be answered
            await c.post("/naive")
    chain = [info.value, info.value.__cause__, info.value.__context__]
    assert any(isinstance(e, BudgetExceeded) for e in chain), chain


async def test_empty_stream_and_custom_encoding() -> None:
    async def nothing() -> AsyncIterator[str]:
        return
        yield ""  # pragma: no cover

    async def events() -> AsyncIterator[dict[str, int]]:
        for i in range(3):
            yield {"n": i}

    app = FastAPI()

    @app.get("/empty")
    async def empty() -> StreamingResponse:
        return await stream_response(nothing())

    @app.get("/sse")
    async def sse() -> StreamingResponse:
        sse_event = lambda e: f"data: {e['n']}\n\n"  # noqa: E731
        return await stream_response(events(), encode=sse_event, media_type="text/event-stream")

    async with client(app) as c:
        r = await c.get("/empty")
        s = await c.get("/sse")
    assert (r.status_code, r.text) == (200, "")
    assert s.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert s.headers["content-type"].startswith("text/event-stream")


# ---------------------------------------------------------------- metadata dependency


@dataclass
class User:
    id: str
    org: str | None


async def current_user(authorization: Annotated[str, Header()]) -> User:
    token = authorization.removeprefix("Bearer ")
    return User(id=token.split("@")[0], org=None if token.startswith("orphan") else token.split("@")[1])


async def test_metadata_from_an_auth_dependency_and_headers() -> None:
    guard = BudgetGuard(
        limits=[
            Limit(requests=1, per="day", scope="org:{org_id}/user:{user_id}"),
            Limit(requests=9, per="day", scope="team:{team}"),
        ]
    )
    meta_dep = budget_metadata(
        guard, auth=current_user, user_id=lambda u: u.id, org_id=lambda u: u.org, team="x-team"
    )
    seen: list[dict[str, Any]] = []
    app = FastAPI()
    add_exception_handlers(app)
    llm = guard.wrap(FakeChatModel())

    @app.post("/chat")
    async def chat(meta: Annotated[dict[str, Any], Depends(meta_dep)]) -> dict[str, str]:
        seen.append(meta)
        await llm.ainvoke("hi", config={"metadata": meta})
        return {"ok": "yes"}

    async with client(app) as c:
        r1 = await c.post("/chat", headers={"authorization": "Bearer ann@acme", "x-team": "red"})
        r2 = await c.post("/chat", headers={"authorization": "Bearer ann@acme", "x-team": "red"})
        orphan = await c.post("/chat", headers={"authorization": "Bearer orphan", "x-team": "red"})
        no_auth = await c.post("/chat", headers={"x-team": "red"})
    assert r1.status_code == 200 and seen[0] == {"user_id": "ann", "org_id": "acme", "team": "red"}
    assert r2.status_code == 429 and r2.json()["scope"] == "org:acme/user:ann"
    assert orphan.status_code == 400
    assert orphan.json()["template"] == "org:{org_id}/user:{user_id}" and orphan.json()["key"] == "org_id"
    assert no_auth.status_code == 422  # the auth dependency's own validation, untouched


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({}, "at least one key"),
        ({"user_id": ""}, "header for 'user_id' is empty"),
        ({"user_id": 42}, "must be a header name"),
        ({"user_id": lambda u: u}, "pass auth="),
    ],
)
def test_budget_metadata_rejects_bad_sources(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        budget_metadata(**kwargs)


# ---------------------------------------------------------------- status as JSON


async def test_status_endpoint_is_exact_and_float_free() -> None:
    guard = BudgetGuard(
        limits=[
            Limit(usd="0.5", tokens=10_000, per="day", scope="user:{user_id}"),
            Limit(usd="2", per="month", scope="org:{org_id}"),
        ],
        model="gpt-4o-mini",
    )
    app, _ = app_for(guard)
    guard.wrap(FakeChatModel()).invoke("hi", config={"metadata": {"user_id": "u1", "org_id": "o"}})
    async with client(app) as c:
        r = await c.get("/budget", headers={"x-user-id": "u1"})  # no org_id: that limit is skipped
    body = r.json()
    status = guard.remaining(user_id="u1")
    assert r.status_code == 200 and floats_in(body) == []
    assert body == status.to_dict()
    assert body["skipped"] == ["$2 per month on org:{org_id}"]
    usd, tokens = body["rows"]
    assert (usd["quantity"], tokens["quantity"]) == ("usd", "tokens")
    assert Decimal(usd["spent"]) == status.rows[0].spent > 0 and isinstance(tokens["spent"], int)
    assert Decimal(usd["spent"]) + Decimal(usd["remaining"]) == Decimal("0.5")
    assert body["remaining_usd"] == usd["remaining"]


def test_to_dict_vs_fastapis_own_encoding_of_the_dataclass() -> None:
    guard = BudgetGuard(limit_usd="1.10", model="gpt-4o-mini")
    guard.wrap(FakeChatModel()).invoke("hello")
    status = guard.remaining()
    assert floats_in(jsonable_encoder(status)) != []  # the problem: FastAPI turns Decimal into float
    data = status.to_dict()
    assert floats_in(data) == [] and jsonable_encoder(data) == data
    row = data["rows"][0]  # type: ignore[index]
    assert row["cap"] == "1.1" and Decimal(row["spent"]) == status.rows[0].spent
    assert row["window_start"] is None and row["resets_at"] is None
    assert data["minimal_call"]["requests"] == 1  # type: ignore[index]
    assert Decimal(data["minimal_call"]["usd"]) > 0  # type: ignore[index]


def test_tiny_and_large_money_are_fixed_point_strings() -> None:
    from budgetguard.status import json_quantity

    assert json_quantity("usd", Decimal("1E-9")) == "0.000000001"
    assert json_quantity("usd", Decimal("1.5E+3")) == "1500"
    assert json_quantity("usd", Decimal("0.10")) == "0.1"
    assert json_quantity("tokens", 1200) == 1200


def test_status_to_dict_is_public_on_budgetstatus() -> None:
    assert isinstance(BudgetStatus(rows=()).to_dict()["rows"], list)


# ---------------------------------------------------------------- packaging


def test_import_budgetguard_does_not_import_fastapi() -> None:
    code = (
        "import sys, budgetguard; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'fastapi' or m == 'budgetguard.fastapi'); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
