"""Must type-check cleanly under mypy --strict: wrap() keeps the model's own type."""

from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel
from typing_extensions import assert_type, reveal_type

from budgetguard import BudgetGuard
from budgetguard.testing import FakeChatModel


class Answer(BaseModel):
    text: str


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


guard = BudgetGuard(limit_usd=5)

llm = guard.wrap(ChatOpenAI(model="gpt-4o-mini"))
assert_type(llm, ChatOpenAI)
model_name: str = llm.model_name
with_tools = llm.bind_tools([add])
assert_type(with_tools, Runnable[LanguageModelInput, AIMessage])
structured = llm.with_structured_output(Answer)
as_chat_openai: ChatOpenAI = guard.wrap(ChatOpenAI(model="gpt-4o"))

fake = guard.wrap(FakeChatModel())
assert_type(fake, FakeChatModel)
reply: BaseMessage = fake.invoke("hi")

prompt = ChatPromptTemplate.from_messages([("user", "{q}")])
chain = guard.wrap(prompt | ChatOpenAI(model="gpt-4o-mini"))
assert_type(chain, Runnable[dict[str, Any], AIMessage])

bound = guard.wrap(ChatOpenAI().bind(stop=["\n"]))
assert_type(bound, Runnable[LanguageModelInput, AIMessage])

reveal_type(llm)
