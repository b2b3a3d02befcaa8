"""What a guarded call does, written once as generators that yield store operations.

``begin`` estimates a call's worst case and reserves it on every counter
that applies, all or nothing, or raises. ``end`` prices what the call really
used and settles the lease exactly once. ``fail`` releases or charges, by the
rules in the README ("Errors and abandoned streams"). No flow performs I/O:
the drivers in ``drivers.py`` run them against the store and the spool.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, cast
from uuid import UUID

from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from ..definitions import definitions_of
from ..errors import BudgetStoreUnavailable, UnknownModelPrice
from ..estimate import estimate_text_tokens, has_audio_input
from ..ledger import note_for
from ..pricing import Rates, resolve_rates, unpriced_rates
from ..records import CallRecord, Outcome, caller_metadata
from ..reservation import Amount, CounterRef
from ..spool import encode_release, encode_reserve, encode_settle
from ..status import MINIMAL_CALL_TOKENS, BudgetStatus, LimitStatus, row
from ..stores.base import ReserveRequest, ReserveResult, SettleOutcome, SettleRequest
from ..units import QUANTITY_NAMES, to_usd
from ..usage import TokenUsage, audio_unsplit, usage_from_message, usage_from_result
from . import ops
from .config import EngineConfig
from .contention import Contention
from .fit import affordable_output
from .ops import Flow
from .pending import Pending, PendingRuns, current_task
from .plans import CallStart, Plan, Planner
from .prefixes import InputEstimator
from .refusals import CallShape, refusal, show_refusal
from .shapes import StartShapes
from .unpriced import unpriced_served as _unpriced_served  # noqa: F401  (tests clear it)
from .unpriced import warn_unpriced as _warn_unpriced
from .user import UserCallbacks
from .watch import Watch

__all__ = ["Begun", "Flows"]

logger = logging.getLogger("budgetguard")

_PROBE = Amount(1, 1, 1)
#: Errors that say nothing of the provider, only that the caller stopped waiting.
_WALKED_AWAY = (GeneratorExit, asyncio.CancelledError)
_NO_RATES = Rates("", None, 0, (), 0)
_new = tuple.__new__  # a NamedTuple from its fields (all of them), without its Python-level __new__


#: per plan, by the identity of its refs and labels: the (store key, label) pairs a note names
_WRITTEN: dict[int, tuple[tuple[CounterRef, ...], tuple[str, ...], tuple[tuple[str, str], ...]]] = {}


def _written(refs: tuple[CounterRef, ...], labels: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The scopes a settle's note names where key and label differ, found once per plan
    (a static plan sends the same tuples each call; ``note_for`` would zip and filter them)."""
    found = _WRITTEN.get(id(refs))
    if found is None or found[0] is not refs or found[1] is not labels:
        if len(_WRITTEN) >= 256:
            _WRITTEN.clear()
        pairs = tuple([(r.scope, lb) for r, lb in zip(refs, labels, strict=False) if r.scope != lb])
        found = _WRITTEN[id(refs)] = (refs, labels, pairs)
    return found[2]


class Begun(NamedTuple):
    """A call planned and claimed, about to reserve."""

    run_id: UUID
    pending: Pending
    plan: Plan


class Flows(Contention):
    """The guard's configuration, and every flow over it."""

    def __init__(
        self,
        planner: Planner,
        pending: PendingRuns,
        config: EngineConfig,
        spool_dir: Path | None,
    ) -> None:
        self.planner = planner
        self.pending = pending
        self.prices = dict(config.prices)
        self.default_price = config.default_price
        self.lease_ttl = config.lease_ttl
        self.default_max_output_tokens = config.default_max_output_tokens
        self.fit_max_tokens = config.fit_max_tokens
        self.min_output = config.min_output_tokens
        self.contention_wait = config.contention_wait
        self.on_record = config.on_record
        self.inputs = InputEstimator(config.token_counter)
        self.shapes = StartShapes(self._call_rates, self.prices, self.default_max_output_tokens)
        self.fail_open = config.on_store_error == "open"
        self.spool_dir = spool_dir  # None: no spool, store faults reach the caller
        self.user_callbacks = UserCallbacks()
        self._tag = os.urandom(4).hex()
        self._spooled_probes: set[str] = set()
        self.minimal_nanos = 1  # the minimal call's price (status.py), lowered by Engine.note_model
        self.watch: Watch | None = None  # telemetry and alerts, when a guard has them (engine/watch.py)
        #: the limits as the store keeps them for operators (definitions.py), written once
        self.definitions = definitions_of(lim for _, lim in planner.templates)
        self.defined = not self.definitions
        self.any_deferred = False  # no call was ever left to the cache: none to look up in undefer

    @property
    def tag(self) -> str:
        """This guard's prefix on every lease id, unique per process."""
        return self._tag

    def _rates(self, model: str, provider: str | None) -> Rates:
        return resolve_rates(model, provider, self.prices, self.default_price)

    def _call_rates(self, model: str, provider: str | None, plan: Plan) -> Rates:
        """The call's rates; a model with no price needs none when no USD limit applies to it."""
        try:
            return self._rates(model, provider)
        except UnknownModelPrice:
            if any(s.caps.nanos is not None or (s.soft and s.soft.nanos is not None) for s in plan.specs):
                raise
            return unpriced_rates(model, provider)

    # ------------------------------------------------------------ before a call

    def start(self, call: CallStart) -> Begun | None:
        """Plan a call and claim its place among the calls in flight (no I/O).

        ``None`` when this very start event was already claimed: the same
        guard attached twice (a model and the chain around it) reserves once.
        Every call gets a lease of its own, whatever its run id.
        """
        run_id, messages, metadata, hint = call.run_id, call.messages, call.metadata, call.hint
        event = call.event  # (a property: read once)
        if self.pending.has_event(run_id, event):
            return None
        params = call.invocation_params or {}
        plan = self.planner.plan(metadata, hint.soft_ppm)
        shape, rates = self.shapes.of(params, metadata, hint, plan)  # model, provider, cap: found once
        provider, out = shape.provider, shape.output_cap
        prefix = None
        if messages is not None:
            inp, prefix = self.inputs.estimate(messages, params, shape.model, shape.root)
        else:
            inp = 8 + sum(estimate_text_tokens(p) for p in call.prompts or ())
        amount = _new(Amount, (rates.worst_nanos(inp, out), inp + out, 1))
        watch = self.watch
        # fmt: off
        p = Pending(  # in one call, its fields in their order: no attribute written twice
            self._new_lease(), plan.refs, plan.labels, amount, rates, provider, inp, out, call.owner,
            event, current_task(), messages is not None and has_audio_input(messages), prefix,
            hint.fit and self.fit_max_tokens, hint.wait, threading.get_ident(), run_id, call.parent_run_id,
            metadata, time.time(), plan.specs if watch is not None and watch.alerts is not None else (),
        )
        # fmt: on
        if not self.pending.claim(run_id, p):
            return None
        return _new(Begun, (run_id, p, plan))

    def reserve(self, begun: Begun) -> Flow[None]:
        """Reserve a started call's worst case on every counter, all or nothing, or raise."""
        run_id, p, plan = begun
        req = _new(ReserveRequest, (p.lease_id, plan.specs, p.amount, self.lease_ttl, False))
        try:
            result = yield from self._reserve_or_spool(req, plan.refs)
            if result is not None and not result.admitted:
                result = yield from self._refused(begun, result)
        except BaseException:  # a store fault, or the flow closed unfinished: never left pending
            self.pending.discard(run_id, p)
            raise
        if result is not None and not result.admitted:
            self.pending.discard(run_id, p)
            shape = CallShape(p.input_est, p.output_cap, p.rates)
            exc = refusal(plan, result.states, result.violation, p.amount, p.rates.model, shape)
            show_refusal(self, p, exc)
            raise exc
        p.spooled = result is None
        self.pending.reserved(run_id, p)
        watch = self.watch
        if watch is not None and watch.active():
            watch.admitted(p)

    def _fit(self, begun: Begun, refused: ReserveResult) -> Flow[ReserveResult | None]:
        """Reserve again with the output cap lowered to what the budget affords, if that is enough."""
        _, p, plan = begun
        cap = affordable_output(
            plan.specs, refused.states, refused.violation, p.rates, p.input_est, p.output_cap, self.min_output
        )
        if cap is None:
            return refused
        amount = Amount(p.rates.worst_nanos(p.input_est, cap), p.input_est + cap, 1)
        req = ReserveRequest(p.lease_id, plan.specs, amount, self.lease_ttl)
        result = yield from self._reserve_or_spool(req, plan.refs)
        if result is None or result.admitted:
            p.amount, p.output_cap = amount, cap
            self.pending.fit(p, cap)
        return result

    def defer(self, begun: Begun) -> None:
        """Leave a call LangChain's cache will answer (``CallStart.deferred``) unreserved (no I/O)."""
        self.any_deferred = True
        begun.pending.deferred = begun
        begun.pending.ready = True  # its end (the cache's answer) closes it, with nothing to settle

    def undefer(self, run_id: UUID | None, owner: object) -> Begun | None:
        """The call left to the cache, if the model is called for it after all: to reserve now."""
        p = self.pending.here(run_id, owner) if self.any_deferred else None
        if p is None or not isinstance(p.deferred, Begun):
            return None
        begun, p.deferred, p.ready = p.deferred, None, False
        return begun

    def withdraw(self, begun: Begun) -> Flow[None]:
        """A call cancelled while it reserved never reached the model: release what may have landed.

        Released whether or not it landed: a release leaves a tombstone, so a
        reserve arriving after it is not applied. It reaches ``on_record`` as
        ``released``, as a call that failed before the provider answered does.
        """
        p = begun.pending
        self.pending.discard(begun.run_id, p)
        yield from self._release(p)
        self._emit(p, TokenUsage(), 0, "released", p.rates.model)  # on the record, like any release

    def _reserve_or_spool(
        self, req: ReserveRequest, refs: tuple[CounterRef, ...]
    ) -> Flow[ReserveResult | None]:
        """Reserve; on a store fault, raise, or (fail open) spool the reserve and return ``None``."""
        try:
            # ops.reserve, one generator less; typed by annotation, not by a call to cast()
            result: ReserveResult = yield ops.Reserve(req)  # type: ignore[assignment]
        except BudgetStoreUnavailable as exc:
            if self.spool_dir is None:
                raise
            if not self.fail_open:
                if exc.sent:  # the reserve may still land (a stall): close it once the store is back
                    yield from ops.spool_append(encode_release(req.lease_id, refs))
                raise
            yield from ops.spool_append(encode_reserve(req))  # fail open: the call goes ahead, on the record
            return None
        if not self.defined:
            yield from self.define()
        return result

    def define(self) -> Flow[None]:
        """Record the limit definitions in the store, once: after the first reserve it answered,
        so constructors do no I/O and later calls make no extra round trip."""
        self.defined = True  # (set first: concurrent calls need not all write them)
        if not (yield from ops.define(self.definitions)):
            self.defined = False  # the store could not take them now: tried again after a later reserve

    # ------------------------------------------------------------ during a stream

    def observe(
        self, run_id: UUID, chunk_message: BaseMessage | None, text: str, owner: object = None
    ) -> None:
        """Count a streamed chunk (no I/O): what a stream that breaks off is charged."""
        p = self.pending.get(run_id, owner)
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

    def end(self, run_id: UUID, response: LLMResult, owner: object = None) -> Flow[CallRecord | None]:
        p = self.pending.pop(run_id, owner)
        if p is None:
            return None
        usage, served = usage_from_result(response)
        if p.deferred is not None:  # the model was never called (it reserves first): the cache answered
            p.amount = Amount()
            return self._emit(p, usage or TokenUsage(), 0, "cache_hit", p.rates.model)
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
        self.inputs.learn(p.prefix, usage, response)
        return (yield from self._settle(p, usage, served))

    def fail(self, run_id: UUID, error: BaseException, owner: object = None) -> Flow[CallRecord | None]:
        p = self.pending.pop(run_id, owner)
        if p is None or p.deferred is not None:  # nothing reserved, nothing sent
            return None
        if p.chunks == 0 and not isinstance(error, _WALKED_AWAY):
            yield from self._release(p)
            return self._emit(p, TokenUsage(), 0, "released", p.rates.model)
        return (yield from self.abandon(p))

    def abandon(self, p: Pending) -> Flow[CallRecord | None]:
        """Charge a call that may have been billed but will never report: the conservative rule.

        Output began, the consumer walked away, or the call was cancelled
        after its reservation: what was seen, and the worst case for what was
        not (input estimate, output cap), since the provider may have billed it.
        """
        if p.deferred is not None:  # left to the cache, never reserved nor sent
            return None
        seen = p.partial or TokenUsage()
        usage = TokenUsage(
            input_tokens=max(seen.input_tokens, p.input_est if seen.input_tokens == 0 else 0),
            output_tokens=max(seen.output_tokens, p.out_seen, p.output_cap),
            cache_read=seen.cache_read,
            cache_write=seen.cache_write,
            estimated=True,
        )
        return (yield from self._settle(p, usage, None))

    def _settle(self, p: Pending, usage: TokenUsage, served: str | None) -> Flow[CallRecord | None]:
        rates = p.rates
        if p.audio_in:
            usage = audio_unsplit(usage)
        if served and served != rates.model and rates.priced:
            try:
                rates = self._rates(served, p.provider)
            except LookupError:
                _warn_unpriced(served, rates.model)
        actual = Amount() if usage.cache_hit else _new(Amount, (rates.nanos(usage), usage.total_tokens, 1))
        note = note_for(rates.model, p.provider, usage, p.run_id, _written(p.refs, p.labels))
        req = _new(SettleRequest, (p.lease_id, p.refs, actual, usage.estimated, not p.probe, note))
        began = time.time()
        outcome = yield from self._settle_or_spool(p, req)
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
        if self.watch is not None and self.watch.active():
            yield from self.watch.after_settle(p, usage, actual.nanos, label, rates.model, began, outcome)
        return self._emit(p, usage, actual.nanos, label, rates.model)

    def _settle_or_spool(self, p: Pending, req: SettleRequest) -> Flow[Outcome]:
        """Settle, or spool the settle: a call that ran is never lost."""
        if self.spool_dir is not None and p.spooled:
            yield from ops.spool_append(encode_settle(req))  # after its spooled reserve, in order
            yield from ops.replay()
            return "spooled"
        try:
            return cast(SettleOutcome, (yield ops.Settle(req)))  # ops.settle, one generator less
        except BudgetStoreUnavailable:
            if self.spool_dir is None:
                raise
            yield from ops.spool_append(encode_settle(req))
            logger.warning(
                "budgetguard: store unavailable; settle of %s spooled to %s", req.lease_id, self.spool_dir
            )
            return "spooled"

    def _release(self, p: Pending) -> Flow[None]:
        if self.spool_dir is not None and p.spooled:
            yield from ops.spool_append(encode_release(p.lease_id, p.refs))
            return
        try:
            yield from ops.release(p.lease_id, p.refs)
        except BudgetStoreUnavailable:
            if self.spool_dir is None:
                raise
            yield from ops.spool_append(encode_release(p.lease_id, p.refs))

    def _emit(
        self, p: Pending, usage: TokenUsage, nanos: int, outcome: Outcome, model: str, why: str | None = None
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
            scopes=p.labels,
            outcome=outcome,
            output_cap_fitted=p.fitted,
            run_id=p.run_id,
            parent_run_id=p.parent_run_id,
            metadata=caller_metadata(p.metadata),
            started_at=datetime.fromtimestamp(p.started, timezone.utc) if p.started else None,
            ended_at=datetime.now(timezone.utc),
            reason=why,
        )
        if debug:
            logger.debug("budgetguard: %s", rec)
        if self.on_record is not None:
            self.user_callbacks.call(self.on_record, rec)
        return rec

    def reset(self, scope: str) -> Flow[int]:
        """Zero a scope written as the user wrote it, in every period; how many counters were reset."""
        n = 0
        for key in self.planner.keys(scope):
            n += yield from ops.reset(key)
        return n

    def _new_lease(self) -> str:
        return f"{self._tag}-{os.urandom(12).hex()}"

    # ------------------------------------------------------------ operators

    def status(self, metadata: Mapping[str, Any]) -> Flow[BudgetStatus]:
        plan, skipped = self.planner.status_plan(metadata)
        yield from ops.replay()  # what waits in the spool is spent too: count it before reading
        states = yield from ops.status(plan.refs)
        rows: list[LimitStatus] = []
        for label, group, st in zip(plan.labels, plan.groups, states, strict=True):
            for lim in group:
                for quantity in QUANTITY_NAMES:
                    if getattr(lim, quantity) is not None:
                        rows.append(row(label, lim, quantity, st))
        return BudgetStatus(tuple(rows), skipped, Amount(self.minimal_nanos, MINIMAL_CALL_TOKENS, 1))
