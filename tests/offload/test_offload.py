"""Offload mode on plain asyncio, uvloop, anyio and trio: what moves, what does not, and why.

Every test runs real blocking calls in real worker threads; wall-clock bounds are generous
("0.3 s, not 3 s"), the real figures are in benchmarks/bench_offload.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import io
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import uvloop

import blockbuster_lite as bl
from blockbuster_lite import offload
from blockbuster_lite.core.guard import activate_from_env

ORIGINAL_SLEEP = time.sleep
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


@pytest.fixture(autouse=True)
def _restored() -> Any:
    yield
    assert time.sleep is ORIGINAL_SLEEP


def run_offload(
    main: Callable[[], Awaitable[Any]], runner: str = "asyncio"
) -> tuple[Any, bl.Guard]:
    """Run ``main`` in a fresh loop under an offload guard; its task has a portal."""
    with bl.intercept("offload") as guard:
        if runner == "trio":
            result = trio.run(offload.with_portal(main))
        elif runner == "uvloop":
            result = uvloop.run(offload.with_portal(main)())
        else:
            result = asyncio.run(offload.with_portal(main)())
    return result, guard


class LagProbe:
    def __init__(self) -> None:
        self.max_lag = 0.0
        self.running = True

    async def run(self) -> None:
        while self.running:
            start = time.perf_counter()
            await anyio.sleep(0.005)
            self.max_lag = max(self.max_lag, time.perf_counter() - start - 0.005)


async def sleepers(count: int, seconds: float) -> tuple[float, float]:
    """``count`` tasks that call time.sleep(seconds) at once: (wall, worst loop lag)."""
    probe = LagProbe()

    async def sleeper() -> None:
        time.sleep(seconds)

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe.run)
        await anyio.sleep(0.02)
        start = time.perf_counter()
        async with anyio.create_task_group() as inner:
            for _ in range(count):
                inner.start_soon(sleeper)
        wall = time.perf_counter() - start
        await anyio.sleep(0.02)
        probe.running = False
    return wall, probe.max_lag


@pytest.mark.parametrize("runner", ["asyncio", "uvloop", "trio"])
def test_blocking_sleeps_run_side_by_side(runner: str) -> None:
    (wall, lag), guard = run_offload(lambda: sleepers(10, 0.3), runner)
    assert wall < 1.5, f"10 sleeps of 0.3 s took {wall:.2f} s (one after the other: 3 s)"
    assert lag < 0.2
    sleeps = [v for v in guard.violations if v.call == "time.sleep"]
    assert len(sleeps) == 10
    assert {v.action for v in sleeps} == {bl.Mode.OFFLOAD}
    assert all(v.duration_s is not None and v.duration_s >= 0.29 for v in sleeps)
    assert all("offloaded to a worker thread" in v.message for v in sleeps)


def test_anyio_on_trio_backend() -> None:
    with bl.intercept("offload") as guard:
        wall, _ = anyio.run(offload.with_portal(lambda: sleepers(5, 0.3)), backend="trio")
    assert wall < 1.2
    assert [v.action for v in guard.violations] == [bl.Mode.OFFLOAD] * 5


def test_first_offload_per_site_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="blockbuster_lite")

    async def main() -> None:
        for _ in range(3):
            time.sleep(0.01)

    _, guard = run_offload(main)
    assert len(guard.violations) == 3
    logged = [r.getMessage() for r in caplog.records if "time.sleep" in r.getMessage()]
    assert len(logged) == 1
    assert "offloaded to a worker thread (offload mode)" in logged[0]
    assert (
        "test_offload.py" in logged[0] and "in test_first_offload_per_site_is_logged" in logged[0]
    )


def test_result_and_exception_come_back(tmp_path: Path) -> None:
    target = tmp_path / "data.txt"
    target.write_text("hello")

    async def main() -> tuple[int, str]:
        size = os.stat(target).st_size
        with pytest.raises(FileNotFoundError):
            os.stat(tmp_path / "missing")
        return size, threading.current_thread().name

    (size, thread), guard = run_offload(main)
    assert size == 5
    assert thread == threading.main_thread().name
    assert [v.call for v in guard.violations] == ["os.stat", "os.stat"]
    assert all(v.action is bl.Mode.OFFLOAD for v in guard.violations)


class Source:
    """A file-like object for shutil.copyfileobj (a patched call that runs our code inside)."""

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause
        self.seen: list[tuple[str, str]] = []
        self.done = threading.Event()
        self.chunks = [b"data"]

    def read(self, size: int = -1) -> bytes:
        self.seen.append((request_id.get(), threading.current_thread().name))
        if self.pause:
            ORIGINAL_SLEEP(self.pause)
            self.done.set()
        return self.chunks.pop() if self.chunks else b""


class Sink:
    def write(self, data: bytes) -> int:
        request_id.set("set in the worker")
        return len(data)


def test_context_variables_reach_the_worker_and_come_back() -> None:
    async def main() -> tuple[str, list[tuple[str, str]]]:
        request_id.set("set in the task")
        source = Source()
        shutil.copyfileobj(source, Sink())
        return request_id.get(), source.seen

    (after, seen), guard = run_offload(main)
    assert [v.call for v in guard.violations] == ["shutil.copyfileobj"]
    assert seen[0][0] == "set in the task"  # the value reached the worker...
    assert seen[0][1] != threading.main_thread().name  # ...which is another thread
    assert after == "set in the worker"  # and the worker's change came back
    assert request_id.get() == "none"  # the test's own context is untouched


def test_cancelled_task_gets_cancelled_error_at_once_and_the_thread_finishes() -> None:
    source = Source(pause=0.6)

    async def blocked() -> None:
        shutil.copyfileobj(source, Sink())

    async def main() -> float:
        task = asyncio.get_running_loop().create_task(blocked())
        await asyncio.sleep(0.1)
        start = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - start

    waited, guard = run_offload(main)
    assert waited < 0.3, f"cancellation took {waited:.2f} s (the call still had 0.5 s to go)"
    assert not source.done.is_set()
    assert source.done.wait(2), "the worker thread did not finish its call"
    assert [v.action for v in guard.violations] == [bl.Mode.OFFLOAD]


def test_trio_cancellation() -> None:
    source = Source(pause=0.6)

    async def main() -> float:
        start = time.perf_counter()
        with trio.move_on_after(0.1):
            shutil.copyfileobj(source, Sink())
            raise AssertionError("not cancelled")
        return time.perf_counter() - start

    waited, _ = run_offload(main, "trio")
    assert waited < 0.4
    assert source.done.wait(2)


def test_atomicity_caveat_read_modify_write_loses_updates() -> None:
    # Offloading inserts a suspension point where the code has none: other tasks run while the
    # call is in the worker. A read-modify-write spanning the call is then a race, exactly as if
    # it spanned an ``await``; with the call made on the loop, nothing interleaves.
    counter = {"value": 0}

    async def increment() -> None:
        value = counter["value"]
        time.sleep(0.05)
        counter["value"] = value + 1

    async def main() -> int:
        counter["value"] = 0
        await asyncio.gather(*(increment() for _ in range(10)))
        return counter["value"]

    offloaded, _ = run_offload(main)
    assert offloaded < 10  # every task read 0 before any wrote: updates lost

    with bl.intercept("warn"), warnings.catch_warnings():
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        blocking = asyncio.run(main())
    assert blocking == 10  # made on the loop the calls serialize everything, and block it


def test_contended_lock_is_never_offloaded() -> None:
    async def main() -> None:
        lock = threading.Lock()  # created while active: a checked lock
        lock.acquire()
        threading.Timer(0.1, lock.release).start()
        with lock:
            pass

    with pytest.warns(bl.BlockingCallWarning) as record:
        _, guard = run_offload(main)
    message = str(record[0].message)
    assert "could not offload: threading.Lock.acquire() is never offloaded" in message
    assert "deadlock" in message
    assert [v.action for v in guard.violations] == [bl.Mode.WARN]


LOCK_HELD_ACROSS_OFFLOAD = """
import asyncio, threading, time, warnings
import blockbuster_lite as bl
from blockbuster_lite import offload

warnings.simplefilter("ignore", bl.BlockingCallWarning)


async def main():
    lock = threading.Lock()
    order = []

    async def holder():
        with lock:
            order.append("holder in")
            time.sleep(0.3)  # offloaded: the task is suspended, holding the lock
            order.append("holder out")

    async def waiter():
        await asyncio.sleep(0.05)
        with lock:  # made on the loop thread, this wait would stop the holder from resuming
            order.append("waiter in")

    await asyncio.gather(holder(), waiter())
    return order


with bl.intercept("offload") as guard:
    print(asyncio.run(offload.with_portal(main)()))
print(sorted({(v.call, v.action.value) for v in guard.violations}))
"""


def test_lock_held_across_an_offloaded_call_does_not_deadlock() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOCK_HELD_ACROSS_OFFLOAD],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "['holder in', 'holder out', 'waiter in']"
    assert lines[1] == "[('threading.Lock.acquire', 'warn'), ('time.sleep', 'offload')]"


def test_loop_callback_is_not_offloaded() -> None:
    async def main() -> None:
        done = asyncio.Event()

        def callback() -> None:
            time.sleep(0.01)
            done.set()

        asyncio.get_running_loop().call_soon(callback)
        await done.wait()

    with pytest.warns(bl.BlockingCallWarning, match="could not offload: not inside a task"):
        _, guard = run_offload(main)
    assert [v.action for v in guard.violations] == [bl.Mode.WARN]


def test_task_without_portal_is_not_offloaded() -> None:
    async def main() -> None:
        time.sleep(0.01)

    no_portal = "could not offload: no portal in this task"
    # A sync guard: nothing gave the task a portal.
    with bl.intercept("offload") as guard, pytest.warns(bl.BlockingCallWarning, match=no_portal):
        asyncio.run(main())
    assert [v.action for v in guard.violations] == [bl.Mode.WARN]
    assert "ensure_portal()" in guard.violations[0].message


def test_call_in_a_cancelled_scope_runs_in_place() -> None:
    # Clean-up code in a cancelled anyio scope must run: a checkpoint there would raise instead.
    async def main() -> bool:
        ran = False
        with anyio.CancelScope() as scope:
            scope.cancel()
            try:
                await anyio.sleep(1)
            finally:
                time.sleep(0.01)
                ran = True
        return ran

    with pytest.warns(bl.BlockingCallWarning, match="the task is being cancelled"):
        ran, _ = run_offload(main)
    assert ran


def test_async_guard_gives_the_task_a_portal() -> None:
    async def main() -> list[bl.Mode]:
        async with bl.intercept("offload") as guard:
            time.sleep(0.01)
        return [v.action for v in guard.violations]

    assert asyncio.run(main()) == [bl.Mode.OFFLOAD]


def test_decorated_coroutine_function_gets_a_portal() -> None:
    @bl.intercept("offload")
    async def main() -> str:
        await asyncio.gather(asyncio.sleep(0))  # child tasks too
        time.sleep(0.01)
        return "ok"

    with warnings.catch_warnings():
        warnings.simplefilter("error", bl.BlockingCallWarning)
        assert asyncio.run(main()) == "ok"


def test_task_factory_composes_and_uninstalls() -> None:
    created: list[str] = []

    def previous(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        created.append("previous")
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def child() -> str:
        time.sleep(0.01)
        return "child"

    async def main() -> str:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(previous)
        offload.install_task_factory()
        offload.install_task_factory()  # idempotent
        result = await loop.create_task(child())
        offload.uninstall_task_factory()
        assert loop.get_task_factory() is previous
        loop.set_task_factory(None)
        return result

    with bl.intercept("offload") as guard:
        assert asyncio.run(main()) == "child"
    assert created == ["previous"]
    assert [v.action for v in guard.violations] == [bl.Mode.OFFLOAD]


def test_file_opened_by_an_offloaded_open_moves_its_reads(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def writer() -> None:  # the reader's open() and read() both wait for this thread
        ORIGINAL_SLEEP(0.2)
        with open(fifo, "wb") as f:
            ORIGINAL_SLEEP(0.3)
            f.write(b"x" * 100_000)

    async def main() -> tuple[int, bool, float]:
        threading.Thread(target=writer).start()
        probe = LagProbe()
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe.run)
            with open(fifo, "rb") as f:
                data = f.read()
                is_reader = isinstance(f, io.BufferedReader)
            probe.running = False
        return len(data), is_reader, probe.max_lag

    (size, is_reader, lag), guard = run_offload(main)
    assert size == 100_000
    assert is_reader
    assert lag < 0.15, f"the loop stalled {lag * 1000:.0f} ms while open()/read() waited 0.5 s"
    assert [v.call for v in guard.violations] == ["open"]


def test_small_file_reads_stay_on_the_loop(tmp_path: Path) -> None:
    target = tmp_path / "small.txt"
    target.write_text("a\nb\n")

    async def main() -> tuple[str, list[str], type[Any]]:
        with open(target) as f:
            first = f.read(2)
            rest = list(f)
            kind = type(f)
        return first, rest, kind

    (first, rest, kind), _ = run_offload(main)
    assert (first, rest) == ("a\n", ["b\n"])
    assert kind is offload.OffloadingFile


def test_calls_off_the_loop_are_untouched() -> None:
    with bl.intercept("offload") as guard:
        thread = threading.Thread(target=time.sleep, args=(0.01,))
        thread.start()
        thread.join()
        time.sleep(0.01)
    assert guard.violations == []


# --- configuration ----------------------------------------------------------------------------


def test_offload_mode_from_every_entry_point() -> None:
    assert bl.intercept("offload").mode is bl.Mode.OFFLOAD
    guard = bl.activate("offload")
    try:
        assert guard.mode is bl.Mode.OFFLOAD
    finally:
        bl.deactivate()
    guard = activate_from_env({"BLOCKBUSTER_LITE_MODE": "offload"})
    try:
        assert guard is not None and guard.mode is bl.Mode.OFFLOAD
    finally:
        bl.deactivate()


def test_invalid_capacity_names_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    from blockbuster_lite.offload import settings as _offload_settings

    monkeypatch.setattr(_offload_settings, "_settings", _offload_settings._Settings())
    monkeypatch.setenv("BLOCKBUSTER_LITE_OFFLOAD_THREADS", "lots")
    with pytest.raises(bl.ConfigError, match="'lots' from BLOCKBUSTER_LITE_OFFLOAD_THREADS"):
        bl.intercept("offload")
    monkeypatch.setenv("BLOCKBUSTER_LITE_OFFLOAD_THREADS", "8")
    monkeypatch.setenv("BLOCKBUSTER_LITE_SATURATION_MS", "-1")
    with pytest.raises(bl.ConfigError, match="'-1' from BLOCKBUSTER_LITE_SATURATION_MS"):
        bl.intercept("offload")
    monkeypatch.setenv("BLOCKBUSTER_LITE_SATURATION_MS", "250")
    bl.intercept("offload")
    assert offload.capacity() == 8
    assert offload.saturation_threshold() == 0.25
    with pytest.raises(bl.ConfigError, match=r"from set_capacity\(\)"):
        offload.set_capacity(0)


HIDE_GREENBACK = "import sys; sys.modules['greenback'] = None\n"


def test_missing_greenback_is_a_clear_error() -> None:
    code = (
        "import asyncio, os, blockbuster_lite as bl\n"
        "from blockbuster_lite import offload\n"
        "try:\n"
        "    bl.intercept('offload')\n"
        "except bl.ConfigError as exc:\n"
        "    print('intercept:', exc)\n"
        "try:\n"
        "    bl.activate_from_env({'BLOCKBUSTER_LITE_MODE': 'offload'})\n"
        "except bl.ConfigError as exc:\n"
        "    print('env:', exc)\n"
        "print('portal:', asyncio.run(offload.ensure_portal()))\n"
        "with bl.intercept('warn'):\n"
        "    pass\n"
        "print('warn mode works')\n"
    )
    # The variable is given to activate_from_env() only: set in the environment, the start-up
    # hook would import greenback before the code could hide it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKBUSTER_LITE_")}
    result = subprocess.run(
        [sys.executable, "-c", HIDE_GREENBACK + code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    needs = "needs the 'greenback' package: pip install 'blockbuster-lite[offload]'"
    assert f"intercept: mode 'offload' from intercept() {needs}" in result.stdout, result.stdout
    assert f"env: mode 'offload' from BLOCKBUSTER_LITE_MODE {needs}" in result.stdout
    assert "portal: False" in result.stdout
    assert "warn mode works" in result.stdout


def test_offload_mode_refuses_an_anyio_older_than_3_7(monkeypatch: pytest.MonkeyPatch) -> None:
    from blockbuster_lite.offload import portal

    assert portal.anyio_version() >= (3, 7)  # type: ignore[operator]
    monkeypatch.setattr(portal, "anyio_version", lambda: (3, 6))
    with pytest.raises(bl.ConfigError) as info:
        bl.intercept("offload")
    assert str(info.value) == (
        "mode 'offload' from intercept() needs anyio 3.7 or later (this environment has anyio "
        "3.6): pip install 'blockbuster-lite[offload]'"
    )


def test_the_worker_uses_the_installed_anyios_name_for_abandoning_a_thread() -> None:
    import inspect

    import anyio.to_thread

    from blockbuster_lite.offload import worker

    assert worker._ABANDON_ON_CANCEL in inspect.signature(anyio.to_thread.run_sync).parameters


def test_tasks_given_portals_keep_anyio_task_group_semantics() -> None:
    # A child started and cancelled at once still runs up to its first checkpoint, as without
    # offload mode; bestowing a portal at task creation used to make anyio cancel it unstarted
    # ("coroutine 'child' was never awaited").
    started: list[str] = []

    async def child(name: str) -> None:
        started.append(name)
        await anyio.sleep(1)

    async def main() -> None:
        await offload.ensure_portal()
        async with anyio.create_task_group() as tg:
            tg.start_soon(child, "cancelled at once")
            tg.cancel_scope.cancel()
        task = asyncio.get_running_loop().create_task(child("cancelled by asyncio"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with bl.intercept("offload"):
            asyncio.run(main())
        gc.collect()  # an unawaited coroutine would warn (an error here) when collected
    assert started == ["cancelled at once"]
