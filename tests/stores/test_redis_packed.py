"""The packed hot path (stores/redis/wire.py) against a real server: it is the path plain clients
take, and it leaves exactly what the Script path leaves (counters, leases, ledger)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from redis_servers import RedisServer

from budgetguard.ledger import LedgerNote
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores.base import ReserveRequest, SettleRequest
from budgetguard.stores.redis import RedisStore, wire

pytestmark = pytest.mark.redis

SPECS = (
    CounterSpec(CounterRef("org:1/user:2", "month"), Caps(10**9, 10**6, 100), None),
    CounterSpec(CounterRef("org:1", "lifetime", expire_after=60.0), None, Caps(None, None, 50)),
    CounterSpec(CounterRef("team", "lifetime"), Caps(500, None, None), None),
)
REFS = tuple(s.ref for s in SPECS)


def scenario(store: RedisStore) -> list[Any]:
    """Admitted, refused, forced, settled, replayed, never-reserved settles: their replies."""
    out: list[Any] = []
    note = LedgerNote(model="m", provider="p", tokens=(("input", 3),), run_id="r")
    for i in range(4):
        r = store.reserve(ReserveRequest(f"l{i}", SPECS, Amount(100, 10, 1), 60.0, force=i == 3))
        out.append((r.admitted, r.violation, r.states))
        out.append(store.settle(SettleRequest(f"l{i}", REFS, Amount(90 + i, 9, 1), i == 2, note=note)))
        out.append(store.settle(SettleRequest(f"l{i}", REFS, Amount(90 + i, 9, 1), False)))  # replay
    out.append(store.settle(SettleRequest("never", REFS, Amount(7, 7, 1), False)))
    out.append([(s.spent, s.reserved, s.overshoot_count, s.estimated_count) for s in store.status(REFS)])
    out.append([(r.outcome, r.cost, r.estimated, r.note) for r in store.ledger_records()])
    return out


async def ascenario(store: RedisStore) -> list[Any]:
    out: list[Any] = []
    for i in range(3):
        r = await store.areserve(ReserveRequest(f"a{i}", SPECS, Amount(100, 10, 1), 60.0))
        out.append((r.admitted, r.violation, r.states))
        out.append(await store.asettle(SettleRequest(f"a{i}", REFS, Amount(50, 5, 1), False)))
    out.append([(s.spent, s.reserved) for s in await store.astatus(REFS)])
    return out


def test_the_packed_path_is_taken_and_matches_the_script_path(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[bytes] = []
    real_send = wire.send

    def counting(client: Any, script: Any, packed: bytes) -> Any:
        sent.append(packed)
        return real_send(client, script, packed)

    monkeypatch.setattr(wire, "send", counting)
    fast = scenario(RedisStore.from_url(redis_server.url, prefix=f"wf-{uuid.uuid4().hex}:"))
    assert len(sent) == 4 * 3 + 1  # every reserve and settle of the scenario
    monkeypatch.setattr(wire, "plain", lambda client: False)
    slow = scenario(RedisStore.from_url(redis_server.url, prefix=f"ws-{uuid.uuid4().hex}:"))
    assert len(sent) == 13
    assert fast == slow


async def test_the_async_packed_path_matches_the_script_path(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[bytes] = []
    real_asend = wire.asend

    async def counting(client: Any, script: Any, packed: bytes) -> Any:
        sent.append(packed)
        return await real_asend(client, script, packed)

    monkeypatch.setattr(wire, "asend", counting)
    fast_store = RedisStore.from_url(redis_server.url, prefix=f"waf-{uuid.uuid4().hex}:")
    fast = await ascenario(fast_store)
    assert len(sent) == 6
    monkeypatch.setattr(wire, "plain", lambda client: False)
    slow_store = RedisStore.from_url(redis_server.url, prefix=f"was-{uuid.uuid4().hex}:")
    slow = await ascenario(slow_store)
    assert len(sent) == 6
    assert fast == slow
    for s in (fast_store, slow_store):
        await s.async_client.aclose()
