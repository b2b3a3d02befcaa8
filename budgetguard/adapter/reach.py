"""The chat models a guard on a whole chain can reach, so their calls are fitted too.

A guard on a chain puts a handler on the chain, which sees every model call
inside it but cannot change a request (``adapter/fit.py``). Where the chain is
made of LangChain's own composites (``prompt | llm``, ``RunnableParallel``,
``.bind(...)``/``.with_config(...)``, ``.with_fallbacks(...)``), the models in
it are reached and guarded as ``wrap()`` guards a model: a copy of the chain is
returned with them replaced, and their calls can be fitted. A model hidden
inside a function (``RunnableLambda``), an agent or a graph cannot be reached:
the chain's handler still checks its calls, unfitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableParallel,
    RunnableSequence,
    RunnableWithFallbacks,
)

__all__ = ["reach_models"]

#: How deep composites are looked into: deeper ones are left to the chain's handler.
MAX_DEPTH = 32

#: Guards a chat model, or returns None to leave it as it is (already guarded).
Guard = Callable[[BaseChatModel], Runnable[Any, Any] | None]


def reach_models(runnable: Runnable[Any, Any], guard: Guard, depth: int = 0) -> Runnable[Any, Any] | None:
    """A copy of ``runnable`` with each chat model it is composed of guarded; None if none is reached."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(runnable, BaseChatModel):
        return guard(runnable)
    parts = _parts(runnable)
    if parts is None:
        return None
    new = {name: _reach_part(value, guard, depth + 1) for name, value in parts.items()}
    if all(n is None for n in new.values()):
        return None
    update = {name: _merge(parts[name], n) for name, n in new.items() if n is not None}
    return runnable.model_copy(update=update)  # type: ignore[attr-defined, no-any-return]


def _parts(runnable: Runnable[Any, Any]) -> dict[str, Any] | None:
    """The composite's fields that hold runnables (exact LangChain classes: a subclass may differ)."""
    kind = type(runnable)
    r: Any = runnable
    if kind is RunnableSequence:
        return {"first": r.first, "middle": list(r.middle), "last": r.last}
    if kind is RunnableParallel:
        return {"steps__": dict(r.steps__)}
    if isinstance(r, RunnableBinding):  # and its subclasses, such as the one chat models' bind() makes
        return {"bound": r.bound}
    if kind is RunnableWithFallbacks:
        return {"runnable": r.runnable, "fallbacks": list(r.fallbacks)}
    return None


def _reach_part(value: Any, guard: Guard, depth: int) -> Any:
    """A field's value with its models guarded (None if none was reached)."""
    if isinstance(value, Runnable):
        return reach_models(value, guard, depth)
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    reached = {k: reach_models(v, guard, depth) for k, v in items}
    return None if all(r is None for r in reached.values()) else reached


def _merge(old: Any, reached: Any) -> Any:
    """The field's new value: each reached runnable in place of the old one."""
    if isinstance(old, Runnable):
        return reached
    if isinstance(old, dict):
        return {k: reached[k] if reached.get(k) is not None else v for k, v in old.items()}
    return [reached[i] if reached.get(i) is not None else v for i, v in enumerate(old)]
