"""The small adapter mechanism the middleware rests on: scope values supplied by the context.

``budgetguard.adapter.handler.context_scopes`` holds values merged into every
guarded call's metadata in that context, over the run's own metadata and
under ``enforce()``'s. The extra's import error names the fix.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest

from budgetguard import BudgetGuard, CallRecord, Limit, MissingScope
from budgetguard.adapter.handler import context_scopes
from budgetguard.testing import FakeChatModel


def test_context_values_fill_scopes_over_the_run_metadata_and_under_enforce() -> None:
    records: list[CallRecord] = []
    guard = BudgetGuard(limits=[Limit(usd=1, scope="run:{run_id}")], on_record=records.append)
    llm = guard.wrap(FakeChatModel())
    with pytest.raises(MissingScope):
        llm.invoke("hi")
    token = context_scopes.set({"run_id": "from-context"})
    try:
        llm.invoke("hi", {"metadata": {"run_id": "from-metadata"}})
        with guard.enforce(run_id="from-enforce"):
            FakeChatModel().invoke("hi")
    finally:
        context_scopes.reset(token)
    assert [r.metadata["run_id"] for r in records] == ["from-context", "from-enforce"]
    assert Decimal(guard.remaining(run_id="from-context").rows[0].spent) == records[0].cost_usd
    assert guard.remaining(run_id="from-metadata").rows[0].spent == 0


def test_budgetguard_agents_without_langchain_says_which_extra_to_install() -> None:
    code = "import sys; sys.modules['langchain'] = None; import budgetguard.agents"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "pip install 'langchain-budgetguard[agents]'" in out.stderr
