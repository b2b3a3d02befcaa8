"""Placing a guard's handler on a chat model, or on a chain or agent around one.

The handler goes on the chat model itself (``model_copy(update={"callbacks":
...})``): it survives ``bind_tools``, ``with_structured_output`` and streaming,
and its ``on_chat_model_start`` runs before the provider is contacted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.runnables import Runnable, RunnableBinding

from ..engine import Engine, ModelHint
from ..errors import ConfigError
from ..estimate import configured_max_output_tokens
from ..model_names import configured_model_name
from .candidates import Role
from .compat import detection_available
from .fit import cap_field, fitting_class
from .handler import GUARDS_KEY, BudgetGuardCallback, guard_callback
from .reach import reach_models

__all__ = ["guard_runnable", "model_hint"]


def model_hint(
    model: BaseLanguageModel[Any], soft_ppm: int | None, fit: bool = False, wait: bool = True
) -> ModelHint:
    """What the model object says of itself, for calls whose parameters do not say."""
    name = configured_model_name(model)
    provider = None
    try:
        provider = model._get_ls_params().get("ls_provider")
    except Exception:
        provider = None
    profile = getattr(model, "profile", None)
    profile_max = profile.get("max_output_tokens") if isinstance(profile, Mapping) else None
    # the model's own cap (ChatOllama's num_predict is sent but not in invocation_params) wins
    profile_max = configured_max_output_tokens(model) or profile_max
    cap = profile_max if isinstance(profile_max, int) else None
    return ModelHint(name, provider, cap, soft_ppm, fit, wait)


def _with_handler(
    model: BaseLanguageModel[Any], handler: BudgetGuardCallback, tag: str, fitting: type[Any] | None
) -> BaseLanguageModel[Any]:
    cbs = model.callbacks
    if cbs is None:
        new: Any = [handler]
    elif isinstance(cbs, list):
        new = [*cbs, handler]
    elif isinstance(cbs, BaseCallbackManager):
        new = cbs.copy()
        new.add_handler(handler, inherit=False)
    else:  # pragma: no cover - LangChain allows nothing else
        raise ConfigError(f"unsupported callbacks on {type(model).__name__}: {cbs!r}")
    # Tells a handler of the same guard on a chain around the model to leave its calls to this one.
    meta = dict(model.metadata or {})
    meta[GUARDS_KEY] = [*meta.get(GUARDS_KEY, ()), tag]
    update: dict[str, Any] = {"callbacks": new, "metadata": meta}
    # Usage in streams only arrives when asked for (ChatOpenAI with a custom base_url...).
    if "stream_usage" in type(model).model_fields and getattr(model, "stream_usage", None) is not True:
        update["stream_usage"] = True
    copy = model.model_copy(update=update)
    if fitting is not None:  # the same fields, in the subclass that sends a fitted cap (adapter/fit.py)
        copy.__class__ = fitting
    return copy


def guard_runnable(
    engine: Engine,
    runnable: Runnable[Any, Any],
    soft_ppm: int | None,
    role: Role | None = None,
    fit: bool = True,
) -> Runnable[Any, Any]:
    """``runnable`` with the engine's handler on its chat model (or on every model inside it).

    ``role``: the model's place in a fallback chain, so a refusal says why each candidate was refused.
    ``fit``: the model may send a fitted output cap (``fit_max_tokens``) if its class has a cap field.
    """
    if isinstance(runnable, BaseLanguageModel):
        fitting = None
        # A handler run inline (in the caller's context) is what lets the model find its call.
        inline = not engine.store.blocking or detection_available()
        if inline and isinstance(runnable, BaseChatModel):
            fitting = fitting_class(type(runnable))
        fits = fitting is not None and fit and engine.flows.fit_max_tokens and cap_field(fitting) is not None
        # In a fallback chain, only the last candidate waits out contention: the next one is tried instead.
        hint = model_hint(runnable, soft_ppm, fits, wait=role is None or role.last)
        engine.note_model(hint.model, hint.provider)
        handler = guard_callback(engine, hint, role=role, late=fitting is not None)
        return _with_handler(runnable, handler, engine.tag, fitting)
    if isinstance(runnable, RunnableBinding) and isinstance(runnable.bound, BaseLanguageModel):
        bound = guard_runnable(engine, runnable.bound, soft_ppm, role, fit)
        return runnable.model_copy(update={"bound": bound})
    if soft_ppm is not None:
        raise ConfigError(
            "fallback= and degrade_at= work on a chat model; wrap the model inside your chain, "
            f"not the whole {type(runnable).__name__}"
        )
    # A chain or agent: inheritable callbacks reach every model call inside it; the models the
    # chain is composed of are guarded as models too, so their calls can be fitted (adapter/reach.py).
    if engine.flows.fit_max_tokens and (not engine.store.blocking or detection_available()):
        runnable = reach_models(runnable, lambda m: _model_of_chain(engine, m)) or runnable
    return runnable.with_config(callbacks=[guard_callback(engine)])


def _model_of_chain(engine: Engine, model: BaseChatModel) -> Runnable[Any, Any] | None:
    """A chat model inside a chain, guarded; None if this guard already guards it."""
    if engine.tag in ((model.metadata or {}).get(GUARDS_KEY) or ()):
        return None
    return guard_runnable(engine, model, None)
