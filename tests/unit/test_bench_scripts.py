"""Smoke test: each benchmark script runs with tiny arguments and prints its table.

The scripts never assert timings and neither does this test: it only checks
that they run to the end and print their header and rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), LITELLM_LOCAL_MODEL_COST_MAP="True")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_utilization_prints_its_table() -> None:
    out = run_script("utilization.py", "--reps", "1")
    assert "utilization" in out and "physical" in out and "reserve/actual" in out
    for row in (
        "single-turn, max_tokens=512",
        "single-turn, no max_tokens",
        "growing conversation",
        "agent loop, per-run budget",
        "16 callers, 1 call each, wait 10 s",
        "16 callers, 1 call each, no wait",
    ):
        assert row in out


@pytest.mark.redis
def test_peers_prints_its_table() -> None:
    out = run_script("peers.py", "--reps", "1", "--callers", "4")
    assert "overspend % worst" in out and "utilization % worst" in out
    for row in (
        "UsageMetadataCallbackHandler",
        "budgetguard, memory store",
        "budgetguard, Redis store",
        "LiteLLM BudgetManager",
    ):
        assert row in out


@pytest.mark.redis
def test_ledger_overhead_prints_both_variants() -> None:
    out = run_script("ledger_overhead.py", "--rounds", "2", "--pairs", "20")
    assert "client time per pair" in out and "server us per script" in out
    assert "ledger on" in out and "off" in out and "ratio" in out


@pytest.mark.redis
def test_scaling_prints_its_table() -> None:
    out = run_script(
        "scaling.py", "--tenants", "1,50", "--calls", "5", "--rounds", "1", "--memory-tenants", "50"
    )
    assert "memory invoke" in out and "redis store" in out
    for row in ("1 tenants, 1 limit", "50 tenants, 1 limit", "50 tenants, 6 limits"):
        assert row in out
    assert "B per tenant" in out and "one more window" in out
