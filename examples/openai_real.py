"""The real OpenAI API (needs OPENAI_API_KEY and network; not run in CI).

pip install langchain-openai
OPENAI_API_KEY=sk-... python examples/openai_real.py
"""

from langchain_openai import ChatOpenAI

from budgetguard import BudgetExceeded, BudgetGuard, track_usage

guard = BudgetGuard(limit_usd="0.01")
llm = guard.wrap(ChatOpenAI(model="gpt-4o-mini", max_tokens=200))

with track_usage() as usage:
    try:
        print(llm.invoke("Name three prime numbers.").content)
        for chunk in llm.stream("And three more?"):
            print(chunk.content, end="", flush=True)
        print()
    except BudgetExceeded as exc:
        print("refused:", exc)

print(usage)
print(guard.remaining())
