"""Structured output and tools keep working through the guard (usage is still recorded)."""

from pydantic import BaseModel

from budgetguard import BudgetGuard
from budgetguard.testing import FakeChatModel


class Person(BaseModel):
    name: str
    age: int


records = []
guard = BudgetGuard(limit_usd=1, on_record=records.append)
llm = guard.wrap(FakeChatModel(model_name="gpt-4o-mini", tool_args={"name": "Ada", "age": 36}))

person = llm.with_structured_output(Person).invoke("Who wrote the first program?")
print(person)
print(f"recorded: {records[-1].usage.total_tokens} tokens, ${records[-1].cost_usd}")
