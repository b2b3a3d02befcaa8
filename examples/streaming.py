"""Streaming: usage is summed from the stream's chunks, and an abandoned stream is still charged."""

from budgetguard import BudgetGuard
from budgetguard.testing import FakeChatModel

records = []
guard = BudgetGuard(limit_usd=1, on_record=records.append)
llm = guard.wrap(FakeChatModel(model_name="gpt-4o-mini", responses=["Streaming tokens one by one."]))

print("".join(chunk.content for chunk in llm.stream("Say something")))
print(f"full stream: {records[-1].usage.output_tokens} output tokens, ${records[-1].cost_usd}")

stream = llm.stream("Say something else")
next(stream)
stream.close()  # the consumer walks away after one chunk
print(f"abandoned stream: charged ${records[-1].cost_usd} (estimated={records[-1].estimated})")
print(guard.remaining())
