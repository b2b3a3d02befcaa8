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
from contextvars import ContextVar
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models import chat_models as _lc
from langchain_core.load import dumps

from ..estimate import CAP_KEYS
from .rawusage import adetailed, araw_details, raw_usage_hooks, with_raw_details
from .traces import aannounce, announce, held, run_manager_of, take_refusal

__all__ = ["cap_field", "cache_will_answer", "fitting_class"]

#: Set by the model's ``generate``/``agenerate`` while LangChain's cache holds every prompt's answer.
cache_will_answer: ContextVar[bool] = ContextVar("budgetguard_cache_will_answer", default=False)
_NOT_PARAMS = ("tags", "metadata", "run_name", "run_id")

#: the subclasses made here: guarding a guarded model again keeps its class
_MADE: set[type[Any]] = set()


def cap_field(cls: type[Any]) -> str | None:
    """The field of a chat-model class that caps its output, if it has one."""
    fields = getattr(cls, "model_fields", {})
    return next((k for k in CAP_KEYS if k in fields), None)


def _handlers(model: BaseChatModel) -> list[Any]:
    cbs = model.callbacks
    return list(cbs if isinstance(cbs, list) else getattr(cbs, "handlers", ()))


def _model_call(model: BaseChatModel, run_manager: Any) -> int | None:
    """A refusal held for this call is raised here (``adapter/traces.py``), inside the model call.

    A call left unreserved for the cache that turned out to miss is reserved now, or raises.
    Returns the lowest output cap the model's handlers fitted this call to (one pass over them).
    """
    if run_manager is None:  # a stream's hook: its stream()'s run manager, a few frames up
        run_manager = run_manager_of(run_manager)
    refused = take_refusal(model, run_manager) if held.waiting else None  # (none held: no call)
    if refused is not None:
        announce(model, run_manager, refused)
        raise refused
    run_id = getattr(run_manager, "run_id", None)  # None in a stream: the call begun in this context
    cap = None
    for h in _handlers(model):
        begins = getattr(h, "model_call", None)
        c = begins(run_id) if callable(begins) else None
        if c is not None and (cap is None or c < cap):
            cap = c
    announce(model, run_manager)
    return cap


async def _amodel_call(model: BaseChatModel, run_manager: Any) -> int | None:
    if run_manager is None:  # a stream's hook: its stream()'s run manager, a few frames up
        run_manager = run_manager_of(run_manager)
    refused = take_refusal(model, run_manager) if held.waiting else None  # (none held: no call)
    if refused is not None:
        await aannounce(model, run_manager, refused)
        raise refused
    run_id = getattr(run_manager, "run_id", None)
    cap = None
    for h in _handlers(model):
        begins = getattr(h, "amodel_call", None)
        c = await begins(run_id) if callable(begins) else None
        if c is not None and (cap is None or c < cap):
            cap = c
    await aannounce(model, run_manager)
    return cap


def _lowered(model: BaseChatModel, field: str | None, kwargs: dict[str, Any], cap: int | None) -> Any:
    """The model to call (a copy with its cap lowered to ``cap``), ``kwargs`` lowered in place; or it."""
    if cap is None or field is None:
        return model
    for key in CAP_KEYS:
        if type(kwargs.get(key)) is int:
            kwargs[key] = min(kwargs[key], cap)
    options = kwargs.get("options")
    if field == "num_predict" and isinstance(options, Mapping):  # ChatOllama: options replace the fields
        kwargs["options"] = {**options, "num_predict": cap}
    return model.model_copy(update={field: cap})


def _may_hit(model: BaseChatModel) -> bool:
    """Whether a cache is set for ``model`` at all: none (the common case) is told without
    ``_hits``' work (``_cache_key``'s llm string, the prompts' serialization)."""
    cache = model.cache
    return cache is not False and (cache is not None or get_llm_cache() is not None)


def _cache_key(model: BaseChatModel, stop: Any, kwargs: dict[str, Any]) -> tuple[BaseCache, str] | None:
    """The cache and llm string ``_generate_with_cache`` will use, as ``generate`` passes them on."""
    cache = model.cache
    # (None, the common case, is told without an isinstance check against the BaseCache ABC)
    llm_cache = get_llm_cache() if cache is None or not isinstance(cache, BaseCache) else cache
    if cache is False or llm_cache is None:
        return None
    kw = {k: v for k, v in kwargs.items() if k not in _NOT_PARAMS}
    kw.pop("ls_structured_output_format", None) or kw.pop("structured_output_format", None)
    return llm_cache, model._get_llm_string(stop=stop, **kw)


def _prompts(messages: Any) -> list[str]:
    normalize = getattr(_lc, "_normalize_messages", lambda m: m)
    return [
        dumps([m.model_copy(update={"id": None}) if getattr(m, "id", None) is not None else m for m in ms])
        for ms in (normalize(x) for x in messages)
    ]


def _hits(model: BaseChatModel, messages: Any, stop: Any, kwargs: dict[str, Any]) -> bool:
    """Whether the cache answers every prompt; any doubt is a miss (the call is then reserved)."""
    try:
        key = _cache_key(model, stop, kwargs)
        return key is not None and all(isinstance(key[0].lookup(p, key[1]), list) for p in _prompts(messages))
    except Exception:
        return False


async def _ahits(model: BaseChatModel, messages: Any, stop: Any, kwargs: dict[str, Any]) -> bool:
    try:
        key = _cache_key(model, stop, kwargs)
        if key is None:
            return False
        return all([isinstance(await key[0].alookup(p, key[1]), list) for p in _prompts(messages)])
    except Exception:
        return False


def _generate_hooks(base: type[BaseChatModel]) -> dict[str, Any]:
    """``generate``/``agenerate`` that tell the start event a cache will answer (nothing to reserve)."""

    def generate(self: Any, messages: Any, stop: Any = None, callbacks: Any = None, **kwargs: Any) -> Any:
        hit = _may_hit(self) and _hits(self, messages, stop, kwargs)
        if not hit and not cache_will_answer.get():  # the common case: it says False already
            return base.generate(self, messages, stop, callbacks, **kwargs)
        token = cache_will_answer.set(hit)
        try:
            return base.generate(self, messages, stop, callbacks, **kwargs)
        finally:
            cache_will_answer.reset(token)

    async def agenerate(
        self: Any, messages: Any, stop: Any = None, callbacks: Any = None, **kwargs: Any
    ) -> Any:
        hit = _may_hit(self) and await _ahits(self, messages, stop, kwargs)
        if not hit and not cache_will_answer.get():
            return await base.agenerate(self, messages, stop, callbacks, **kwargs)
        token = cache_will_answer.set(hit)
        try:
            return await base.agenerate(self, messages, stop, callbacks, **kwargs)
        finally:
            cache_will_answer.reset(token)

    return {"generate": generate, "agenerate": agenerate}


def _hooks(base: type[BaseChatModel], field: str | None) -> dict[str, Any]:
    raw = bool(raw_usage_hooks(base))  # its stream drops usage details: kept (adapter/rawusage.py)

    def _generate(self: Any, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        target = _lowered(self, field, kwargs, _model_call(self, run_manager))
        return base._generate(target, messages, stop, run_manager, **kwargs)

    async def _agenerate(
        self: Any, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        target = _lowered(self, field, kwargs, await _amodel_call(self, run_manager))
        return await base._agenerate(target, messages, stop, run_manager, **kwargs)

    def _stream(
        self: Any, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[Any]:
        target = _lowered(self, field, kwargs, _model_call(self, run_manager))
        chunks = base._stream(target, messages, stop, run_manager, **kwargs)
        yield from with_raw_details(chunks) if raw else chunks

    async def _astream(
        self: Any, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        target = _lowered(self, field, kwargs, await _amodel_call(self, run_manager))
        teed = araw_details(target) if raw else None
        if teed is None:
            async for chunk in base._astream(target, messages, stop, run_manager, **kwargs):
                yield chunk
            return
        async for chunk in adetailed(base._astream(teed[0], messages, stop, run_manager, **kwargs), teed[1]):
            yield chunk

    hooks = {"_generate": _generate, "_agenerate": _agenerate, "_stream": _stream, "_astream": _astream}
    # Only what the class implements: BaseChatModel tells native streaming by whether _stream is its own.
    return {n: f for n, f in hooks.items() if getattr(base, n) is not getattr(BaseChatModel, n)}


@functools.cache
def fitting_class(base: type[BaseChatModel]) -> type[BaseChatModel]:
    """``base``'s subclass that sends fitted caps and tells the guard of cache hits (made once)."""
    if base in _MADE:
        return base
    ns: dict[str, Any] = {
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        **_generate_hooks(base),
        **_hooks(base, cap_field(base)),
        **raw_usage_hooks(base),
    }
    made: type[BaseChatModel] = type(base.__name__, (base,), ns)
    _MADE.add(made)
    return made
