"""OpenTelemetry: every violation an event on the current span, blocked time a histogram.

Optional (``pip install blockbuster_lite[otel]``) and off by default. ``enable_opentelemetry()``
or ``BLOCKBUSTER_LITE_OTEL=1`` (read with the other ``BLOCKBUSTER_LITE_*`` variables) add one
observer of recorded violations; until then nothing imports ``opentelemetry`` and nothing runs.

For each violation:

* an event on the current span: ``blockbuster_lite.blocking_call`` for a patched call,
  ``blockbuster_lite.loop_stall`` for a watchdog stall, with the attributes ``code.function``,
  ``code.filepath``, ``code.lineno``, ``blockbuster_lite.call``, ``blockbuster_lite.site``,
  ``blockbuster_lite.mode`` (the action taken), ``blockbuster_lite.kind``, and
  ``blockbuster_lite.duration_s`` and ``http.route`` when known. A stall is timed by the watchdog's
  thread after the fact; it reports in a copy of the stalled task's context, so "current span"
  is the span that task was in. The event is stamped with the time the stall began. If that span
  has ended by then (the request finished right after the stall), a short child span of it,
  named after the event and spanning the stall, carries the same attributes instead.
* the histogram ``blockbuster_lite.blocked_time`` (unit ``s``) records the duration with the
  attributes ``call`` (the call family, without the arguments some calls show, to keep
  cardinality low) and ``kind``. String attributes have control characters escaped. Raise mode stops a call before it runs: an event, no duration.

The global tracer and meter providers are used unless others are given.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..core.config import parse_flag
from ..core.extensions import extensions
from ..core.report import Violation, escape_control, logger
from ..core.state import state

__all__ = (
    "ENV_OTEL",
    "EVENT_CALL",
    "EVENT_STALL",
    "METRIC_BLOCKED_TIME",
    "disable_opentelemetry",
    "enable_opentelemetry",
    "opentelemetry_enabled",
)

ENV_OTEL = "BLOCKBUSTER_LITE_OTEL"
EVENT_CALL = "blockbuster_lite.blocking_call"
EVENT_STALL = "blockbuster_lite.loop_stall"
METRIC_BLOCKED_TIME = "blockbuster_lite.blocked_time"

_INSTRUMENTATION = "blockbuster_lite"


class _Telemetry:
    """The observer: one per process while enabled."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        from opentelemetry import metrics, trace

        from ..core.version import __version__

        self._trace = trace
        self._tracer = trace.get_tracer(_INSTRUMENTATION, __version__, tracer_provider)
        meter = metrics.get_meter(_INSTRUMENTATION, __version__, meter_provider)
        self._histogram = meter.create_histogram(
            METRIC_BLOCKED_TIME,
            unit="s",
            description="Time the event loop was blocked, by blocking call or stall",
        )

    def __call__(self, violation: Violation) -> None:
        stall = violation.kind == "stall"
        name = EVENT_STALL if stall else EVENT_CALL
        attributes = _attributes(violation)
        span = self._trace.get_current_span()
        duration = violation.duration_s
        if not stall or duration is None:
            if span.is_recording():
                span.add_event(name, attributes)
        else:
            began = time.time_ns() - int(duration * 1e9)
            if span.is_recording():
                span.add_event(name, attributes, timestamp=began)
            elif span.get_span_context().is_valid:
                child = self._tracer.start_span(name, attributes=attributes, start_time=began)
                child.end(end_time=began + int(duration * 1e9))
        if duration is not None:
            family = violation.family or violation.call.split("(", 1)[0]
            self._histogram.record(duration, {"call": family, "kind": violation.kind})


def _attributes(violation: Violation) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "code.function": escape_control(violation.function),
        "code.filepath": escape_control(violation.filename),
        "code.lineno": violation.lineno,
        "blockbuster_lite.call": escape_control(violation.call),
        "blockbuster_lite.site": violation.site,
        "blockbuster_lite.mode": violation.action.value,
        "blockbuster_lite.kind": violation.kind,
    }
    if violation.duration_s is not None:
        attributes["blockbuster_lite.duration_s"] = violation.duration_s
    route = violation.context.get("route")
    if route:
        attributes["http.route"] = escape_control(str(route))
    return attributes


_lock = threading.Lock()
_telemetry: _Telemetry | None = None


def enable_opentelemetry(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Report violations to OpenTelemetry (idempotent; the providers default to the global ones).

    Raises ImportError, saying what to install, when ``opentelemetry-api`` is missing.
    """
    global _telemetry
    try:
        telemetry = _Telemetry(tracer_provider, meter_provider)
    except ImportError as exc:
        raise ImportError(
            "blockbuster_lite: OpenTelemetry reporting needs opentelemetry-api "
            "(pip install 'blockbuster_lite[otel]')"
        ) from exc
    with _lock:
        if _telemetry is not None:
            logger.debug("blockbuster_lite: OpenTelemetry reporting already enabled")
            return
        _telemetry = telemetry
        state.observers = (*state.observers, telemetry)


def disable_opentelemetry() -> None:
    """Stop reporting to OpenTelemetry (nothing happens if it was not enabled)."""
    global _telemetry
    with _lock:
        telemetry, _telemetry = _telemetry, None
        if telemetry is not None:
            state.observers = tuple(o for o in state.observers if o is not telemetry)


def opentelemetry_enabled() -> bool:
    return _telemetry is not None


def otel_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``BLOCKBUSTER_LITE_OTEL`` asks for OpenTelemetry; ConfigError naming it if invalid."""
    env = os.environ if environ is None else environ
    return parse_flag(env.get(ENV_OTEL, ""), ENV_OTEL)


def enable_from_env(wanted: bool) -> None:
    """Enable when the environment asked; a missing package is logged, never fatal at start-up."""
    if not wanted:
        return
    try:
        enable_opentelemetry()
    except ImportError as exc:
        logger.warning("%s; %s=1 is ignored", exc, ENV_OTEL)


def env_hook(environ: Mapping[str, str] | None = None) -> Callable[[], None]:
    """For ``activate_from_env``: validate ``BLOCKBUSTER_LITE_OTEL`` now, enable once active."""
    wanted = otel_from_env(environ)
    return lambda: enable_from_env(wanted)


extensions.add_env_hook(env_hook)
