"""``llm | guard``: the guard takes part where the chain is composed, not after the model runs.

``a | b`` is decided by the left operand's ``__or__`` (``Runnable.__or__``, and
``RunnableSequence.__or__``, which flattens); ``a.pipe(b, ...)`` by
``Runnable.pipe``. Each builds a ``RunnableSequence``, inside which a guard
would run only after the model has been paid for. So these three are wrapped,
once, at import: when an operand is of an installed kind and says it composes
(a ``BudgetGuard`` in the pipe form), it is handed what lies to its left and
guards it (``guard.wrap(left)``, so every model call there is checked before it
is sent). Otherwise the original method runs, with the same arguments, and its
result is returned as is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from langchain_core.runnables import Runnable, RunnableSequence

__all__ = ["install", "originals"]

#: Where a wrapped method keeps the one it wraps: never wrapped twice.
_ORIGINAL = "__budgetguard_original__"


#: The classes whose ``compose_after(left)`` is asked first; ``None`` leaves ``|`` to LangChain.
_kinds: tuple[type, ...] = ()


def _composed(left: Runnable[Any, Any], other: object) -> Runnable[Any, Any] | None:
    if not isinstance(other, _kinds):
        return None
    composed: Runnable[Any, Any] | None = other.compose_after(left)  # type: ignore[attr-defined]
    return composed


def _wrap_or(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def __or__(self: Runnable[Any, Any], other: Any) -> Any:
        composed = _composed(self, other)
        return original(self, other) if composed is None else composed

    setattr(__or__, _ORIGINAL, original)
    return __or__


def _wrap_pipe(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def pipe(self: Runnable[Any, Any], *others: Any, name: str | None = None) -> Any:
        if not any(isinstance(o, _kinds) for o in others):
            return original(self, *others, name=name)
        # Fold left to right: each guard guards everything before it.
        head: Runnable[Any, Any] = self
        rest: list[Any] = []
        for i, other in enumerate(others):
            if isinstance(other, _kinds):
                last = i == len(others) - 1
                composed = _composed(
                    original(head, *rest, name=name if last else None) if rest else head, other
                )
                if composed is not None:
                    head, rest = composed, []
                    continue
            rest.append(other)
        return original(head, *rest, name=name) if rest else head

    setattr(pipe, _ORIGINAL, original)
    return pipe


def install(kind: type) -> None:
    """Let ``kind`` (with a ``compose_after`` method) take part in ``|`` and ``pipe``; idempotent."""
    global _kinds
    if kind not in _kinds:
        _kinds = (*_kinds, kind)
    for cls, name, wrap in (
        (Runnable, "__or__", _wrap_or),
        (RunnableSequence, "__or__", _wrap_or),
        (Runnable, "pipe", _wrap_pipe),
    ):
        current = cls.__dict__[name]
        if not hasattr(current, _ORIGINAL):
            setattr(cls, name, wrap(current))


def originals() -> dict[str, Callable[..., Any]]:
    """The LangChain methods as they were before ``install`` (for tests and debugging)."""
    return {
        f"{cls.__name__}.{name}": getattr(cls.__dict__[name], _ORIGINAL, cls.__dict__[name])
        for cls, name in ((Runnable, "__or__"), (RunnableSequence, "__or__"), (Runnable, "pipe"))
    }
