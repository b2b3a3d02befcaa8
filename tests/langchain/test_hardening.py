"""Issue 8 regressions on the guard's API surface: caps, demo, scopes as written."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from redis_servers import RedisServer

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, Limit, MemoryStore
from budgetguard.cli import demo
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

PROMPT = "Summarise the attached three-thousand-word contract, clause by clause, please. " * 4


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens", "num_predict", "ls_max_tokens"])
def test_metadata_never_sets_the_output_cap(key: str) -> None:
    """``config["metadata"]`` is the caller's: a ``max_tokens`` there must not shrink a reservation.

    Before the fix, ``metadata={"max_tokens": 1}`` let a 3,000-token call through a $0.0001 cap.
    """
    llm = FakeChatModel(model_name="gpt-4o-mini", output_tokens=3000)  # no cap in the request
    guard = BudgetGuard(limit_usd=Decimal("0.0001"))
    with pytest.raises(BudgetExceeded):
        guard.wrap(llm).invoke(PROMPT, config={"metadata": {key: 1}})
    assert llm.calls.count == 0
    assert guard.remaining().rows[0].spent == 0


def test_the_real_request_cap_still_counts() -> None:
    """A cap in the request itself (``bind(max_tokens=...)``) is what the provider enforces: it counts."""
    llm = FakeChatModel(model_name="gpt-4o-mini", max_tokens=3000, output_tokens=10)
    guard = BudgetGuard(limit_usd=Decimal("0.0001"))
    guard.wrap(llm).bind(max_tokens=16).invoke(PROMPT)
    assert llm.calls.count == 1


def test_the_demo_runs_in_memory_whatever_the_environment_says(fresh_redis: RedisServer) -> None:
    """Before the fix the demo wrote to ``$BUDGETGUARD_STORE``'s global counter.

    Its second run was then refused at call 1. A server of its own: the
    session's shared one holds other tests' keys under the default prefix.
    """
    env = {**os.environ, "BUDGETGUARD_STORE": fresh_redis.url}
    runs = [
        subprocess.run(
            [sys.executable, "-m", "budgetguard.cli", "demo"], env=env, capture_output=True, text=True
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "   1  gpt-4o" in run.stdout, run.stdout
    assert runs[0].stdout == runs[1].stdout
    client = fresh_redis.client()
    assert not client.keys("budgetguard:*"), "the demo must leave the configured store untouched"


def test_demo_output_in_process() -> None:
    out = io.StringIO()
    assert demo(out) == 0
    assert "REFUSED before any provider call" in out.getvalue()
    assert Limit(usd=1).usd_nanos == 10**9


# ------------------------------------------------------------------ scopes as the user wrote them

EMAIL = "alice@example.com"
UUID_ID = "0b8f0c1e-6a39-4f3e-9d6a-1c2b3d4e5f60"


def _user_guard(store: object, records: list[CallRecord]) -> BudgetGuard:
    return BudgetGuard(
        limits=[Limit(usd=Decimal("0.001"), scope="user:{user_id}")],
        store=store,  # type: ignore[arg-type]
        on_record=records.append,
    )


@pytest.mark.parametrize("kind", ["memory", "redis"])
@pytest.mark.parametrize("user", [EMAIL, UUID_ID])
def test_scopes_are_shown_and_reset_as_written(kind: str, user: str, request: pytest.FixtureRequest) -> None:
    """Before the fix: ``user:alice%40example%2Ecom`` everywhere.

    And ``reset("user:alice@example.com")`` silently reset nothing.
    """
    store: object = MemoryStore()
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        store = RedisStore.from_url(server.url, prefix=f"scopes-{os.urandom(4).hex()}:")
    records: list[CallRecord] = []
    guard = _user_guard(store, records)
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o-mini", max_tokens=50, output_tokens=50))
    meta = {"metadata": {"user_id": user}}
    while True:
        try:
            llm.invoke("hi", config=meta)
        except BudgetExceeded as exc:
            refused = exc
            break
    assert refused.scope == f"user:{user}"
    assert f"user:{user}" in str(refused)
    assert records and all(r.scopes == (f"user:{user}",) for r in records)
    (row,) = guard.remaining(user_id=user).rows
    assert row.scope == f"user:{user}" and row.spent > 0
    assert guard.reset(f"user:{user}") == 1
    assert guard.remaining(user_id=user).rows[0].spent == 0
    llm.invoke("hi", config=meta)  # admitted again after the reset


def test_reset_also_takes_the_stored_key() -> None:
    guard = _user_guard(MemoryStore(), [])
    guard.wrap(FakeChatModel(max_tokens=10)).invoke("hi", config={"metadata": {"user_id": EMAIL}})
    assert guard.reset("user:alice%40example%2Ecom") == 1


def test_a_value_named_global_does_not_share_the_default_scope() -> None:
    """``scope="{tenant}"`` with tenant ``global`` rendered the key of the guard's default scope."""
    guard = BudgetGuard(limits=[Limit(requests=1), Limit(requests=1, scope="{tenant}")], store=MemoryStore())
    llm = guard.wrap(FakeChatModel(max_tokens=10))
    llm.invoke("hi", config={"metadata": {"tenant": "acme"}})  # the default scope's only request
    with pytest.raises(BudgetExceeded) as exc:
        llm.invoke("hi", config={"metadata": {"tenant": "global"}})
    assert exc.value.scope == "global" and exc.value.limit.scope is None, "refused by the default limit"
    other = BudgetGuard(limits=[Limit(requests=1, scope="{tenant}")], store=guard.store)
    other.wrap(FakeChatModel(max_tokens=10)).invoke("hi", config={"metadata": {"tenant": "global"}})
