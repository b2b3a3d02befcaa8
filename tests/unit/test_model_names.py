"""One model-name rule (``budgetguard/model_names.py``), checked against the three it replaces.

The engine's and the guard's old pickers are kept here as oracles: the
resolver must agree with them on every input. The tracker's old picker is
kept too, to pin exactly where it differed (it skipped ``model_id`` and gave
up at the first truthy non-string).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from budgetguard.model_names import (
    CALL_METADATA_KEYS,
    CALL_PARAM_KEYS,
    CONFIG_ATTRS,
    call_model_name,
    configured_model_name,
    first_name,
    name_at,
    served_model_name,
)
from budgetguard.usage import served_model, usage_from_result

# ------------------------------------------------------------- oracles (as at eecfe85)


def _first_str(*values: Any) -> str | None:
    for v in values:
        if isinstance(v, str) and v:
            return v
    return None


def old_engine(params: dict[str, Any], metadata: dict[str, Any], hint_model: Any) -> str | None:
    return _first_str(
        params.get("model"),
        params.get("model_name"),
        params.get("model_id"),
        metadata.get("ls_model_name"),
        hint_model,
    )


def old_tracker(params: dict[str, Any], meta: dict[str, Any]) -> str | None:
    model = params.get("model") or params.get("model_name") or meta.get("ls_model_name")
    return model if isinstance(model, str) else None


def old_guard(model: object) -> str | None:
    for attr in ("model_name", "model", "model_id", "deployment_name"):
        v = getattr(model, attr, None)
        if isinstance(v, str) and v:
            return v
    return None


def old_served(meta: dict[str, Any]) -> str | None:
    for key in ("model_name", "model", "model_id"):
        v = meta.get(key)
        if isinstance(v, str) and v:
            return v
    return None


# ------------------------------------------------------------- units


def test_first_name_skips_empty_and_non_strings() -> None:
    assert first_name([None, "", 3, b"x", ["gpt"], "gpt-4o", "later"]) == "gpt-4o"
    assert first_name([]) is None
    assert first_name([None, ""]) is None


def test_name_at_reads_keys_in_order_and_tolerates_non_mappings() -> None:
    assert name_at({"b": "B", "a": "A"}, ("a", "b")) == "A"
    assert name_at({"a": "", "b": "B"}, ("a", "b")) == "B"
    assert name_at(None, ("a",)) is None
    assert name_at("a", ("a",)) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "params, metadata, default, expected",
    [
        ({"model": "gpt-4o", "model_name": "x"}, {"ls_model_name": "y"}, "z", "gpt-4o"),
        ({"model_name": "claude"}, {"ls_model_name": "y"}, None, "claude"),
        ({"model_id": "anthropic.claude-v2"}, {}, None, "anthropic.claude-v2"),
        ({"model": ""}, {"ls_model_name": "from-meta"}, None, "from-meta"),
        ({"model": 5}, {}, "from-object", "from-object"),
        (None, None, "from-object", "from-object"),
        (None, None, "", None),
        ({}, {}, None, None),
    ],
)
def test_call_model_name(params: Any, metadata: Any, default: Any, expected: str | None) -> None:
    assert call_model_name(params, metadata, default) == expected


class _Model:
    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


def test_configured_model_name_reads_attributes_in_order() -> None:
    assert configured_model_name(_Model(model="gpt-4o", model_name="")) == "gpt-4o"
    assert configured_model_name(_Model(deployment_name="my-azure-gpt")) == "my-azure-gpt"
    assert configured_model_name(_Model(model_id="anthropic.claude-v2", model=None)) == "anthropic.claude-v2"
    assert configured_model_name(object()) is None


def test_served_model_name_and_its_users() -> None:
    assert served_model_name({"model": "gpt-4o-2024", "model_name": ""}) == "gpt-4o-2024"
    assert served_model_name(None) is None
    msg = AIMessage(content="hi", response_metadata={"model_id": "anthropic.claude-v2"})
    assert served_model(msg) == "anthropic.claude-v2"
    # llm_output is read for model_name only, as before
    result = LLMResult(generations=[[]], llm_output={"model": "not-this", "model_name": "this"})
    assert usage_from_result(result) == (None, "this")
    assert usage_from_result(LLMResult(generations=[[]], llm_output={"model": "x"})) == (None, None)
    gen = ChatGeneration(message=AIMessage(content="hi", response_metadata={"model_name": "served"}))
    assert usage_from_result(LLMResult(generations=[[gen]]))[1] == "served"


def test_key_lists_are_the_documented_order() -> None:
    assert CALL_PARAM_KEYS == ("model", "model_name", "model_id")
    assert CALL_METADATA_KEYS == ("ls_model_name",)
    assert CONFIG_ATTRS == ("model_name", "model", "model_id", "deployment_name")


# ------------------------------------------------------------- against the oracles

value = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(["gpt-4o", "claude-3-5-haiku-latest", "anthropic.claude-v2"]),
    st.integers(-1, 2),
    st.booleans(),
    st.lists(st.just("m"), max_size=1),
)
params_st = st.fixed_dictionaries(
    {}, optional={k: value for k in ("model", "model_name", "model_id", "tools")}
)
meta_st = st.fixed_dictionaries({}, optional={"ls_model_name": value, "ls_provider": value})
PROP = settings(max_examples=500, deadline=None, database=None)


@PROP
@given(params=params_st, metadata=meta_st, hint=value)
def test_call_model_name_is_the_engines_rule(
    params: dict[str, Any], metadata: dict[str, Any], hint: Any
) -> None:
    assert call_model_name(params, metadata, hint) == old_engine(params, metadata, hint)


@PROP
@given(attrs=st.fixed_dictionaries({}, optional={a: value for a in (*CONFIG_ATTRS, "other")}))
def test_configured_model_name_is_the_guards_rule(attrs: dict[str, Any]) -> None:
    model = _Model(**attrs)
    assert configured_model_name(model) == old_guard(model)


@PROP
@given(meta=st.fixed_dictionaries({}, optional={k: value for k in ("model_name", "model", "model_id", "x")}))
def test_served_model_name_is_the_old_served_model(meta: dict[str, Any]) -> None:
    assert served_model_name(meta) == old_served(meta)


@PROP
@given(params=params_st, metadata=meta_st)
def test_the_trackers_old_rule_differs_only_on_model_id_and_truthy_non_strings(
    params: dict[str, Any], metadata: dict[str, Any]
) -> None:
    tracked = old_tracker(params, metadata) or None  # the tracker then reads "" as "unknown", like None
    now = call_model_name(params, metadata)
    values = [params.get("model"), params.get("model_name"), metadata.get("ls_model_name")]
    plain = all(v is None or isinstance(v, str) or not v for v in values)
    if plain and "model_id" not in params:
        assert now == tracked
    elif now != tracked:  # the only two ways they part
        assert "model_id" in params or not plain
