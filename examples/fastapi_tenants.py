"""A multi-tenant FastAPI app: per-user and per-org budgets from headers, status, streaming.

Runs offline on a fake model: ``python examples/fastapi_tenants.py`` sends a few requests
through httpx's in-process transport and prints the answers. Serve it for real with
``uvicorn examples.fastapi_tenants:app`` (needs ``pip install 'langchain-budgetguard[fastapi]' uvicorn``).
"""

import asyncio
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from budgetguard import BudgetGuard, Limit
from budgetguard.fastapi import add_exception_handlers, budget_metadata, status_response, stream_response
from budgetguard.testing import FakeChatModel


class Ask(BaseModel):
    prompt: str
    max_tokens: int = 64


def make_app(guard: BudgetGuard | None = None, model: FakeChatModel | None = None) -> FastAPI:
    """The app, around ``guard`` (default: 5 requests a day a user, $0.01 a month an org)."""
    guard = guard or BudgetGuard(
        limits=[
            Limit(requests=5, per="day", scope="user:{user_id}"),
            Limit(usd="0.01", per="month", scope="org:{org_id}"),
        ]
    )
    llm = guard.wrap(model or FakeChatModel(model_name="gpt-4o-mini", responses=["Hello from the model!"]))
    # Annotations are evaluated here (no `from __future__ import annotations`), so a local works.
    tenant = budget_metadata(guard, user_id="x-user-id", org_id="x-org-id")
    Tenant = Annotated[dict[str, Any], Depends(tenant)]

    app = FastAPI(title="budgetguard tenants")
    add_exception_handlers(app)  # 429 + Retry-After, 400 for a missing header, 503 for a down store

    @app.post("/chat")
    async def chat(ask: Ask, meta: Tenant) -> dict[str, str]:
        reply = await llm.ainvoke(ask.prompt, config={"metadata": meta}, max_tokens=ask.max_tokens)
        return {"reply": str(reply.content)}

    @app.post("/chat/stream")
    async def chat_stream(ask: Ask, meta: Tenant) -> StreamingResponse:
        # The first chunk is pulled here: a refusal is a 429, not a 200 with a broken body.
        return await stream_response(
            llm.astream(ask.prompt, config={"metadata": meta}, max_tokens=ask.max_tokens)
        )

    @app.get("/budget")
    async def budget(meta: Tenant) -> JSONResponse:
        return status_response(await guard.aremaining(**meta))

    app.state.guard = guard
    app.state.llm = llm
    return app


app = make_app()


async def _demo() -> None:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tenants") as client:
        alice = {"x-user-id": "alice", "x-org-id": "acme"}
        for i in range(6):
            r = await client.post("/chat", json={"prompt": f"Hello #{i}"}, headers=alice)
            extra = f" Retry-After: {r.headers['retry-after']}s" if r.status_code == 429 else ""
            print(f"POST /chat as alice: {r.status_code} {r.json()}{extra}")
        r = await client.post("/chat/stream", json={"prompt": "Stream, please"}, headers=alice)
        print(f"POST /chat/stream as alice: {r.status_code} ({r.json()['error']})")
        bob = {"x-user-id": "bob", "x-org-id": "acme"}
        r = await client.post("/chat/stream", json={"prompt": "Stream, please"}, headers=bob)
        print(f"POST /chat/stream as bob: {r.status_code} {r.text!r}")
        r = await client.get("/budget", headers={"x-user-id": "bob"})
        print(f"GET /budget without x-org-id: {r.status_code} {r.json()['detail']}")
        r = await client.get("/budget", headers=bob)
        for row in r.json()["rows"]:
            spent = f"spent {row['spent']} of {row['cap']} {row['quantity']}"
            print(f"  {row['scope']:<12} {row['per']:<6} {spent}")


if __name__ == "__main__":
    asyncio.run(_demo())
