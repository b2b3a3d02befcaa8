"""Issue 8 regressions on the guard's API surface: caps, demo, scopes as written."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from redis_servers import RedisServer

from budgetguard import BudgetExceeded, BudgetGuard, Limit
from budgetguard.cli import demo
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


def test_the_demo_runs_in_memory_whatever_the_environment_says(redis_server: RedisServer) -> None:
    """Before the fix the demo wrote to ``$BUDGETGUARD_STORE``'s global counter.

    Its second run was then refused at call 1.
    """
    env = {**os.environ, "BUDGETGUARD_STORE": redis_server.url}
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
    client = redis_server.client()
    assert not client.keys("budgetguard:*"), "the demo must leave the configured store untouched"


def test_demo_output_in_process() -> None:
    out = io.StringIO()
    assert demo(out) == 0
    assert "REFUSED before any provider call" in out.getvalue()
    assert Limit(usd=1).usd_nanos == 10**9
