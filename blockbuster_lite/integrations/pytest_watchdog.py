"""The pytest plugin's watchdog settings: which threshold a test runs with, and how a stall
shows in its failure.

Highest precedence first: ``@pytest.mark.blockbuster(watchdog=0.1)`` (seconds, as
``intercept``), ``--blockbuster-watchdog-ms=MS``, ``BLOCKBUSTER_LITE_WATCHDOG_MS``, the ini key
``blockbuster_watchdog_ms``; by default there is no watchdog. Each value must be finite, from
1 ms to one hour (core's ``parse_seconds``, as everywhere); a bad one is rejected naming where it
came from. ``watchdog=None`` on the marker turns the watchdog off for that test.

With a watchdog, each test's guard watches every loop the test starts (``asyncio.run``,
pytest-asyncio, anyio's plugin, ``trio.run``, loops in threads) from its first step. A stall
is a report of something that already happened: in raise mode it fails the test (its message
and the stalled stack are the failure); in warn mode it is a ``BlockingCallWarning`` in the
warnings summary and the test passes; in log and off modes it is logged. A stall that ends
during a test is reported in that test: the plugin collects pending ones as each phase ends.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..core.report import Violation

__all__ = [
    "ENV_WATCHDOG_MS",
    "WATCHDOG_HELP",
    "describe_stall",
    "marker_watchdog",
    "report_pending",
    "resolve_watchdog",
]

WATCHDOG_HELP = (
    "blocking-call sanitizer watchdog: report event-loop stalls longer than this many "
    "milliseconds (raise mode fails the test, warn mode warns)"
)
ENV_WATCHDOG_MS = "BLOCKBUSTER_LITE_WATCHDOG_MS"
_STACK_LINES = 12


def _parse_ms(value: str, source: str) -> float | None:
    from ..core.config import ConfigError, parse_watchdog_ms

    try:
        return parse_watchdog_ms(value, source)
    except ConfigError as exc:
        raise pytest.UsageError(f"blockbuster_lite: {exc}") from None


def ini_value(config: pytest.Config, name: str) -> Any:
    """The ini key ``name`` as pytest reads it, or None when no ini file nor ``-o`` sets it.

    Registered with ``default=None``, pytest 8 answers None for a key that is not set; pytest 7
    answers ``""``, which must not read as a blank value given on purpose (and refused).
    """
    value = config.getini(name)
    if value != "":
        return value
    inicfg = getattr(config, "inicfg", None)
    overrides = getattr(config.option, "override_ini", None) or ()
    if (inicfg is not None and name in inicfg) or any(
        str(item).partition("=")[0].strip() == name for item in overrides
    ):
        return value
    return None


def resolve_watchdog(config: pytest.Config) -> tuple[float | None, str]:
    """(seconds or None, source): --blockbuster-watchdog-ms > environment > ini.

    As for the mode, a value given explicitly (the option, an ini key present) counts even when
    blank, and is then refused; an empty environment variable means "not set"."""
    candidates = (
        (config.getoption("blockbuster_watchdog_ms"), "--blockbuster-watchdog-ms"),
        ((os.environ.get(ENV_WATCHDOG_MS) or "").strip() or None, ENV_WATCHDOG_MS),
        (ini_value(config, "blockbuster_watchdog_ms"), "ini option blockbuster_watchdog_ms"),
    )
    for value, source in candidates:
        if value is not None:
            return _parse_ms(str(value) or " ", source), source
    return None, ""


def marker_watchdog(value: object, source: str) -> float | None:
    """The marker's ``watchdog=`` (seconds, or None for none); fails the test when invalid."""
    from ..core.config import ConfigError, parse_watchdog_seconds

    try:
        return parse_watchdog_seconds(value, source)
    except ConfigError as exc:
        pytest.fail(f"blockbuster_lite: {exc}", pytrace=False)


def report_pending() -> None:
    """Tell now the stalls that ended but the monitor thread has not reported yet."""
    from ..watchdog import report_pending as report

    report()


def describe_stall(violation: Violation) -> list[str]:
    """The stalled stack, innermost last, under a stall's message in a failure."""
    stack = violation.stack[-_STACK_LINES:]
    lines = ["    stalled stack (most recent call last):"]
    lines.extend(f"      {line}" for line in stack)
    return lines
