"""The pipe form's flows: a guard that is a step of its own and sees only the model's output.

Composed with ``|`` a guard wraps what is to its left (``adapter/compose.py``)
and these are not used. A guard placed in a ``RunnableSequence`` by hand can
only record a call that already ran (invoke), or reserve an honest worst case
before it pulls the model (stream).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage

from ..errors import BudgetExceeded, BudgetStoreUnavailable, ConfigError
from ..estimate import estimate_text_tokens
from ..ledger import note_for
from ..pricing import context_window
from ..records import CallRecord, Outcome
from ..reservation import Amount
from ..spool import encode_reserve
from ..stores.base import ReserveRequest, ReserveResult, SettleRequest
from ..usage import TokenUsage, served_model, usage_from_message
from . import ops
from .flows import _NO_RATES, _PROBE, Flows
from .ops import Flow
from .pending import Pending
from .plans import Plan
from .refusals import refusal, show_refusal, states_before

__all__ = ["PipeFlows"]


class PipeFlows(Flows):
    """``Flows`` plus the pipe form's record, probe and stream settle."""

    def record(
        self, message: BaseMessage, metadata: Mapping[str, Any], model_hint: str | None
    ) -> Flow[BudgetExceeded | None]:
        """Record usage that already happened (pipe form, invoke mode).

        Returns a refusal if the budget was already exhausted *before* this
        call, so that later steps can be stopped; the usage is recorded anyway.
        """
        plan = self.planner.plan(metadata)
        usage, served = _message_usage(message)
        rates = self._rates(served or model_hint or "", None)
        actual = Amount(0, 0, 0) if usage.cache_hit else Amount(rates.nanos(usage), usage.total_tokens, 1)
        p = Pending(self._new_lease(), plan.refs, plan.labels, _PROBE, rates, None, 0, 0, probe=True)
        reserve = ReserveRequest(p.lease_id, plan.specs, _PROBE, self.lease_ttl, force=True)
        try:
            result = yield from ops.reserve(reserve)
        except BudgetStoreUnavailable:
            if self.spool_dir is None:
                raise
            yield from ops.spool_append(encode_reserve(reserve))  # the call already ran: record it later
            p.spooled = True
            result = ReserveResult(True, ())
        if not self.defined and not p.spooled:
            yield from self.define()
        note = note_for(
            rates.model, None, usage, None, zip((r.scope for r in plan.refs), plan.labels, strict=False)
        )
        yield from self._settle_or_spool(
            p, SettleRequest(p.lease_id, p.refs, actual, usage.estimated, False, note)
        )
        outcome: Outcome = "estimated" if usage.estimated else "settled"
        if self.watch is not None and self.watch.active():
            self.watch.settled(p, usage, actual.nanos, outcome, rates.model, time.time())
        self._emit(p, usage, actual.nanos, outcome, rates.model)
        if result.violation is not None and not result.violation.soft:
            return refusal(plan, states_before(result.states, _PROBE), result.violation, _PROBE, rates.model)
        return None

    def pipe_amount(self, message: BaseMessage | None, model_hint: str | None) -> Amount:
        """What the pipe form reserves before it pulls the model: an honest worst case.

        A message it can already see costs what it says (its served model, else
        ``model=``). Otherwise (under ``transform`` the prompt is not visible)
        the worst case of ``model=``: a full context window of input and
        ``default_max_output_tokens`` of output, each token at its dearest rate.
        """
        if message is not None:
            usage, served = _message_usage(message)
            name = served or model_hint
            if name:
                if usage.cache_hit:
                    return Amount(0, 0, 0)
                return Amount(self._rates(name, None).nanos(usage), usage.total_tokens, 1)
        if not model_hint:
            raise ConfigError(
                "BudgetGuard placed in a RunnableSequence by hand (or streamed on its own) cannot see "
                "which model it follows, so it cannot reserve the call's worst case: pass "
                "BudgetGuard(model='<model name>', ...), or compose it with `llm | guard` or guard.wrap(llm)"
            )
        window = context_window(model_hint)
        if window is None:
            raise ConfigError(
                f"BudgetGuard placed in a RunnableSequence by hand cannot see the prompt, and no context "
                f"window is known for model={model_hint!r} to bound it: compose it with `llm | guard` "
                "or guard.wrap(llm), which check each call's own prompt"
            )
        out = self.default_max_output_tokens
        return Amount(self._rates(model_hint, None).worst_nanos(window, out), window + out, 1)

    def probe_request(self, metadata: Mapping[str, Any], amount: Amount) -> tuple[ReserveRequest, Plan]:
        """A probe's reserve, made before it is sent, so a cancelled probe knows what to release."""
        plan = self.planner.plan(metadata)
        return ReserveRequest(self._new_lease(), plan.specs, amount, self.lease_ttl), plan

    def probe(
        self, req: ReserveRequest, plan: Plan, metadata: Mapping[str, Any], model: str | None
    ) -> Flow[tuple[str, Plan]]:
        """Pipe form (stream mode) and tool costs: reserve ``req`` before the model (or tool) runs,
        or refuse."""
        amount = req.amount
        try:
            result = yield from ops.reserve(req)
        except BudgetStoreUnavailable:
            if not self.fail_open or self.spool_dir is None:
                raise
            yield from ops.spool_append(encode_reserve(req))
            self._spooled_probes.add(req.lease_id)
            return req.lease_id, plan
        if not self.defined:
            yield from self.define()
        if not result.admitted:
            exc = refusal(plan, result.states, result.violation, amount, model)
            p = Pending(req.lease_id, plan.refs, plan.labels, amount, _NO_RATES, None, 0, 0)
            p.metadata, p.started = metadata, time.time()
            show_refusal(self, p, exc)
            raise exc
        return req.lease_id, plan

    def took_spooled(self, lease_id: str) -> bool:
        """Whether the probe ``lease_id`` was spooled (its close then follows it into the spool),
        forgotten as it is closed."""
        spooled = lease_id in self._spooled_probes
        self._spooled_probes.discard(lease_id)
        return spooled

    def release_probe(self, lease_id: str, plan: Plan, amount: Amount) -> Flow[None]:
        """Release a probe whose call never ran: its model failed before any output, or it was
        cancelled while it reserved (released whether or not it landed: the release's tombstone
        stops a reserve that lands after it), so nothing is held or charged for it."""
        spooled = self.took_spooled(lease_id)
        yield from self._release(
            Pending(lease_id, plan.refs, plan.labels, amount, _NO_RATES, None, 0, 0, spooled=spooled)
        )

    def settle_stream(
        self, lease_id: str, plan: Plan, message: BaseMessage | None, model_hint: str | None, amount: Amount
    ) -> Flow[CallRecord | None]:
        if message is None:  # the model failed before its first chunk: nothing was billed
            yield from self.release_probe(lease_id, plan, amount)
            return None
        spooled = self.took_spooled(lease_id)
        usage, served = _message_usage(message)
        rates = self._rates(served or model_hint or "", None)
        p = Pending(lease_id, plan.refs, plan.labels, amount, rates, None, 0, 0, spooled=spooled)
        return (yield from self._settle(p, usage, served))


def _message_usage(message: BaseMessage) -> tuple[TokenUsage, str | None]:
    usage = usage_from_message(message)
    if usage is None:
        text = message.content if isinstance(message.content, str) else str(message.content)
        usage = TokenUsage(input_tokens=0, output_tokens=max(estimate_text_tokens(text), 1), estimated=True)
    return usage, served_model(message)
