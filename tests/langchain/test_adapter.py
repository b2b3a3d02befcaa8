"""The LangChain adapter: which path a call takes, and that it is enforced on every one.

On Redis, ``ainvoke`` must await the store's async methods (LangChain's async
dispatch asks the handler for coroutine functions) and ``invoke`` its sync ones.
Where the async dispatch cannot be recognised (no ``sys._getframe``, or
LangChain renamed its dispatcher) the sync methods serve ``ainvoke`` on
LangChain's executor: slower, still enforced. Real redis-server processes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from redis_servers import RedisServer

from budgetguard import BudgetExceeded, BudgetGuard, Limit
from budgetguard.adapter import compat
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

STORE_METHODS = ("reserve", "settle", "release", "areserve", "asettle", "arelease")


def spy_on(store: RedisStore) -> list[str]:
    """Record, on this store object only, which of its reserve/settle/release twins are called."""
    calls: list[str] = []
    for name in STORE_METHODS:
        original = getattr(store, name)
        if asyncio.iscoroutinefunction(original):

            async def spy_async(*args: Any, _name: str = name, _f: Any = original) -> Any:
                calls.append(_name)
                return await _f(*args)

            setattr(store, name, spy_async)
        else:

            def spy(*args: Any, _name: str = name, _f: Any = original) -> Any:
                calls.append(_name)
                return _f(*args)

            setattr(store, name, spy)
    return calls


def redis_guard(server: RedisServer, requests: int) -> tuple[BudgetGuard, RedisStore]:
    store = RedisStore.from_url(server.url, prefix=f"adapter-{uuid.uuid4().hex}:")
    return BudgetGuard(limits=[Limit(requests=requests)], store=store), store


async def test_ainvoke_awaits_the_async_store_methods_and_invoke_uses_the_sync_ones(
    redis_server: RedisServer,
) -> None:
    assert compat.detection_available()
    guard, store = redis_guard(redis_server, 10)
    llm = guard.wrap(FakeChatModel())
    calls = spy_on(store)
    await llm.ainvoke("hi")
    assert calls == ["areserve", "asettle"]
    calls.clear()
    assert [c async for c in llm.astream("hi")]
    assert calls == ["areserve", "asettle"]
    calls.clear()
    await asyncio.to_thread(llm.invoke, "hi")
    assert calls == ["reserve", "settle"]
    calls.clear()
    with guard.enforce():  # the enforce() composite takes the same paths
        await FakeChatModel().ainvoke("hi")
        assert calls == ["areserve", "asettle"]
        calls.clear()
        await asyncio.to_thread(FakeChatModel().invoke, "hi")
        assert calls == ["reserve", "settle"]


@pytest.mark.parametrize("removed", ["_ASYNC_DISPATCH", "_getframe"])
async def test_without_async_detection_a_redis_ainvoke_is_still_enforced(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, removed: str
) -> None:
    """LangChain renamed its dispatcher, or the interpreter has no ``sys._getframe``."""
    monkeypatch.setattr(compat, removed, None)
    assert not compat.detection_available()
    guard, store = redis_guard(redis_server, 2)
    model = FakeChatModel()
    llm = guard.wrap(model)
    calls = spy_on(store)
    await llm.ainvoke("hi")
    await llm.ainvoke("hi")
    assert model.calls.count == 2  # admitted while the budget holds
    assert calls == ["reserve", "settle"] * 2  # through the sync methods, on LangChain's executor
    with pytest.raises(BudgetExceeded):
        await llm.ainvoke("hi")
    assert model.calls.count == 2  # refused before the provider was called
    with guard.enforce(), pytest.raises(BudgetExceeded):
        await FakeChatModel().ainvoke("hi")
    (row,) = (await guard.aremaining()).rows
    assert (row.spent, row.reserved) == (2, 0)


async def test_nested_enforce_on_the_async_path_releases_earlier_reservations(
    redis_server: RedisServer,
) -> None:
    outer, store = redis_guard(redis_server, 10)
    inner = BudgetGuard(limits=[Limit(requests=0)])
    calls = spy_on(store)
    with outer.enforce(), inner.enforce(), pytest.raises(BudgetExceeded):
        await FakeChatModel().ainvoke("hi")
    assert calls == ["areserve", "arelease"]
    (row,) = outer.remaining().rows
    assert (row.spent, row.reserved) == (0, 0)


def _dispatcher(lookup: Callable[[], bool]) -> bool:
    return lookup()


def _through(frames: int) -> Callable[[], bool]:
    """A look-up with ``frames`` frames between the dispatcher and the descriptor's ``__get__``."""

    def get() -> bool:  # the descriptor's __get__
        return compat.on_async_path()

    def between(n: int = frames) -> bool:
        return between(n - 1) if n > 1 else get()

    return between if frames else get


@pytest.mark.parametrize(
    ("frames", "seen"), [(0, True), (2, True), (compat.MAX_FRAMES - 1, True), (compat.MAX_FRAMES, False)]
)
def test_detection_looks_a_few_frames_up_and_no_further(
    monkeypatch: pytest.MonkeyPatch, frames: int, seen: bool
) -> None:
    monkeypatch.setattr(compat, "_ASYNC_DISPATCH", _dispatcher.__code__)
    assert _dispatcher(_through(frames)) is seen
    assert _through(0)() is False  # not below the dispatcher at all


def test_unavailable_detection_is_logged_once_at_import() -> None:
    script = (
        "import logging, langchain_core.callbacks.manager as m\n"
        "del m._ahandle_event_for_handler\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s %(message)s')\n"
        "import budgetguard, budgetguard.testing, budgetguard.adapter.compat as c\n"
        "g = budgetguard.BudgetGuard(limits=[budgetguard.Limit(requests=1)])\n"
        "g.wrap(budgetguard.testing.FakeChatModel()).invoke('hi')\n"
        "assert not c.detection_available()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "LangChain's executor" in line]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("budgetguard ") and "still enforced" in lines[0]
