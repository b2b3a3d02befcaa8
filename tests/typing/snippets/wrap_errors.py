"""Each marked line must be an error: the types are not Any."""

from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from budgetguard import BudgetGuard
from budgetguard.testing import FakeChatModel

guard = BudgetGuard(limit_usd=5)
llm = guard.wrap(ChatOpenAI(model="gpt-4o-mini"))

llm.no_such_method()  # E: attr-defined
not_a_fake: FakeChatModel = llm  # E: assignment
chain = guard.wrap(ChatPromptTemplate.from_messages([("user", "{q}")]) | llm)
chain.bind_tools([])  # E: attr-defined (a chain has no tools to bind)
guard.wrap("gpt-4o")  # E: call-overload (wrap() needs a Runnable)
