"""Multi-tenant: a daily quota per user and a monthly one per org, picked from run metadata."""

from budgetguard import BudgetExceeded, BudgetGuard, Limit
from budgetguard.testing import FakeChatModel

guard = BudgetGuard(
    limits=[
        Limit(requests=3, per="day", scope="user:{user_id}"),
        Limit(usd="5", per="month", scope="org:{org_id}"),
    ]
)
llm = guard.wrap(FakeChatModel(model_name="gpt-4o-mini"))

for user in ("alice", "alice", "bob", "alice", "alice"):
    config = {"metadata": {"user_id": user, "org_id": "acme"}}
    try:
        llm.invoke("Hello", config=config)
        print(f"{user}: ok")
    except BudgetExceeded as exc:
        print(f"{user}: refused ({exc.scope}, {exc.remaining} left, resets {exc.resets_at:%Y-%m-%d})")

# Or without touching the model: apply the guard to everything inside a block.
with guard.enforce(user_id="carol", org_id="acme"):
    FakeChatModel(model_name="gpt-4o-mini").invoke("Hello from carol")

print(guard.remaining(user_id="alice", org_id="acme"))
print(guard.remaining(user_id="carol", org_id="acme"))
