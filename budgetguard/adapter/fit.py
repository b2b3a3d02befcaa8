"""Sending a fitted output cap: the model call itself, since callbacks cannot change a request.

A guarded model whose call the guard fits (``fit_max_tokens``) is an instance
of a small subclass of its own class, made once per class and named after it,
so ``isinstance``, pydantic fields, ``model_copy``, ``bind_tools`` and
``with_structured_output`` behave as before. Its ``_generate``, ``_agenerate``,
``_stream`` and ``_astream`` (only those the class implements itself) ask the
guard's handler for the cap it fitted the call to (by ``run_manager.run_id``;
the reservation is made in ``on_chat_model_start``, before they run). With a
cap, the call goes to a copy of the model with its cap field lowered (the
provider's client turns it into ``max_tokens``, ``max_completion_tokens``,
``max_output_tokens``, ``num_predict``...), and a cap passed with the call
(``bind(max_tokens=...)``, Ollama's ``options``) is lowered too.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel

from ..estimate import CAP_KEYS

__all__ = ["cap_field", "fitting_class"]

#: the subclasses made here: guarding a guarded model again keeps its class
_MADE: set[type[Any]] = set()


def cap_field(cls: type[Any]) -> str | None:
    """The field of a chat-model class that caps its output, if it has one."""
    fields = getattr(cls, "model_fields", {})
    return next((k for k in CAP_KEYS if k in fields), None)


def _fitted_cap(model: BaseChatModel, run_manager: Any) -> int | None:
    run_id = getattr(run_manager, "run_id", None)  # None in a stream: the call begun in this context
    cbs = model.callbacks
    handlers = cbs if isinstance(cbs, list) else getattr(cbs, "handlers", ())
    caps = [c for h in handlers if (c := _cap_of(h, run_id)) is not None]
    return min(caps) if caps else None


def _cap_of(handler: Any, run_id: Any) -> int | None:
    ask = getattr(handler, "fitted_cap", None)
    return ask(run_id) if callable(ask) else None


def _lowered(model: BaseChatModel, field: str, run_manager: Any, kwargs: dict[str, Any]) -> Any:
    """The model to call (a copy with its cap lowered), ``kwargs`` lowered in place; or the model."""
    cap = _fitted_cap(model, run_manager)
    if cap is None:
        return model
    for key in CAP_KEYS:
        if type(kwargs.get(key)) is int:
            kwargs[key] = min(kwargs[key], cap)
    options = kwargs.get("options")
    if field == "num_predict" and isinstance(options, Mapping):  # ChatOllama: options replace the fields
        kwargs["options"] = {**options, "num_predict": cap}
    return model.model_copy(update={field: cap})


def _hooks(base: type[BaseChatModel], field: str) -> dict[str, Any]:
    def _generate(self: Any, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        target = _lowered(self, field, run_manager, kwargs)
        return base._generate(target, messages, stop, run_manager, **kwargs)

    async def _agenerate(
        self: Any, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        target = _lowered(self, field, run_manager, kwargs)
        return await base._agenerate(target, messages, stop, run_manager, **kwargs)

    def _stream(
        self: Any, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[Any]:
        target = _lowered(self, field, run_manager, kwargs)
        yield from base._stream(target, messages, stop, run_manager, **kwargs)

    async def _astream(
        self: Any, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        target = _lowered(self, field, run_manager, kwargs)
        async for chunk in base._astream(target, messages, stop, run_manager, **kwargs):
            yield chunk

    hooks = {"_generate": _generate, "_agenerate": _agenerate, "_stream": _stream, "_astream": _astream}
    # Only what the class implements: BaseChatModel tells native streaming by whether _stream is its own.
    return {n: f for n, f in hooks.items() if getattr(base, n) is not getattr(BaseChatModel, n)}


@functools.cache
def fitting_class(base: type[BaseChatModel]) -> type[BaseChatModel] | None:
    """``base``'s subclass that sends fitted caps (made once); None if ``base`` has no cap field."""
    if base in _MADE:
        return base
    field = cap_field(base)
    if field is None:
        return None
    ns: dict[str, Any] = {
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        **_hooks(base, field),
    }
    made: type[BaseChatModel] = type(base.__name__, (base,), ns)
    _MADE.add(made)
    return made
