"""Quickstart: a $0.01 budget on a chat model; the call that would break it is refused."""

from budgetguard import BudgetExceeded, BudgetGuard
from budgetguard.testing import FakeChatModel

guard = BudgetGuard(limit_usd="0.01")
llm = guard.wrap(FakeChatModel(model_name="gpt-4o", max_tokens=500, output_tokens=400))

for i in range(10):
    try:
        llm.invoke(f"Question {i}")
    except BudgetExceeded as exc:
        print("refused:", exc)
        break
    print(f"call {i}: remaining ${guard.remaining().remaining_usd}")
