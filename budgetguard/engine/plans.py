"""Which counters a call must fit: limits rendered for the call's metadata.

Limits that land on the same (scope, period) share one counter, capped by
the tightest of them. A guard whose scopes have no template fields has one
plan for every call, built once; a templated one keeps the plans of the
tenants it saw lately (a tenant's next call reuses its plan, and the stores'
per-plan key caches with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from uuid import UUID

from langchain_core.messages import BaseMessage

from ..errors import MissingScope
from ..limits import DEFAULT_SCOPE, Limit, ScopeTemplate
from ..reservation import Caps, CounterRef, CounterSpec

__all__ = ["CallStart", "ModelHint", "Plan", "Planner", "build_plan"]


@dataclass(slots=True)
class ModelHint:
    """What the guard knows of the model it wraps, for calls that do not say."""

    model: str | None = None
    provider: str | None = None
    profile_max: int | None = None
    soft_ppm: int | None = None  # degrade threshold, only on a primary with fallbacks
    fit: bool = False  # the model sends a fitted output cap (wrapped, with a cap field)
    wait: bool = True  # a refusal by contention waits; False where a fallback is tried next


class CallStart(NamedTuple):
    """What a model call's start event says, before anything is sent (a tuple: one is made per call)."""

    run_id: UUID
    messages: Sequence[BaseMessage] | None  # a chat model's prompt
    prompts: Sequence[str] | None  # a completion model's prompt
    invocation_params: Mapping[str, Any] | None
    metadata: Mapping[str, Any]
    hint: ModelHint
    owner: object = None  # the handler delivering it: only its end or error will settle the call
    deferred: bool = False  # LangChain's cache will answer: reserve nothing unless the model is called
    parent_run_id: UUID | None = None  # the run around the call (a chain, an agent step), for records

    @property
    def event(self) -> object:
        """The prompt object of this start event, shared by every handler it is delivered to."""
        if self.messages is not None:
            return self.messages
        return self.prompts[0] if self.prompts else None


@dataclass(slots=True)
class Plan:
    specs: tuple[CounterSpec, ...]
    groups: tuple[tuple[Limit, ...], ...]  # the limits behind each counter
    labels: tuple[str, ...]  # each counter's scope as the user wrote it (keys are percent-encoded)
    refs: tuple[CounterRef, ...] = field(init=False, repr=False, compare=False)  # each counter's ref

    def __post_init__(self) -> None:
        self.refs = tuple(s.ref for s in self.specs)  # a static plan is reused: computed once


#: Templated plans kept per guard: past it the cache starts afresh (a miss only costs a build).
PLAN_CACHE_SIZE = 4096


class Planner:
    """A guard's limits, ready to be rendered for a call."""

    def __init__(self, limits: Sequence[Limit]) -> None:
        self.templates = [(ScopeTemplate.parse(lim.scope or DEFAULT_SCOPE), lim) for lim in limits]
        self._static: dict[int | None, Plan] = {}
        self._fields = tuple(dict.fromkeys(f for t, _ in self.templates for f in t.fields))
        self._plans: dict[tuple[Any, ...], Plan] = {}

    def plan(self, metadata: Mapping[str, Any], soft_ppm: int | None = None) -> Plan:
        """The counters a call with this metadata must fit (``MissingScope`` if it lacks a field)."""
        if not self._fields:
            cached = self._static.get(soft_ppm)
            if cached is None:
                cached = self._static[soft_ppm] = build_plan(self.templates, metadata, soft_ppm)
            return cached
        key = self._key(metadata, soft_ppm)
        plan = self._plans.get(key) if key is not None else None
        if plan is None:
            plan = build_plan(self.templates, metadata, soft_ppm)  # raises on a missing or bad field
            if key is not None:
                if len(self._plans) >= PLAN_CACHE_SIZE:
                    self._plans.clear()
                self._plans[key] = plan
        return plan

    def _key(self, metadata: Mapping[str, Any], soft_ppm: int | None) -> tuple[Any, ...] | None:
        """What a templated plan depends on; ``None`` (not cached) unless every value is a str or int.

        A str and an int that render alike are two entries, each right; a bool
        or any other type is refused by the build, so it is never cached.
        """
        values: list[Any] = [soft_ppm]
        for f in self._fields:
            v = metadata.get(f)
            if type(v) is not str and type(v) is not int:
                return None
            values.append(v)
        return tuple(values)

    def keys(self, scope: str) -> list[str]:
        """The store keys a scope written plainly (``user:alice@example.com``) can stand for.

        Each template that renders it gives one key; a scope already written
        as a key (percent-encoded) is taken as it is too.
        """
        keys: list[str] = []
        for tpl, _ in self.templates:
            values = tpl.match(scope)
            if values is not None:
                try:
                    keys.append(tpl.render(values))
                except MissingScope:
                    continue  # a value the template would refuse (too long...): not one of its scopes
        keys.append(scope)
        return list(dict.fromkeys(keys))

    def status_plan(self, metadata: Mapping[str, Any]) -> tuple[Plan, tuple[str, ...]]:
        """The counters these metadata fill, and the limits they cannot (for ``remaining()``)."""
        applicable: list[tuple[ScopeTemplate, Limit]] = []
        skipped: list[str] = []
        for tpl, lim in self.templates:
            if all(f in metadata for f in tpl.fields):
                applicable.append((tpl, lim))
            else:
                skipped.append(lim.describe())
        return build_plan(applicable, metadata, None), tuple(skipped)


def build_plan(
    templates: Sequence[tuple[ScopeTemplate, Limit]], metadata: Mapping[str, Any], soft_ppm: int | None
) -> Plan:
    order: dict[tuple[str, str], int] = {}
    caps: list[Caps] = []
    groups: list[list[Limit]] = []
    labels: list[str] = []
    for tpl, lim in templates:
        key, label = tpl.render_both(metadata)
        c = Caps(lim.usd_nanos, lim.tokens, lim.requests)
        i = order.get((key, lim.per))
        if i is None:
            order[(key, lim.per)] = len(caps)
            caps.append(c)
            groups.append([lim])
            labels.append(label)
        else:
            caps[i] = caps[i].tightest(c)
            groups[i].append(lim)
    specs = tuple(
        CounterSpec(
            CounterRef(key, per, _expire_after(group)), c, None if soft_ppm is None else c.scaled(soft_ppm)
        )
        for (key, per), c, group in zip(order, caps, groups, strict=True)
    )
    return Plan(specs, tuple(tuple(g) for g in groups), tuple(labels))


def _expire_after(limits: Sequence[Limit]) -> float | None:
    """A shared counter is kept as long as its longest-lived limit wants (``None``: no expiry)."""
    seconds = [lim.expire_seconds for lim in limits]
    return None if None in seconds else max(s for s in seconds if s is not None)
