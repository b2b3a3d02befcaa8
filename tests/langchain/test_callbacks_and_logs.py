"""A user callback never breaks a call, and store outages leave a log line (once per outage).

``on_record`` runs after the spend is recorded: whatever it raises is logged
once with its traceback, and the caller still gets the model's answer.
LangChain's "Error in callback" line is dropped for refusals only; a store
outage is logged at WARNING on logger "budgetguard" when it begins and when
the store answers again, not once per call.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from redis_servers import RedisServer

from budgetguard import BudgetExceeded, BudgetGuard, BudgetStoreUnavailable, CallRecord, Limit
from budgetguard.testing import FakeChatModel

CALLBACK_LOGGER = "langchain_core.callbacks.manager"


def broken(rec: CallRecord) -> None:
    raise RuntimeError("the user's on_record is broken")


def test_an_on_record_that_raises_does_not_break_the_call(caplog: pytest.LogCaptureFixture) -> None:
    guard = BudgetGuard(limits=[Limit(requests=10)], on_record=broken)
    llm = guard.wrap(FakeChatModel(responses=["the answer"]))
    with caplog.at_level(logging.DEBUG, logger="budgetguard"):
        answers = [llm.invoke(f"q{i}").content for i in range(3)]
    assert answers == ["the answer"] * 3
    assert guard.remaining().rows[0].spent == 3, "the spend was not recorded"
    logged = [r for r in caplog.records if r.name == "budgetguard" and r.levelno >= logging.ERROR]
    assert len(logged) == 1, f"logged {len(logged)} times for 3 calls"
    assert logged[0].exc_info is not None and "broken" in str(logged[0].exc_info[1])


async def test_an_on_record_that_raises_does_not_break_an_async_or_streamed_call() -> None:
    guard = BudgetGuard(limits=[Limit(requests=10)], on_record=broken)
    llm = guard.wrap(FakeChatModel(responses=["the answer"]))
    assert (await llm.ainvoke("q")).content == "the answer"
    assert "".join(str(c.content) for c in llm.stream("q")) == "the answer"
    assert guard.remaining().rows[0].spent == 2


def test_refusals_stay_quiet_but_store_outages_are_logged_once(
    fresh_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cooldown = 0.3
    guard = BudgetGuard(
        limits=[Limit(requests=1)], store=fresh_redis.url, store_timeout=cooldown, spool_dir=tmp_path
    )
    llm = guard.wrap(FakeChatModel())
    with caplog.at_level(logging.INFO):
        llm.invoke("the one call that fits")
        with pytest.raises(BudgetExceeded):
            llm.invoke("refused")
        assert not [r for r in caplog.records if r.name == CALLBACK_LOGGER], "a refusal was logged"

        fresh_redis.kill()
        for i in range(6):  # inside the breaker's window and after it (the store is tried again)
            with pytest.raises(BudgetStoreUnavailable):
                llm.invoke(f"outage {i}")
            time.sleep(cooldown / 2)
        fresh_redis.start()  # empty (no persistence): the one request fits again
        time.sleep(cooldown)
        llm.invoke("the store answers again")

    ours = [r.getMessage() for r in caplog.records if r.name == "budgetguard"]
    down = [m for m in ours if "unavailable" in m]
    back = [m for m in ours if m.endswith("answers again")]
    assert len(down) == 1, f"the outage was logged {len(down)} times: {ours}"
    assert len(back) == 1, ours
    lc = [r.getMessage() for r in caplog.records if r.name == CALLBACK_LOGGER]
    assert lc and all("BudgetStoreUnavailable" in m for m in lc), lc
