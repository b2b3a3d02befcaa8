"""``budgetguard demo``: the guard at work on a simulated model, offline."""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any, TextIO

from ..errors import BudgetExceeded
from ..guard import BudgetGuard
from ..records import CallRecord
from ..stores import MemoryStore
from ..testing import FakeChatModel
from ..tracking import track_usage
from ..units import format_usd

__all__ = ["add_commands", "demo"]


def demo(out: TextIO | None = None) -> int:
    """Admit calls, shrink the budget, degrade to the cheaper model, then refuse."""
    write = (out or sys.stdout).write
    primary = FakeChatModel(
        model_name="gpt-4o", max_tokens=300, output_tokens=250, responses=["A thorough answer."]
    )
    cheap = FakeChatModel(
        model_name="gpt-4o-mini", max_tokens=2000, output_tokens=1500, responses=["A shorter answer."]
    )
    records: list[CallRecord] = []
    # Always in memory, whatever $BUDGETGUARD_STORE says: a demo must never spend a real budget.
    guard = BudgetGuard(
        limit_usd=Decimal("0.03"),
        fallback=cheap,
        degrade_at=0.5,
        on_record=records.append,
        store=MemoryStore(),
    )
    llm = guard.wrap(primary)
    write("budgetguard demo: a simulated gpt-4o, a gpt-4o-mini fallback, a $0.03 budget, degrade at 50%\n")
    write("(offline: no API key, in-memory store)\n\n")
    write(f"{'call':>4}  {'served by':<12} {'reserved':>12} {'cost':>12} {'remaining':>12}\n")
    refused: BudgetExceeded | None = None
    with track_usage() as usage:
        for i in range(1, 100):
            records.clear()
            try:
                llm.invoke(f"Question {i}: how do budgets work?")
            except BudgetExceeded as exc:
                refused = exc
                write(f"{i:>4}  REFUSED before any provider call\n")
                break
            rec = records[-1]
            rem = guard.remaining().remaining_usd
            assert rem is not None
            write(
                f"{i:>4}  {rec.model:<12} {format_usd(rec.reserved_usd):>12} "
                f"{format_usd(rec.cost_usd):>12} {format_usd(rem):>12}\n"
            )
    write("\nguard.remaining():\n" + str(guard.remaining()) + "\n\n")
    if refused is not None:
        write(f"Refusal: {refused}\n\n")
    write("track_usage():\n" + str(usage) + "\n\n")
    write(f"Provider calls made: gpt-4o {primary.calls.count}, gpt-4o-mini {cheap.calls.count}\n")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the offline demo (no API key, no store)")
    p.set_defaults(run=lambda args: demo())
