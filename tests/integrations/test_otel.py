"""OpenTelemetry reporting, checked with the SDK's in-memory span exporter and metric reader."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import blockbuster_lite as bl
from blockbuster_lite.core.guard import process_guard
from blockbuster_lite.core.state import state
from blockbuster_lite.otel import (
    EVENT_CALL,
    EVENT_STALL,
    METRIC_BLOCKED_TIME,
    disable_opentelemetry,
    enable_opentelemetry,
    opentelemetry_enabled,
)


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("tests")

    def finished(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.spans.get_finished_spans() if s.name == name]
        return span

    def points(self) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == METRIC_BLOCKED_TIME
            for point in metric.data.data_points
        ]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    observers = state.observers
    otel = Telemetry()
    enable_opentelemetry(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    try:
        yield otel
    finally:
        disable_opentelemetry()
        assert state.observers == observers


def blocking_handler() -> None:
    time.sleep(0.02)  # <- blocking


def spin(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(10_000):
            pass


def line_of(marker: str) -> int:
    with open(__file__, encoding="utf-8") as source:
        return next(n for n, line in enumerate(source, 1) if line.rstrip().endswith(marker))


def quietly(coroutine: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        return asyncio.run(coroutine)


def test_a_blocking_call_is_an_event_on_the_current_span_and_a_histogram_point(
    telemetry: Telemetry,
) -> None:
    async def main() -> None:
        with telemetry.tracer.start_as_current_span("request"), bl.intercept("warn"):
            blocking_handler()

    quietly(main())
    (event,) = telemetry.finished("request").events
    assert event.name == EVENT_CALL
    attributes = dict(event.attributes or {})
    assert attributes["blockbuster_lite.call"] == "time.sleep"
    assert attributes["code.function"] == "blocking_handler"
    assert attributes["code.filepath"] == __file__
    assert attributes["code.lineno"] == line_of("# <- blocking")
    assert attributes["blockbuster_lite.mode"] == "warn"
    assert attributes["blockbuster_lite.kind"] == "call"
    assert attributes["blockbuster_lite.site"].endswith(f"test_otel.py:{line_of('# <- blocking')}")
    assert 0.02 <= attributes["blockbuster_lite.duration_s"] < 1
    (point,) = telemetry.points()
    assert dict(point.attributes) == {"call": "time.sleep", "kind": "call"}
    assert point.count == 1 and 0.02 <= point.sum < 1


def test_raise_mode_has_an_event_but_no_blocked_time(telemetry: Telemetry) -> None:
    async def main() -> None:
        with (
            telemetry.tracer.start_as_current_span("request"),
            bl.intercept("raise"),
            pytest.raises(bl.BlockingCallError),
        ):
            blocking_handler()

    asyncio.run(main())
    (event,) = telemetry.finished("request").events
    attributes = dict(event.attributes or {})
    assert attributes["blockbuster_lite.mode"] == "raise"
    assert "blockbuster_lite.duration_s" not in attributes
    assert telemetry.points() == []


def test_a_stall_is_an_event_on_the_span_the_stalled_task_was_in(telemetry: Telemetry) -> None:
    async def main() -> None:
        with bl.intercept("warn", watchdog=0.1):
            with telemetry.tracer.start_as_current_span("request"):
                await asyncio.sleep(0.05)
                spin(0.25)
                await asyncio.sleep(0.1)  # the monitor reports within one tick
            with telemetry.tracer.start_as_current_span("elsewhere"):
                await asyncio.sleep(0.05)

    quietly(main())
    request = telemetry.finished("request")
    (event,) = request.events
    assert event.name == EVENT_STALL
    attributes = dict(event.attributes or {})
    assert (attributes["blockbuster_lite.call"], attributes["code.function"]) == (
        "Python code",
        "spin",
    )
    assert 0.225 <= attributes["blockbuster_lite.duration_s"] <= 0.3
    assert request.start_time is not None and event.timestamp >= request.start_time  # when it began
    assert telemetry.finished("elsewhere").events == ()
    (point,) = telemetry.points()
    assert dict(point.attributes) == {"call": "Python code", "kind": "stall"}


def test_a_stall_that_outlived_its_span_becomes_a_child_span(telemetry: Telemetry) -> None:
    async def main() -> None:
        with bl.intercept("warn", watchdog=0.1):
            with telemetry.tracer.start_as_current_span("request"):
                await asyncio.sleep(0.05)
                spin(0.25)
            await asyncio.sleep(0.1)  # the span has ended when the monitor reports

    quietly(main())
    request = telemetry.finished("request")
    assert request.events == ()
    stall = telemetry.finished(EVENT_STALL)
    assert stall.parent is not None and stall.parent.span_id == request.context.span_id
    assert stall.start_time is not None and stall.end_time is not None
    assert 0.225e9 <= stall.end_time - stall.start_time <= 0.3e9
    assert dict(stall.attributes or {})["code.function"] == "spin"


def test_the_call_attribute_of_the_metric_leaves_out_arguments(telemetry: Telemetry) -> None:
    described = bl.Violation(
        "psycopg2.cursor.execute(SELECT 1)", "/srv/app.py", 3, "f", duration_s=0.01
    )
    with telemetry.tracer.start_as_current_span("request"):
        for observer in state.observers:
            observer(described)
    (point,) = telemetry.points()
    assert dict(point.attributes) == {"call": "psycopg2.cursor.execute", "kind": "call"}
    (event,) = telemetry.finished("request").events
    assert (
        dict(event.attributes or {})["blockbuster_lite.call"] == "psycopg2.cursor.execute(SELECT 1)"
    )


def test_disabled_reports_nothing() -> None:
    otel = Telemetry()
    observers = state.observers
    enable_opentelemetry(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    enable_opentelemetry()  # twice: a no-op
    assert len(state.observers) == len(observers) + 1
    disable_opentelemetry()
    disable_opentelemetry()
    assert state.observers == observers and not opentelemetry_enabled()

    async def main() -> None:
        with otel.tracer.start_as_current_span("request"), bl.intercept("warn"):
            blocking_handler()

    quietly(main())
    assert otel.finished("request").events == ()
    assert otel.points() == []


def test_the_environment_turns_it_on_and_rejects_bad_values() -> None:
    observers = state.observers
    guard = bl.activate_from_env({"BLOCKBUSTER_LITE_MODE": "warn", "BLOCKBUSTER_LITE_OTEL": "1"})
    try:
        assert guard is not None and opentelemetry_enabled()
    finally:
        bl.deactivate()
        disable_opentelemetry()
    assert state.observers == observers
    with pytest.raises(bl.ConfigError, match="'maybe' from BLOCKBUSTER_LITE_OTEL"):
        bl.activate_from_env({"BLOCKBUSTER_LITE_MODE": "warn", "BLOCKBUSTER_LITE_OTEL": "maybe"})
    assert process_guard() is None  # nothing was activated


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_zero_cost_until_enabled() -> None:
    result = run_python(
        """
        import asyncio, sys, time, warnings
        import blockbuster_lite as bl, blockbuster_lite.otel
        warnings.simplefilter("ignore")
        async def main():
            with bl.intercept("warn", watchdog=0.1):
                time.sleep(0.01)
        asyncio.run(main())
        assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported"
        print("ok")
        """
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_without_opentelemetry_installed() -> None:
    result = run_python(
        """
        import logging, sys
        sys.modules["opentelemetry"] = None  # as if not installed
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        import blockbuster_lite as bl
        from blockbuster_lite.otel import enable_opentelemetry
        try:
            enable_opentelemetry()
        except ImportError as exc:
            print("ImportError:", exc)
        guard = bl.activate_from_env({"BLOCKBUSTER_LITE_MODE": "warn", "BLOCKBUSTER_LITE_OTEL": "1"})
        print("active:", guard is not None and guard.active)
        """
    )
    assert (
        "ImportError: blockbuster_lite: OpenTelemetry reporting needs opentelemetry-api"
        in result.stdout
    )
    assert "pip install 'blockbuster_lite[otel]'" in result.stdout
    assert "active: True" in result.stdout
    assert "BLOCKBUSTER_LITE_OTEL=1 is ignored" in result.stderr
