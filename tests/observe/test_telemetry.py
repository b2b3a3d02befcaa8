"""OpenTelemetry (issue 11): counters, the latency histogram and GenAI span attributes, read with the SDK.

The app's SDK is configured once per process (OpenTelemetry allows one global
provider), as an app would; each test reads what its own calls added.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from budgetguard import BudgetExceeded, BudgetGuard, Limit
from budgetguard.testing import FakeChatModel

_READER = InMemoryMetricReader()
_SPANS = InMemorySpanExporter()
_installed = False


@pytest.fixture()
def otel() -> Iterator[tuple[InMemoryMetricReader, InMemorySpanExporter]]:
    global _installed
    if not _installed:
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(_SPANS))
        trace.set_tracer_provider(tp)
        _installed = True
    _READER.get_metrics_data()  # cumulative: read what came before, to diff against
    _SPANS.clear()
    yield _READER, _SPANS


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            if sm.scope.name != "budgetguard":
                continue
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def _sum(points: list[Any], **attrs: Any) -> float:
    return sum(p.value for p in points if all(p.attributes.get(k) == v for k, v in attrs.items()))


def python(code: str, env: dict[str, str] | None = None) -> str:
    """What ``code`` prints, run in a fresh interpreter (one global OTel provider per process)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout


def assert_prints_ok(code: str, env: dict[str, str] | None = None) -> None:
    assert python(code, env).strip() == "ok"


def test_counters_and_latency_by_outcome(otel: tuple[InMemoryMetricReader, InMemorySpanExporter]) -> None:
    reader, _ = otel
    model = "gpt-4o-mini"
    guard = BudgetGuard(limits=[Limit(requests=2), Limit(usd="0.01", per="day")], fit_max_tokens=False)
    llm = guard.wrap(FakeChatModel(model_name=model, input_tokens=100, output_tokens=20, max_tokens=50))
    before = _points(reader)
    llm.invoke("a")
    llm.invoke("b")
    with pytest.raises(BudgetExceeded):
        llm.invoke("c")
    after = _points(reader)

    def delta(name: str, **attrs: Any) -> float:
        return _sum(after.get(name, []), **attrs) - _sum(before.get(name, []), **attrs)

    calls, tokens = "budgetguard.calls", "budgetguard.tokens"
    assert delta(calls, **{"budgetguard.outcome": "admitted"}) == 2
    assert delta(calls, **{"budgetguard.outcome": "refused", "gen_ai.request.model": model}) == 1
    assert delta(tokens, **{"gen_ai.token.type": "input", "gen_ai.provider.name": "openai"}) == 200
    assert delta(tokens, **{"gen_ai.token.type": "output"}) == 40
    # gpt-4o-mini: $0.15 in, $0.60 out per million tokens
    assert delta("budgetguard.cost", **{"gen_ai.request.model": model}) == pytest.approx(2 * 0.000027)
    phase = "budgetguard.phase"
    lat = [p for p in after["budgetguard.latency"] if p.attributes.get(phase) == "settle"]
    old = [p for p in before.get("budgetguard.latency", []) if p.attributes.get(phase) == "settle"]
    assert sum(p.count for p in lat) - sum(p.count for p in old) == 2
    assert all(p.min >= 0 for p in lat)


def test_estimated_overshoot_capped_and_degraded_are_counted(
    otel: tuple[InMemoryMetricReader, InMemorySpanExporter],
) -> None:
    reader, _ = otel
    before = _points(reader)
    # capped: the output cap is fitted to what $0.01 affords on gpt-4o
    BudgetGuard(limit_usd="0.01").wrap(FakeChatModel(model_name="gpt-4o")).invoke("hi")
    # estimated: no usage reported
    BudgetGuard(limit_usd="1").wrap(FakeChatModel(usage_on_invoke=False, max_tokens=50)).invoke("hi")
    # overshoot: 5,000 input tokens reported for a 2-byte prompt
    BudgetGuard(limit_usd="1").wrap(FakeChatModel(input_tokens=5000, max_tokens=10)).invoke("hi")
    # degraded: past degrade_at, the fallback serves
    cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=10)
    g = BudgetGuard(limit_usd="0.05", fallback=cheap, degrade_at=0.1, fit_max_tokens=False)
    g.wrap(FakeChatModel(model_name="gpt-4o", max_tokens=1000)).invoke("hi")
    after = _points(reader)
    for outcome in ("capped", "estimated", "overshoot", "degraded"):
        attrs = {"budgetguard.outcome": outcome}
        got = _sum(after["budgetguard.calls"], **attrs) - _sum(before.get("budgetguard.calls", []), **attrs)
        assert got == 1, outcome


def test_the_current_span_gets_genai_and_budgetguard_attributes(
    otel: tuple[InMemoryMetricReader, InMemorySpanExporter],
) -> None:
    _, spans = otel
    guard = BudgetGuard(limits=[Limit(usd="1", scope="user:{user_id}")], alerts=[0.9], on_alert=print)
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o-mini", input_tokens=12, output_tokens=7, max_tokens=30))
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("chat gpt-4o-mini"):
        llm.invoke("hi", config={"metadata": {"user_id": "alice"}})
    (span,) = spans.get_finished_spans()
    a = dict(span.attributes or {})
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4o-mini" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == 12 and a["gen_ai.usage.output_tokens"] == 7
    assert a["gen_ai.request.max_tokens"] == 30
    assert a["budgetguard.scope"] == ("user:alice",) and a["budgetguard.outcome"] == "settled"
    assert a["budgetguard.cost"] == "0.000006" and float(a["budgetguard.reserved"]) > 0
    assert a["budgetguard.remaining"] == ("0.999994",)  # read for the alert check


def test_a_refusal_marks_the_span(otel: tuple[InMemoryMetricReader, InMemorySpanExporter]) -> None:
    _, spans = otel
    llm = BudgetGuard(limit_usd="0.000001", fit_max_tokens=False).wrap(FakeChatModel(model_name="gpt-4o"))
    with trace.get_tracer("app").start_as_current_span("chat"), pytest.raises(BudgetExceeded):
        llm.invoke("hi")
    (span,) = spans.get_finished_spans()
    a = dict(span.attributes or {})
    assert a["budgetguard.outcome"] == "refused" and a["budgetguard.refused_scope"] == "global"
    assert a["budgetguard.remaining"] == "0.000001"


def test_without_opentelemetry_a_guard_has_no_telemetry() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"  # as if not installed
        "import budgetguard\n"
        "from budgetguard.testing import FakeChatModel\n"
        "g = budgetguard.BudgetGuard(limit_usd=1)\n"
        "assert g.engine.flows.watch is None\n"
        "g.wrap(FakeChatModel()).invoke('hi')\n"
        "print('ok')\n"
    )
    assert_prints_ok(code)


def test_prometheus_sees_the_documented_series() -> None:
    """The README's Prometheus set-up, in a process of its own (one global provider per process)."""
    code = (
        "from opentelemetry import metrics\n"
        "from opentelemetry.exporter.prometheus import PrometheusMetricReader\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from prometheus_client import generate_latest\n"
        "metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))\n"
        "import budgetguard\n"
        "from budgetguard.testing import FakeChatModel\n"
        "guard = budgetguard.BudgetGuard(limits=[budgetguard.Limit(requests=1)])\n"
        "llm = guard.wrap(FakeChatModel(max_tokens=9))\n"
        "llm.invoke('hi')\n"
        "try:\n"
        "    llm.invoke('hi')\n"
        "except budgetguard.BudgetExceeded:\n"
        "    pass\n"
        "print(generate_latest().decode())\n"
    )
    out = python(code)
    for series in (
        "budgetguard_cost_USD_total{",
        'budgetguard_tokens_total{gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",'
        'gen_ai_token_type="input"',
        'budgetguard_calls_total{budgetguard_outcome="refused"',
        'budgetguard_latency_seconds_bucket{budgetguard_phase="settle"',
    ):
        assert series in out, f"{series} not in:\n{out}"


def test_the_pipe_form_is_counted_too(otel: tuple[InMemoryMetricReader, InMemorySpanExporter]) -> None:
    reader, _ = otel
    before = _points(reader)
    model = FakeChatModel(model_name="gpt-4o-mini", input_tokens=30, output_tokens=3)
    chain = model | BudgetGuard(limit_usd=1)
    chain.invoke("hi")
    after = _points(reader)
    attrs = {"gen_ai.token.type": "input", "gen_ai.request.model": "gpt-4o-mini"}
    got = _sum(after["budgetguard.tokens"], **attrs) - _sum(before.get("budgetguard.tokens", []), **attrs)
    assert got == 30


def test_an_sdk_set_after_the_guard_was_built_is_picked_up() -> None:
    """``live()``'s cheap test (the API's provider globals) still sees a provider set later."""
    code = (
        "from opentelemetry import metrics\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "import budgetguard\n"
        "from budgetguard.testing import FakeChatModel\n"
        "g = budgetguard.BudgetGuard(limit_usd=1)\n"
        "llm = g.wrap(FakeChatModel(model_name='gpt-4o-mini'))\n"
        "llm.invoke('hi')\n"
        "assert not g.engine.flows.watch.telemetry.live()\n"
        "reader = InMemoryMetricReader()\n"
        "metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))\n"
        "llm.invoke('hi')\n"
        "assert g.engine.flows.watch.telemetry.live()\n"
        "names = {m.name for rm in reader.get_metrics_data().resource_metrics\n"
        "         for sm in rm.scope_metrics for m in sm.metrics}\n"
        "assert 'budgetguard.calls' in names, names\n"
        "print('ok')\n"
    )
    assert_prints_ok(code)


def test_a_provider_named_in_the_environment_is_loaded() -> None:
    """``OTEL_PYTHON_TRACER_PROVIDER``: the API loads the SDK's provider on first use; the guard sees it."""
    code = (
        "import budgetguard\n"
        "g = budgetguard.BudgetGuard(limit_usd=1)\n"
        "assert g.engine.flows.watch.telemetry.live()\n"
        "print('ok')\n"
    )
    env = {**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"}
    assert_prints_ok(code, env)
