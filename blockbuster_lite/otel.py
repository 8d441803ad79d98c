"""OpenTelemetry reporting: the code lives in ``integrations/otel.py``."""

from __future__ import annotations

from .integrations.otel import ENV_OTEL as ENV_OTEL
from .integrations.otel import EVENT_CALL as EVENT_CALL
from .integrations.otel import EVENT_STALL as EVENT_STALL
from .integrations.otel import METRIC_BLOCKED_TIME as METRIC_BLOCKED_TIME
from .integrations.otel import disable_opentelemetry as disable_opentelemetry
from .integrations.otel import enable_opentelemetry as enable_opentelemetry
from .integrations.otel import opentelemetry_enabled as opentelemetry_enabled

__all__ = (
    "ENV_OTEL",
    "EVENT_CALL",
    "EVENT_STALL",
    "METRIC_BLOCKED_TIME",
    "disable_opentelemetry",
    "enable_opentelemetry",
    "opentelemetry_enabled",
)
