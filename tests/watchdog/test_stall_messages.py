"""A stall the catalogue missed names its culprit: the innermost user frame, what it called,
the call at the top of the stack when that went deeper, and that the watchdog saw it."""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import blockbuster_lite as bl

HELD = threading.Lock()  # created before any guard: a plain _thread.lock, never wrapped


class Cache:
    def __init__(self) -> None:
        self._lock = HELD

    def get(self) -> bool:
        return self._lock.acquire(timeout=0.3)  # <- acquire


def _line(marker: str) -> int:
    text = Path(__file__).read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(text, 1) if line.endswith(marker))


@pytest.fixture
def vialib(tmp_path: Path) -> Iterator[ModuleType]:
    """A third-party library (it lives in site-packages) that blocks in a C call."""
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "vialib.py").write_text(
        textwrap.dedent(
            """
            import signal

            def wait_for_data(seconds):
                # a C wait outside the catalogue (select.poll is checked by its own wrapper)
                return signal.sigtimedwait([signal.SIGUSR2], seconds)
            """
        )
    )
    sys.path.insert(0, str(site))
    try:
        yield importlib.import_module("vialib")
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("vialib", None)


def run_stall(work: object) -> bl.Guard:
    async def main() -> bl.Guard:
        with bl.intercept("warn", watchdog=0.1) as guard:
            await asyncio.sleep(0.02)
            work()  # type: ignore[operator]
            await asyncio.sleep(0.02)
        return guard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        return asyncio.run(main())


def test_a_lock_acquire_is_named_with_the_users_line() -> None:
    HELD.acquire()
    try:
        guard = run_stall(Cache().get)
    finally:
        HELD.release()
    (stall,) = guard.violations
    assert stall.kind == "stall"
    assert (stall.call, stall.function, stall.lineno) == (
        "_thread.lock.acquire",
        "Cache.get",
        _line("# <- acquire"),
    )
    message = stall.message
    assert f"in _thread.lock.acquire from tests/watchdog/test_stall_messages.py:{stall.lineno} in Cache.get" in message
    assert "seen by the watchdog, not intercepted" in message
    assert "top of the stack" not in message  # the user's frame made the call itself


def test_a_call_that_went_deeper_names_the_top_of_the_stack(vialib: ModuleType) -> None:
    def handler() -> None:
        vialib.wait_for_data(0.3)  # <- via

    guard = run_stall(handler)
    (stall,) = guard.violations
    assert (stall.call, stall.lineno) == ("vialib.wait_for_data", _line("# <- via"))
    assert "; top of the stack: signal.sigtimedwait; " in stall.message
    assert stall.stack[-1].endswith("in handler")


def test_a_stall_is_told_once_per_site_but_recorded_each_time() -> None:
    def spin() -> None:
        deadline = time.perf_counter() + 0.2
        while time.perf_counter() < deadline:
            pass

    async def main() -> tuple[bl.Guard, list[warnings.WarningMessage]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with bl.intercept("warn", watchdog=0.1) as guard:
                for _ in range(3):
                    await asyncio.sleep(0.02)
                    spin()
                await asyncio.sleep(0.02)
        return guard, caught

    guard, caught = asyncio.run(main())
    assert len(guard.violations) == 3
    assert len([w for w in caught if issubclass(w.category, bl.BlockingCallWarning)]) == 1
