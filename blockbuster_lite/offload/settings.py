"""Offload mode's settings: pool sizes and the saturation threshold, from arguments or env.

Every value goes through core's validators (``parse_count``, ``parse_seconds``): a whole number
of threads from 1 to 10000, a finite threshold from 1 ms to one hour. The variables are checked
when the sanitizer activates from the environment (``validate_env``, an env hook), in every mode:
the saturation threshold is also read by the watchdog's pool sampling.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from ..core.config import parse_count, parse_seconds

__all__ = (
    "DEFAULT_OFFLOAD_THREADS",
    "DEFAULT_SATURATION_S",
    "ENV_OFFLOAD_FILE_THREADS",
    "ENV_OFFLOAD_THREADS",
    "ENV_SATURATION_MS",
    "file_capacity",
    "offload_capacity",
    "saturation_threshold",
    "set_file_capacity",
    "set_offload_capacity",
    "set_saturation_threshold",
    "validate_env",
)

T = TypeVar("T")

ENV_OFFLOAD_THREADS = "BLOCKBUSTER_LITE_OFFLOAD_THREADS"
ENV_SATURATION_MS = "BLOCKBUSTER_LITE_SATURATION_MS"
ENV_OFFLOAD_FILE_THREADS = "BLOCKBUSTER_LITE_OFFLOAD_FILE_THREADS"
DEFAULT_OFFLOAD_THREADS = 40
DEFAULT_SATURATION_S = 0.1




class _Settings:
    capacity: int | None = None  # None: not read from the environment yet
    file_capacity: int | None = None
    threshold: float | None = None


_settings = _Settings()

#: Most threads a pool may use (each is a real thread once busy).
MAX_THREADS = 10_000


def _parse_capacity(value: object, source: str, *, text: bool = True) -> int:
    return parse_count(value, source, "offload capacity", maximum=MAX_THREADS, text=text)


def _parse_threshold_ms(value: str, source: str) -> float:
    return parse_seconds(value, source, "saturation threshold", text_in_ms=True)


def _default_file_capacity() -> int:
    return min(max(os.cpu_count() or 2, 2), 8)


def _from_env(
    environ: Mapping[str, str], name: str, parse: Callable[[str, str], T], default: T
) -> T:
    raw = environ.get(name, "")
    return default if raw == "" else parse(raw, name)


def validate_env(environ: Mapping[str, str] | None = None) -> None:
    """Check the offload variables now (activation), not at the first call that reads them."""
    env = os.environ if environ is None else environ
    _from_env(env, ENV_OFFLOAD_THREADS, _parse_capacity, DEFAULT_OFFLOAD_THREADS)
    _from_env(env, ENV_OFFLOAD_FILE_THREADS, _parse_capacity, 0)
    _from_env(env, ENV_SATURATION_MS, _parse_threshold_ms, DEFAULT_SATURATION_S)


def offload_capacity() -> int:
    """Worker threads offloaded calls may use at once, per event loop."""
    if _settings.capacity is None:
        _settings.capacity = _from_env(
            os.environ, ENV_OFFLOAD_THREADS, _parse_capacity, DEFAULT_OFFLOAD_THREADS
        )
    return _settings.capacity


def set_offload_capacity(threads: int) -> None:
    """Set the offload pool's size; limiters already made follow at their next offloaded call."""
    _settings.capacity = _parse_capacity(threads, "set_capacity()", text=False)


def file_capacity() -> int:
    """Worker threads bulk file reads and writes may use at once, per event loop."""
    if _settings.file_capacity is None:
        _settings.file_capacity = _from_env(
            os.environ, ENV_OFFLOAD_FILE_THREADS, _parse_capacity, _default_file_capacity()
        )
    return _settings.file_capacity


def set_file_capacity(threads: int) -> None:
    """Set the bulk file I/O lane's size (see the module docstring)."""
    _settings.file_capacity = _parse_capacity(threads, "set_file_capacity()", text=False)


def saturation_threshold() -> float:
    """Seconds a call may wait for a worker before its pool is reported saturated."""
    if _settings.threshold is None:
        _settings.threshold = _from_env(
            os.environ, ENV_SATURATION_MS, _parse_threshold_ms, DEFAULT_SATURATION_S
        )
    return _settings.threshold


def set_saturation_threshold(seconds: float) -> None:
    _settings.threshold = parse_seconds(
        seconds, "set_saturation_threshold()", "saturation threshold"
    )
