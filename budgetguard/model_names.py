"""Which model a call is for: one rule, with the places to look kept as data.

A model name decides the price, so every part of budgetguard must read it the
same way: the first non-empty string found, looking in a fixed order. The key
lists below are that order; the functions only walk them. Pure: no LangChain
import, no I/O (provider facts come from ``providers.py``'s tables).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .providers import MODEL_NAME_PREFIXES, SERVED_NAME_PARTIAL

__all__ = [
    "CALL_PARAM_KEYS",
    "CALL_METADATA_KEYS",
    "CONFIG_ATTRS",
    "SERVED_KEYS",
    "LLM_OUTPUT_KEYS",
    "first_name",
    "name_at",
    "call_model_name",
    "configured_model_name",
    "served_model_name",
    "bare_model_name",
]

#: ``invocation_params`` keys naming the requested model (OpenAI/Anthropic, older clients, Bedrock).
CALL_PARAM_KEYS: tuple[str, ...] = ("model", "model_name", "model_id")
#: Run-``metadata`` keys naming it, read after the invocation parameters.
CALL_METADATA_KEYS: tuple[str, ...] = ("ls_model_name",)
#: Attributes of a chat-model object naming its configured model (``deployment_name``: Azure).
CONFIG_ATTRS: tuple[str, ...] = ("model_name", "model", "model_id", "deployment_name")
#: ``response_metadata`` keys naming the model the provider says served the call.
SERVED_KEYS: tuple[str, ...] = ("model_name", "model", "model_id")
#: ``LLMResult.llm_output`` keys naming the served model.
LLM_OUTPUT_KEYS: tuple[str, ...] = ("model_name",)


def first_name(values: Iterable[object]) -> str | None:
    """The first non-empty ``str`` among ``values``; anything else is skipped, not fatal."""
    for value in values:
        if isinstance(value, str) and value:
            return value
    return None


def name_at(mapping: Mapping[str, Any] | None, keys: Sequence[str]) -> str | None:
    """The first non-empty ``str`` under ``keys`` of ``mapping`` (``None`` if it is no mapping)."""
    if type(mapping) is not dict and not isinstance(mapping, Mapping):
        return None
    get = mapping.get
    for key in keys:  # first_name's loop, without a generator per call
        value = get(key)
        if isinstance(value, str) and value:
            return value
    return None


def call_model_name(
    invocation_params: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    default: str | None = None,
) -> str | None:
    """The model a starting run asks for: invocation params, then run metadata, then ``default``.

    ``default`` is what the caller knows from the model object (see
    ``configured_model_name``), used only when the run itself names nothing.
    """
    return (
        name_at(invocation_params, CALL_PARAM_KEYS)
        or name_at(metadata, CALL_METADATA_KEYS)
        or first_name((default,))
    )


def configured_model_name(model: object) -> str | None:
    """The model a chat-model object is configured for, read from its attributes."""
    return first_name(getattr(model, attr, None) for attr in CONFIG_ATTRS)


def served_model_name(response_metadata: Mapping[str, Any] | None) -> str | None:
    """The model the provider reports in a message's ``response_metadata``.

    ``None`` for integrations that report it on some paths only (ChatMistralAI:
    streams, not invoke), so that every path prices the same, requested name.
    """
    if (type(response_metadata) is dict or isinstance(response_metadata, Mapping)) and response_metadata.get(
        "model_provider"
    ) in SERVED_NAME_PARTIAL:
        return None
    return name_at(response_metadata, SERVED_KEYS)


def bare_model_name(model: str) -> str:
    """``model`` without an API-path prefix (``models/gemini-2.5-flash`` -> ``gemini-2.5-flash``)."""
    if not model.startswith(MODEL_NAME_PREFIXES):  # the common case, in one C call
        return model
    for prefix in MODEL_NAME_PREFIXES:
        if model.startswith(prefix) and len(model) > len(prefix):
            return model[len(prefix) :]
    return model
