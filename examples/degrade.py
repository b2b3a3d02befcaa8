"""Degrade: past 50% of the budget, calls go to the cheaper model; when nothing fits, refuse."""

from budgetguard import BudgetExceeded, BudgetGuard
from budgetguard.testing import FakeChatModel

primary = FakeChatModel(model_name="gpt-4o", max_tokens=300, output_tokens=250)
cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=2000, output_tokens=1500)
served = []
guard = BudgetGuard(
    limit_usd="0.03",
    fallback=cheap,
    degrade_at=0.5,
    on_record=lambda r: served.append(r.model) if r.outcome != "refused" else None,  # refusals too
)
llm = guard.wrap(primary)

try:
    while True:
        llm.invoke("Another question")
except BudgetExceeded as exc:
    print("refused:", exc)

print("served by:", ", ".join(served))
print(f"provider calls: gpt-4o {primary.calls.count}, gpt-4o-mini {cheap.calls.count}")
