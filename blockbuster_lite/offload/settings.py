"""Offload mode's settings: pool sizes and the saturation threshold, from arguments or env."""

from __future__ import annotations

import math
import os

from ..core.config import ConfigError

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
)

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


def _parse_capacity(value: object, source: str) -> int:
    try:
        number = int(str(value).strip()) if isinstance(value, str) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ConfigError(
            f"invalid offload capacity {value!r} from {source}: expected a whole number of "
            "threads >= 1"
        )
    return number


def offload_capacity() -> int:
    """Worker threads offloaded calls may use at once, per event loop."""
    if _settings.capacity is None:
        raw = os.environ.get(ENV_OFFLOAD_THREADS, "").strip()
        capacity = _parse_capacity(raw, ENV_OFFLOAD_THREADS) if raw else DEFAULT_OFFLOAD_THREADS
        _settings.capacity = capacity
    return _settings.capacity


def set_offload_capacity(threads: int) -> None:
    """Set the offload pool's size; limiters already made follow at their next offloaded call."""
    _settings.capacity = _parse_capacity(threads, "set_capacity()")


def file_capacity() -> int:
    """Worker threads bulk file reads and writes may use at once, per event loop."""
    if _settings.file_capacity is None:
        raw = os.environ.get(ENV_OFFLOAD_FILE_THREADS, "").strip()
        default = min(max(os.cpu_count() or 2, 2), 8)
        capacity = _parse_capacity(raw, ENV_OFFLOAD_FILE_THREADS) if raw else default
        _settings.file_capacity = capacity
    return _settings.file_capacity


def set_file_capacity(threads: int) -> None:
    """Set the bulk file I/O lane's size (see the module docstring)."""
    _settings.file_capacity = _parse_capacity(threads, "set_file_capacity()")


def saturation_threshold() -> float:
    """Seconds a call may wait for a worker before its pool is reported saturated."""
    if _settings.threshold is None:
        raw = os.environ.get(ENV_SATURATION_MS, "").strip()
        threshold = DEFAULT_SATURATION_S
        if raw:
            try:
                milliseconds = float(raw)
            except ValueError:
                milliseconds = math.nan
            if not milliseconds > 0 or not math.isfinite(milliseconds):
                raise ConfigError(
                    f"invalid saturation threshold {raw!r} from {ENV_SATURATION_MS}: "
                    "expected milliseconds > 0"
                )
            threshold = milliseconds / 1000
        _settings.threshold = threshold
    return _settings.threshold


def set_saturation_threshold(seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ConfigError(
            f"invalid saturation threshold {seconds!r} from set_saturation_threshold(): "
            "expected seconds > 0"
        )
    _settings.threshold = float(seconds)
