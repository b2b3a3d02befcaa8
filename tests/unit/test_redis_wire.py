"""The packed hot path sends byte for byte what redis-py would send for the codec's arguments."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import DataError

from budgetguard.ledger import LedgerNote
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores.base import ReserveRequest, SettleRequest
from budgetguard.stores.redis import RedisStore, codec, wire

SPECS = (
    CounterSpec(CounterRef("org:1/user:é", "day"), Caps(10**12, None, 5), None),
    CounterSpec(CounterRef("team{x}", "minute", expire_after=2.5), None, Caps(None, 300, None)),
    CounterSpec(CounterRef("org:1", "lifetime"), Caps(1, 2, 3), Caps(0, 0, 0)),
)
REFS = tuple(s.ref for s in SPECS)
SHA = "0123456789abcdef0123456789abcdef01234567"


def redis_py_bytes(client: Any, keys: list[str], args: list[Any]) -> bytes:
    conn = client.connection_pool.make_connection()
    return b"".join(conn.pack_command("EVALSHA", SHA, len(keys), *keys, *args))


def store(**kw: Any) -> RedisStore:
    return RedisStore(redis.Redis(), redis.asyncio.Redis(), prefix="p:", **kw)


@pytest.mark.parametrize("clock", [{}, {"server_time": False, "clock": lambda: 1700000000.123456}])
@pytest.mark.parametrize("kw", [{}, {"ledger_maxlen": 0}, {"ledger_age": None, "settled_cap": 7}])
def test_packed_reserve_and_settle_match_redis_py(clock: dict[str, Any], kw: dict[str, Any]) -> None:
    s = store(**clock, **kw)
    now = s._now()
    hot = wire.Hot(s.client, s._bases, s.tombstone_ttl, s.grace, s.settled_cap, s._ledger)
    for specs in (SPECS, SPECS[:1], SPECS[1:2]):
        for force in (False, True):
            req = ReserveRequest("lease-é-1", specs, Amount(123, 45, 1), 2.5, force=force)
            keys, args = s._reserve_args(req)
            assert hot.reserve(SHA, req, now) == redis_py_bytes(s.client, keys, args)
            assert hot.reserve(SHA, req, now) == redis_py_bytes(s.client, keys, args)  # cached
    note = LedgerNote(model="gpt-x", provider="p", tokens=(("input", 1), ("output", 2)), run_id="r-é")
    for refs in (REFS, REFS[:1], REFS[1:]):
        for est, over, n in ((False, True, None), (True, False, note)):
            sreq = SettleRequest("l-2", refs, Amount(9, 8, 1), est, count_overshoot=over, note=n)
            for mode in ("settle", "release"):
                keys, args = s._settle_args(sreq, mode)  # type: ignore[arg-type]
                want = redis_py_bytes(s.client, keys, args)
                assert hot.settle(SHA, sreq, now, mode) == want  # type: ignore[arg-type]
                assert hot.settle(SHA, sreq, now, mode) == want  # type: ignore[arg-type]


def test_only_plain_pooled_clients_take_the_packed_path() -> None:
    sync, asy = redis.Redis(), redis.asyncio.Redis()
    assert wire.plain(sync) and wire.plain(asy)
    assert not wire.plain(None)
    assert not wire.plain(redis.Redis(single_connection_client=True))
    assert not wire.plain(redis.asyncio.Redis(single_connection_client=True))
    wrapped = redis.Redis()
    wrapped.execute_command = lambda *a, **k: None  # type: ignore[method-assign]
    assert not wire.plain(wrapped)

    class Traced(redis.Redis):
        def execute_command(self, *args: Any, **options: Any) -> Any:
            return super().execute_command(*args, **options)

    assert not wire.plain(Traced())
    asyncio.run(asy.aclose())


def test_the_packer_encodes_as_the_clients_encoder() -> None:
    for client in (redis.Redis(), redis.Redis(encoding="latin-1", encoding_errors="replace")):
        p, enc = wire.Packer(client), client.get_encoder()
        for v in ("é", "", "€", 12, -3, 2**70, b"x", 1.5):
            assert p.encode(v) == enc.encode(v), v
            packed = client.connection_pool.make_connection().pack_command("X", v, v)
            assert b"*3\r\n$1\r\nX\r\n" + p.args([v, v]) == b"".join(packed)
        with pytest.raises(DataError):
            p.encode(True)
    assert codec.settle_head(SettleRequest("l", (), Amount(), False), "")[0] == ""


def test_a_class_level_wrapper_keeps_every_call_on_redis_pys_path() -> None:
    def traced(*args: Any, **kw: Any) -> Any:
        return None

    traced.__wrapped__ = redis.Redis.execute_command  # type: ignore[attr-defined]  # as wrapt leaves it
    assert wire._own(traced) is None
    assert wire._own(redis.Redis.execute_command) is redis.Redis.execute_command
