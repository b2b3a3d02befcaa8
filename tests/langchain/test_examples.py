"""Every offline example and the demo run, and say what they should."""

from __future__ import annotations

import io
import runpy
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from budgetguard.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EXPECT = {
    "quickstart.py": ["remaining $", "refused: Budget exceeded for global"],
    "streaming.py": ["Streaming tokens one by one.", "abandoned stream: charged $", "estimated=True"],
    "per_user_quota.py": ["alice: ok", "alice: refused (user:alice", "bob: ok", "user:carol"],
    "degrade.py": ["refused: Budget exceeded", "gpt-4o-mini", "provider calls: gpt-4o"],
    "structured_output.py": ["name='Ada' age=36", "recorded:"],
    "fastapi_tenants.py": ["as alice: 200", "as alice: 429", "Retry-After", "without x-org-id: 400"],
    "agent_budget.py": [
        "final answer: I have to stop here: this run's budget is exhausted (run:",
        "ended by the budget: True",
        "final answer: Best answer from what I found.",
        "wrapped up: True, ended by the budget: False",
    ],
    "alert_webhook.py": ["webhook got: user:alice passed 50% of its day usd budget", "refused (user:alice)"],
}


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_example_runs(name: str) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    text = out.getvalue()
    for needle in EXPECT[name]:
        assert needle in text, f"{name}: {needle!r} not in output:\n{text}"


def test_every_offline_example_is_smoke_tested() -> None:
    offline = {p.name for p in EXAMPLES.glob("*.py")} - {"openai_real.py"}
    assert offline == set(EXPECT)


def test_demo_shows_admit_degrade_and_refuse() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["demo"]) == 0
    text = out.getvalue()
    lines = [ln for ln in text.splitlines() if ln[:4].strip().isdigit()]
    served = [ln.split()[1] for ln in lines]
    assert served[0] == "gpt-4o" and "gpt-4o-mini" in served and served[-1] == "REFUSED"
    remaining = [ln.split()[-1] for ln in lines if ln.split()[1] != "REFUSED"]
    values = [float(v.lstrip("$")) for v in remaining]
    assert values == sorted(values, reverse=True)  # the budget only shrinks
    assert "Refusal: Budget exceeded" in text and "Total Cost (USD)" in text
