"""wrap() keeps the model's type: mypy --strict over two snippets, and the run-time facts behind it.

``snippets/wrap_ok.py`` must check cleanly (its ``assert_type`` lines fail if a type is wrong or
``Any``); every line of ``snippets/wrap_errors.py`` marked ``# E: code`` must be exactly that error,
and no other line may err, so the check cannot pass by accepting everything.
"""

from __future__ import annotations

import re
from pathlib import Path

import mypy.api
import pytest
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableBinding, RunnableWithFallbacks
from langchain_core.tools import tool
from pydantic import BaseModel

from budgetguard import BudgetGuard
from budgetguard.testing import FakeChatModel

ROOT = Path(__file__).resolve().parents[2]
SNIPPETS = Path(__file__).with_name("snippets")
_LINE = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+): (?P<kind>error|note): (?P<msg>.*?)(?:  \[(?P<code>[\w-]+)\])?$"
)


@pytest.fixture(scope="module")
def mypy_output() -> list[re.Match[str]]:
    files = [str(SNIPPETS / "wrap_ok.py"), str(SNIPPETS / "wrap_errors.py")]
    out, err, _ = mypy.api.run(
        [
            "--strict",
            "--python-version=3.10",
            "--config-file=",  # the snippets alone, not the project's [tool.mypy] packages
            f"--cache-dir={ROOT / '.mypy_cache' / 'typing-snippets'}",
            "--show-error-codes",
            "--no-pretty",
            "--no-error-summary",
            *files,
        ]
    )
    assert not err, err
    lines = [m for raw in out.splitlines() if (m := _LINE.match(raw))]
    assert len(lines) == len(out.splitlines()), f"unparsed mypy output:\n{out}"
    return lines


def of(lines: list[re.Match[str]], name: str, kind: str) -> list[re.Match[str]]:
    return [m for m in lines if Path(m["file"]).name == name and m["kind"] == kind]


def test_the_guarded_model_keeps_its_type(mypy_output: list[re.Match[str]]) -> None:
    errors = of(mypy_output, "wrap_ok.py", "error")
    assert errors == [], "\n".join(m.group(0) for m in errors)
    notes = [m["msg"] for m in of(mypy_output, "wrap_ok.py", "note")]
    assert notes == ['Revealed type is "langchain_openai.chat_models.base.ChatOpenAI"']


def test_wrong_uses_are_still_errors(mypy_output: list[re.Match[str]]) -> None:
    source = (SNIPPETS / "wrap_errors.py").read_text().splitlines()
    expected = {(i, m[1]) for i, text in enumerate(source, 1) if (m := re.search(r"# E: ([\w-]+)", text))}
    found = {(int(m["line"]), m["code"]) for m in of(mypy_output, "wrap_errors.py", "error")}
    assert len(expected) == 4
    assert found == expected


# ---------------------------------------------------------------- what the types say, at run time


class Answer(BaseModel):
    text: str


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def test_a_wrapped_model_is_an_instance_of_its_class() -> None:
    guard = BudgetGuard(limit_usd=5)
    fake = FakeChatModel(tool_args={"text": "hi"})
    llm = guard.wrap(fake)
    assert isinstance(llm, FakeChatModel) and type(llm).__name__ == "FakeChatModel"
    assert llm.bind_tools([add]).invoke("add").tool_calls[0]["name"] == "add"  # type: ignore[attr-defined]
    assert llm.with_structured_output(Answer).invoke("hi") == Answer(text="hi")
    assert fake.calls.count == 2


def test_a_wrapped_binding_or_chain_stays_a_runnable_of_the_same_shape() -> None:
    guard = BudgetGuard(limit_usd=5)
    bound = guard.wrap(FakeChatModel().bind(stop=["\n"]))
    assert isinstance(bound, RunnableBinding) and bound.invoke("hi").content
    chain = guard.wrap(ChatPromptTemplate.from_messages([("user", "{q}")]) | FakeChatModel())
    assert isinstance(chain, Runnable) and chain.invoke({"q": "hi"}).content
    assert guard.remaining().rows[0].spent > 0 and guard.remaining().rows[0].reserved == 0


def test_with_fallbacks_the_typed_methods_work_on_every_candidate() -> None:
    """The one case where the object is not of the model's class: its typed surface still holds."""
    primary = FakeChatModel(model_name="gpt-4o", tool_args={"text": "primary"})
    fallback = FakeChatModel(model_name="gpt-4o-mini", tool_args={"text": "fallback"})
    guard = BudgetGuard(limit_usd=5, fallback=fallback)
    llm = guard.wrap(primary)
    assert isinstance(llm, RunnableWithFallbacks) and not isinstance(llm, FakeChatModel)
    assert llm.model_name == "gpt-4o"  # attributes come from the primary
    assert llm.with_structured_output(Answer).invoke("hi") == Answer(text="primary")
    assert llm.bind_tools([add]).invoke("add").tool_calls[0]["args"] == {"text": "primary"}  # type: ignore[attr-defined]
