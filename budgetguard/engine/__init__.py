"""The guard's core, shared by every way of applying it (wrap, pipe, enforce).

``begin`` estimates a call's worst case and reserves it on every counter that
applies, all or nothing, or raises. ``end`` prices what the call really used
and settles the lease exactly once. ``fail`` releases or charges, by the rules
in the README ("Errors and abandoned streams").
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar, cast
from uuid import UUID

from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from ..errors import BudgetExceeded, BudgetStoreUnavailable, DegradeRequired, _usd
from ..estimate import estimate_input_tokens, estimate_text_tokens, max_output_tokens
from ..limits import DEFAULT_SCOPE, Limit, ScopeTemplate
from ..pricing import Price, Rates, resolve_rates
from ..records import CallRecord, Outcome
from ..reservation import Amount, Caps, CounterRef, CounterSpec, CounterState, Violation
from ..spool import Spool, encode_release, encode_reserve, encode_settle
from ..status import BudgetStatus, LimitStatus, row, to_usd
from ..stores.base import ReserveRequest, ReserveResult, SettleRequest, Store
from ..usage import TokenUsage, served_model, usage_from_message, usage_from_result
from ..windows import as_datetime, window_end

logger = logging.getLogger("budgetguard")
T = TypeVar("T")
_Op = tuple[Any, ...]  # a store operation a flow asks its driver for

__all__ = ["Engine", "ModelHint"]


@dataclass(slots=True)
class _Pending:
    lease_id: str
    refs: tuple[CounterRef, ...]
    amount: Amount
    rates: Rates
    provider: str | None
    input_est: int
    output_cap: int
    chunks: int = 0
    out_seen: int = 0
    partial: TokenUsage | None = None
    spooled: bool = False  # reserved in the spool (store down, fail-open): settle there too
    probe: bool = False  # pipe form: the reservation was a 1-unit probe, not an estimate


@dataclass(slots=True)
class _Plan:
    specs: tuple[CounterSpec, ...]
    groups: tuple[tuple[Limit, ...], ...]  # the limits behind each counter


@dataclass(slots=True)
class ModelHint:
    """What the guard knows of the model it wraps, for calls that do not say."""

    model: str | None = None
    provider: str | None = None
    profile_max: int | None = None
    soft_ppm: int | None = None  # degrade threshold, only on a primary with fallbacks


class Engine:
    """Limits + store + prices: everything a check or a settle needs."""

    def __init__(
        self,
        limits: Sequence[Limit],
        store: Store,
        *,
        prices: Mapping[str, Price] | None,
        default_price: Price | None,
        lease_ttl: float,
        default_max_output_tokens: int,
        on_record: Callable[[CallRecord], None] | None,
        on_store_error: str = "closed",
        spool: Spool | None = None,
    ) -> None:
        self.limits = tuple(limits)
        self.store = store
        self.prices = dict(prices or {})
        self.default_price = default_price
        self.lease_ttl = lease_ttl
        self.default_max_output_tokens = default_max_output_tokens
        self.on_record = on_record
        self.on_store_error = on_store_error
        self._spooled_probes: set[str] = set()
        self.spool = spool
        self._down_until = 0.0  # a failed store is not asked again before this (monotonic)
        if spool is not None and spool.pending():
            spool.try_replay(store)  # what an earlier process left behind
        self._tag = os.urandom(4).hex()
        self._pending: dict[UUID, _Pending] = {}
        self._lock = threading.Lock()
        self._templates = [(ScopeTemplate.parse(lim.scope or DEFAULT_SCOPE), lim) for lim in self.limits]
        self._static: dict[int | None, _Plan] = {}
        self._all_static = all(not t.fields for t, _ in self._templates)

    # ------------------------------------------------------------ counters

    def plan(self, metadata: Mapping[str, Any], soft_ppm: int | None = None) -> _Plan:
        """The counters a call with this metadata must fit, merged by (scope, period)."""
        if self._all_static:
            cached = self._static.get(soft_ppm)
            if cached is not None:
                return cached
        plan = _build_plan(self._templates, metadata, soft_ppm)
        if self._all_static:
            self._static[soft_ppm] = plan
        return plan

    # ------------------------------------------------------------ drivers
    #
    # Every operation below is written once, as a generator ("flow") that
    # yields the store operations it needs: ("reserve", req), ("settle", req),
    # ("release", lease_id, refs) or ("replay",). ``_run`` drives a flow with
    # the sync store methods, ``_arun`` with the async twins (redis.asyncio),
    # as httpx shares one core between its sync and async clients.

    def _run(self, flow: Generator[_Op, Any, T]) -> T:
        try:
            op = next(flow)
            while True:
                try:
                    result = self._do(op)
                except BudgetStoreUnavailable as exc:
                    op = flow.throw(exc)
                else:
                    op = flow.send(result)
        except StopIteration as stop:
            return cast(T, stop.value)

    async def _arun(self, flow: Generator[_Op, Any, T]) -> T:
        try:
            op = next(flow)
            while True:
                try:
                    result = await self._ado(op)
                except BudgetStoreUnavailable as exc:
                    op = flow.throw(exc)
                else:
                    op = flow.send(result)
        except StopIteration as stop:
            return cast(T, stop.value)

    def _do(self, op: _Op) -> Any:
        if op[0] == "replay":
            self._maybe_replay()
            return None
        self._check_down()
        try:
            out = getattr(self.store, op[0])(*op[1:])
        except BudgetStoreUnavailable:
            self._mark_down()
            raise
        self._down_until = 0.0
        self._maybe_replay()
        return out

    async def _ado(self, op: _Op) -> Any:
        if op[0] == "replay":
            await self._amaybe_replay()
            return None
        self._check_down()
        try:
            out = await getattr(self.store, "a" + op[0])(*op[1:])
        except BudgetStoreUnavailable:
            self._mark_down()
            raise
        self._down_until = 0.0
        await self._amaybe_replay()
        return out

    # ------------------------------------------------------------ store faults

    def _is_down(self) -> bool:
        return bool(self._down_until) and time.monotonic() < self._down_until

    def _mark_down(self) -> None:
        self._down_until = time.monotonic() + getattr(self.store, "timeout", 1.0)

    def _check_down(self) -> None:
        """Fail fast while the store is known to be down (for one store timeout)."""
        if self._is_down():
            raise BudgetStoreUnavailable(
                repr(self.store), None, problem="is down (it failed moments ago)", sent=False
            )

    def _maybe_replay(self) -> None:
        if self.spool is None or not self.spool.dirty or self._is_down():
            return
        try:
            self.spool.replay(self.store)
        except BudgetStoreUnavailable:
            self.spool.dirty = True
            self._mark_down()

    async def _amaybe_replay(self) -> None:
        if self.spool is None or not self.spool.dirty or self._is_down():
            return
        await asyncio.to_thread(self._maybe_replay)  # file I/O and fsync: off the event loop

    def _settle_store_flow(self, p: _Pending, req: SettleRequest) -> Generator[_Op, Any, Outcome]:
        """Settle, or spool the settle: a call that ran is never lost."""
        if self.spool is not None and p.spooled:
            self.spool.append(encode_settle(req))  # after its spooled reserve, in order
            yield ("replay",)
            return "spooled"
        try:
            outcome: Outcome = yield ("settle", req)
        except BudgetStoreUnavailable:
            if self.spool is None:
                raise
            self.spool.append(encode_settle(req))
            logger.warning(
                "budgetguard: store unavailable; settle of %s spooled to %s", req.lease_id, self.spool.dir
            )
            return "spooled"
        return outcome

    def _release_flow(self, p: _Pending) -> Generator[_Op, Any, None]:
        if self.spool is not None and p.spooled:
            self.spool.append(encode_release(p.lease_id, p.refs))
            return
        try:
            yield ("release", p.lease_id, p.refs)
        except BudgetStoreUnavailable:
            if self.spool is None:
                raise
            self.spool.append(encode_release(p.lease_id, p.refs))

    # ------------------------------------------------------------ before a call

    def begin(
        self,
        run_id: UUID,
        messages: Sequence[BaseMessage] | None,
        prompts: Sequence[str] | None,
        invocation_params: Mapping[str, Any] | None,
        metadata: Mapping[str, Any],
        hint: ModelHint,
    ) -> None:
        self._run(self._begin_flow(run_id, messages, prompts, invocation_params, metadata, hint))

    async def abegin(
        self,
        run_id: UUID,
        messages: Sequence[BaseMessage] | None,
        prompts: Sequence[str] | None,
        invocation_params: Mapping[str, Any] | None,
        metadata: Mapping[str, Any],
        hint: ModelHint,
    ) -> None:
        await self._arun(self._begin_flow(run_id, messages, prompts, invocation_params, metadata, hint))

    def _begin_flow(
        self,
        run_id: UUID,
        messages: Sequence[BaseMessage] | None,
        prompts: Sequence[str] | None,
        invocation_params: Mapping[str, Any] | None,
        metadata: Mapping[str, Any],
        hint: ModelHint,
    ) -> Generator[_Op, Any, None]:
        if run_id in self._pending:
            return  # the same guard attached twice (model and chain): reserve once
        params = invocation_params or {}
        model = _first_str(
            params.get("model"),
            params.get("model_name"),
            params.get("model_id"),
            metadata.get("ls_model_name"),
            hint.model,
        )
        provider = _first_str(metadata.get("ls_provider"), hint.provider)
        plan = self.plan(metadata, hint.soft_ppm)
        rates = resolve_rates(model or "", provider, self.prices, self.default_price)
        if messages is not None:
            inp = estimate_input_tokens(messages, params.get("tools") or params.get("functions"))
        else:
            inp = 8 + sum(estimate_text_tokens(p) for p in prompts or ())
        out = max_output_tokens(params, metadata, hint.profile_max, self.default_max_output_tokens)
        amount = Amount(rates.worst_nanos(inp, out), inp + out, 1)
        lease_id = f"{self._tag}-{run_id.hex}"
        req = ReserveRequest(lease_id, plan.specs, amount, self.lease_ttl)
        spooled = False
        try:
            result: ReserveResult = yield ("reserve", req)
        except BudgetStoreUnavailable as exc:
            if self.spool is None:
                raise
            if self.on_store_error != "open":
                if exc.sent:  # the reserve may still land (a stall): close it once the store is back
                    self.spool.append(encode_release(lease_id, tuple(s.ref for s in plan.specs)))
                raise
            self.spool.append(encode_reserve(req))  # fail open: the call goes ahead, on the record
            spooled = True
        else:
            if not result.admitted:
                raise self.refusal(plan, result.states, result.violation, amount, rates.model)
        with self._lock:
            self._pending[run_id] = _Pending(
                lease_id, tuple(s.ref for s in plan.specs), amount, rates, provider, inp, out, spooled=spooled
            )

    def refusal(
        self,
        plan: _Plan,
        states: Sequence[CounterState],
        violation: Violation | None,
        amount: Amount,
        model: str | None,
    ) -> BudgetExceeded:
        assert violation is not None
        spec = plan.specs[violation.index]
        st = states[violation.index]
        q = violation.quantity
        quantity = "usd" if q == "nanos" else q
        cap_source = spec.soft if violation.soft and spec.soft else spec.caps
        cap = cap_source.get(q)
        assert cap is not None
        # the limit behind the tightest cap of this counter
        limit = next(
            lim
            for lim in plan.groups[violation.index]
            if (lim.usd_nanos if q == "nanos" else getattr(lim, q)) == spec.caps.get(q)
        )
        conv: Callable[[int], Decimal | int] = to_usd if q == "nanos" else int
        spent, reserved = st.spent.get(q), st.reserved.get(q)
        cls = DegradeRequired if violation.soft else BudgetExceeded
        note = None
        if violation.soft:
            shown = f"${_usd(conv(cap))}" if q == "nanos" else f"{cap:,} {quantity}"
            note = f"it would pass degrade_at ({shown}); a fallback serves if one fits"
        return cls(
            scope=spec.ref.scope,
            limit=limit,
            quantity=quantity,
            window=spec.ref.per,
            spent=conv(spent),
            reserved=conv(reserved),
            requested=conv(amount.get(q)),
            remaining=conv(max((spec.caps.get(q) or 0) - spent - reserved, 0)),
            resets_at=as_datetime(window_end(spec.ref.per, st.window_start)),
            model=model,
            note=note,
        )

    # ------------------------------------------------------------ during a stream

    def observe(self, run_id: UUID, chunk_message: BaseMessage | None, text: str) -> None:
        p = self._pending.get(run_id)
        if p is None:
            return
        p.chunks += 1
        if text:
            p.out_seen += estimate_text_tokens(text)
        if chunk_message is not None and getattr(chunk_message, "usage_metadata", None):
            u = usage_from_message(chunk_message)
            if u is not None:
                p.partial = u if p.partial is None else p.partial + u

    # ------------------------------------------------------------ after a call

    def end(self, run_id: UUID, response: LLMResult) -> CallRecord | None:
        return self._run(self._end_flow(run_id, response))

    async def aend(self, run_id: UUID, response: LLMResult) -> CallRecord | None:
        return await self._arun(self._end_flow(run_id, response))

    def _end_flow(self, run_id: UUID, response: LLMResult) -> Generator[_Op, Any, CallRecord | None]:
        with self._lock:
            p = self._pending.pop(run_id, None)
        if p is None:
            return None
        usage, served = usage_from_result(response)
        if usage is None:
            usage = p.partial
        if usage is None:
            out = sum(estimate_text_tokens(g.text) for gens in response.generations for g in gens)
            usage = TokenUsage(
                input_tokens=p.input_est, output_tokens=max(out, p.out_seen, 1), estimated=True
            )
        elif usage.input_tokens == 0 and p.input_est > 8 and not usage.cache_hit:
            # zero input for a non-empty prompt: some proxies drop it; charge our estimate
            usage = TokenUsage(
                input_tokens=p.input_est,
                output_tokens=usage.output_tokens,
                reasoning=usage.reasoning,
                output_audio=usage.output_audio,
                estimated=True,
            )
        return (yield from self._settle_flow(p, usage, served))

    def fail(self, run_id: UUID, error: BaseException) -> CallRecord | None:
        return self._run(self._fail_flow(run_id, error))

    async def afail(self, run_id: UUID, error: BaseException) -> CallRecord | None:
        return await self._arun(self._fail_flow(run_id, error))

    def _fail_flow(self, run_id: UUID, error: BaseException) -> Generator[_Op, Any, CallRecord | None]:
        with self._lock:
            p = self._pending.pop(run_id, None)
        if p is None:
            return None
        if p.chunks == 0 and not isinstance(error, GeneratorExit):
            yield from self._release_flow(p)
            return self._emit(p, TokenUsage(), 0, "released", p.rates.model)
        # Output began (or the consumer walked away): charge what was seen, and
        # the worst case for what was not, since the provider may have billed it.
        seen = p.partial or TokenUsage()
        usage = TokenUsage(
            input_tokens=max(seen.input_tokens, p.input_est if seen.input_tokens == 0 else 0),
            output_tokens=max(seen.output_tokens, p.out_seen, p.output_cap),
            cache_read=seen.cache_read,
            cache_write=seen.cache_write,
            estimated=True,
        )
        return (yield from self._settle_flow(p, usage, None))

    def _settle_flow(
        self, p: _Pending, usage: TokenUsage, served: str | None
    ) -> Generator[_Op, Any, CallRecord | None]:
        rates = p.rates
        if served and served != rates.model:
            try:
                rates = resolve_rates(served, p.provider, self.prices, self.default_price)
            except LookupError:
                logger.warning(
                    "budgetguard: served model %r has no price; charged at %r's rates",
                    served,
                    rates.model,
                )
        if usage.cache_hit:
            actual = Amount()
        else:
            actual = Amount(rates.nanos(usage), usage.total_tokens, 1)
        outcome = yield from self._settle_store_flow(
            p, SettleRequest(p.lease_id, p.refs, actual, usage.estimated, count_overshoot=not p.probe)
        )
        if not p.probe and actual.exceeds(p.amount):
            logger.warning(
                "budgetguard: %s call used more than reserved "
                "(%s > %s nano-USD, %s > %s tokens); recorded in full",
                rates.model,
                actual.nanos,
                p.amount.nanos,
                actual.tokens,
                p.amount.tokens,
            )
        label: Outcome = "cache_hit" if usage.cache_hit else "estimated" if usage.estimated else outcome
        if outcome in ("replay", "late"):
            label = outcome
        return self._emit(p, usage, actual.nanos, label, rates.model)

    def _emit(
        self, p: _Pending, usage: TokenUsage, nanos: int, outcome: Outcome, model: str
    ) -> CallRecord | None:
        debug = logger.isEnabledFor(logging.DEBUG)
        if self.on_record is None and not debug:
            return None
        rec = CallRecord(
            model=model,
            provider=p.provider,
            usage=usage,
            cost_usd=to_usd(nanos),
            reserved_usd=to_usd(p.amount.nanos),
            scopes=tuple(r.scope for r in p.refs),
            outcome=outcome,
        )
        if debug:
            logger.debug("budgetguard: %s", rec)
        if self.on_record is not None:
            self.on_record(rec)
        return rec

    # ------------------------------------------------------------ pipe form

    def record(
        self, message: BaseMessage, metadata: Mapping[str, Any], model_hint: str | None
    ) -> BudgetExceeded | None:
        """Record usage that already happened (pipe form, invoke mode).

        Returns a refusal if the budget was already exhausted *before* this
        call, so that later steps can be stopped; the usage is recorded anyway.
        """
        return self._run(self._record_flow(message, metadata, model_hint))

    async def arecord(
        self, message: BaseMessage, metadata: Mapping[str, Any], model_hint: str | None
    ) -> BudgetExceeded | None:
        return await self._arun(self._record_flow(message, metadata, model_hint))

    def _record_flow(
        self, message: BaseMessage, metadata: Mapping[str, Any], model_hint: str | None
    ) -> Generator[_Op, Any, BudgetExceeded | None]:
        plan = self.plan(metadata)
        usage, served = _message_usage(message)
        model = served or model_hint or ""
        rates = resolve_rates(model, None, self.prices, self.default_price)
        actual = Amount(0, 0, 0) if usage.cache_hit else Amount(rates.nanos(usage), usage.total_tokens, 1)
        lease_id = f"{self._tag}-{os.urandom(12).hex()}"
        probe = Amount(1, 1, 1)
        refs = tuple(s.ref for s in plan.specs)
        p = _Pending(lease_id, refs, probe, rates, None, 0, 0, probe=True)
        reserve = ReserveRequest(lease_id, plan.specs, probe, self.lease_ttl, force=True)
        try:
            result: ReserveResult = yield ("reserve", reserve)
        except BudgetStoreUnavailable:
            if self.spool is None:
                raise
            self.spool.append(encode_reserve(reserve))  # the call already ran: record it later
            p.spooled = True
            result = ReserveResult(True, ())
        yield from self._settle_store_flow(
            p, SettleRequest(lease_id, refs, actual, usage.estimated, count_overshoot=False)
        )
        self._emit(p, usage, actual.nanos, "estimated" if usage.estimated else "settled", rates.model)
        if result.violation is not None and not result.violation.soft:
            return self.refusal(plan, _before(result.states, probe), result.violation, probe, rates.model)
        return None

    def probe(self, metadata: Mapping[str, Any]) -> tuple[str, _Plan]:
        """Pipe form, stream mode: refuse before the model is pulled if no room is left."""
        return self._run(self._probe_flow(metadata))

    async def aprobe(self, metadata: Mapping[str, Any]) -> tuple[str, _Plan]:
        return await self._arun(self._probe_flow(metadata))

    def _probe_flow(self, metadata: Mapping[str, Any]) -> Generator[_Op, Any, tuple[str, _Plan]]:
        plan = self.plan(metadata)
        lease_id = f"{self._tag}-{os.urandom(12).hex()}"
        probe = Amount(1, 1, 1)
        req = ReserveRequest(lease_id, plan.specs, probe, self.lease_ttl)
        try:
            result: ReserveResult = yield ("reserve", req)
        except BudgetStoreUnavailable:
            if self.on_store_error != "open" or self.spool is None:
                raise
            self.spool.append(encode_reserve(req))
            self._spooled_probes.add(lease_id)
            return lease_id, plan
        if not result.admitted:
            raise self.refusal(plan, result.states, result.violation, probe, None)
        return lease_id, plan

    def settle_stream(
        self, lease_id: str, plan: _Plan, message: BaseMessage | None, model_hint: str | None
    ) -> CallRecord | None:
        return self._run(self._settle_stream_flow(lease_id, plan, message, model_hint))

    async def asettle_stream(
        self, lease_id: str, plan: _Plan, message: BaseMessage | None, model_hint: str | None
    ) -> CallRecord | None:
        return await self._arun(self._settle_stream_flow(lease_id, plan, message, model_hint))

    def _settle_stream_flow(
        self, lease_id: str, plan: _Plan, message: BaseMessage | None, model_hint: str | None
    ) -> Generator[_Op, Any, CallRecord | None]:
        refs = tuple(s.ref for s in plan.specs)
        spooled = lease_id in self._spooled_probes
        self._spooled_probes.discard(lease_id)
        if message is None:  # the model failed before its first chunk: nothing was billed
            yield from self._release_flow(
                _Pending(lease_id, refs, Amount(1, 1, 1), _NO_RATES, None, 0, 0, spooled=spooled, probe=True)
            )
            return None
        usage, served = _message_usage(message)
        rates = resolve_rates(served or model_hint or "", None, self.prices, self.default_price)
        p = _Pending(lease_id, refs, Amount(1, 1, 1), rates, None, 0, 0, spooled=spooled, probe=True)
        return (yield from self._settle_flow(p, usage, served))

    # ------------------------------------------------------------ operators

    def status_plan(self, metadata: Mapping[str, Any]) -> tuple[_Plan, tuple[str, ...]]:
        applicable: list[tuple[ScopeTemplate, Limit]] = []
        skipped: list[str] = []
        for tpl, lim in self._templates:
            if all(f in metadata for f in tpl.fields):
                applicable.append((tpl, lim))
            else:
                skipped.append(lim.describe())
        return _build_plan(applicable, metadata, None), tuple(skipped)

    def build_status(
        self, plan: _Plan, states: Sequence[CounterState], skipped: tuple[str, ...]
    ) -> BudgetStatus:
        rows: list[LimitStatus] = []
        for spec, group, st in zip(plan.specs, plan.groups, states, strict=True):
            for lim in group:
                for quantity in ("usd", "tokens", "requests"):
                    if getattr(lim, quantity) is not None:
                        rows.append(row(spec.ref.scope, lim, quantity, st))
        return BudgetStatus(tuple(rows), skipped)

    def status(self, metadata: Mapping[str, Any]) -> BudgetStatus:
        plan, skipped = self.status_plan(metadata)
        states = self.store.status([s.ref for s in plan.specs])
        return self.build_status(plan, states, skipped)

    async def astatus(self, metadata: Mapping[str, Any]) -> BudgetStatus:
        plan, skipped = self.status_plan(metadata)
        states = await self.store.astatus([s.ref for s in plan.specs])
        return self.build_status(plan, states, skipped)


_NO_RATES = Rates("", None, 0, (), 0)


def _build_plan(
    templates: Sequence[tuple[ScopeTemplate, Limit]], metadata: Mapping[str, Any], soft_ppm: int | None
) -> _Plan:
    order: dict[CounterRef, int] = {}
    caps: list[Caps] = []
    groups: list[list[Limit]] = []
    for tpl, lim in templates:
        ref = CounterRef(tpl.render(metadata), lim.per)
        c = Caps(lim.usd_nanos, lim.tokens, lim.requests)
        i = order.get(ref)
        if i is None:
            order[ref] = len(caps)
            caps.append(c)
            groups.append([lim])
        else:
            caps[i] = caps[i].tightest(c)
            groups[i].append(lim)
    specs = tuple(
        CounterSpec(ref, c, None if soft_ppm is None else c.scaled(soft_ppm))
        for ref, c in zip(order, caps, strict=True)
    )
    return _Plan(specs, tuple(tuple(g) for g in groups))


def _before(states: Sequence[CounterState], amount: Amount) -> list[CounterState]:
    return [
        CounterState(
            st.window_start, st.spent, (st.reserved - amount).floor0(), st.overshoot_count, st.overshoot
        )
        for st in states
    ]


def _message_usage(message: BaseMessage) -> tuple[TokenUsage, str | None]:
    usage = usage_from_message(message)
    if usage is None:
        text = message.content if isinstance(message.content, str) else str(message.content)
        usage = TokenUsage(input_tokens=0, output_tokens=max(estimate_text_tokens(text), 1), estimated=True)
    return usage, served_model(message)


def _first_str(*values: Any) -> str | None:
    for v in values:
        if isinstance(v, str) and v:
            return v
    return None
