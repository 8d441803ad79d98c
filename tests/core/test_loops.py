"""The hot-path question "is this thread running an event loop now?" for every supported loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
import trio
from helpers import LOOPS, calls, run_on

import blockbuster_lite as bl
from blockbuster_lite.core.loop import current_library, current_task_name, on_loop_thread

LIBRARY = {
    "asyncio": "asyncio",
    "uvloop": "asyncio",
    "anyio-asyncio": "asyncio",
    "anyio-trio": "trio",
    "trio": "trio",
}


def answers() -> tuple[bool, str | None]:
    return on_loop_thread(), current_library()


async def in_worker_thread(loop: str) -> tuple[bool, str | None]:
    if loop == "trio":
        return await trio.to_thread.run_sync(answers)
    if loop.startswith("anyio"):
        return await anyio.to_thread.run_sync(answers)
    return await asyncio.to_thread(answers)


def test_no_loop_on_a_plain_thread() -> None:
    assert answers() == (False, None)
    assert current_task_name() is None


@pytest.mark.parametrize("loop", LOOPS)
def test_the_loop_thread_is_recognised(loop: str) -> None:
    async def main() -> tuple[bool, str | None]:
        return answers()

    with bl.intercept("off"):  # trio's run state is looked up when a guard first activates
        assert run_on(loop, main) == (True, LIBRARY[loop])
        assert answers() == (False, None)  # and not once the loop has stopped


@pytest.mark.parametrize("loop", LOOPS)
def test_worker_threads_of_the_loop_are_not_loop_threads(loop: str) -> None:
    async def main() -> tuple[bool, str | None]:
        return await in_worker_thread(loop)

    with bl.intercept("off"):
        assert run_on(loop, main) == (False, None)


@pytest.mark.parametrize("loop", LOOPS)
def test_time_sleep_is_caught_on_every_loop(loop: str) -> None:
    async def main() -> None:
        with pytest.raises(bl.BlockingCallError):
            time.sleep(0.0001)
        # and not in the loop's worker threads
        if loop == "trio":
            await trio.to_thread.run_sync(time.sleep, 0.0001)
        else:
            await anyio.to_thread.run_sync(time.sleep, 0.0001)

    with bl.intercept("raise") as guard:
        run_on(loop, main)
    assert calls(guard) == ["time.sleep"]


def test_asyncio_task_names() -> None:
    async def named() -> str | None:
        return current_task_name()

    async def main() -> str | None:
        return await asyncio.create_task(named(), name="fetch-user")

    assert asyncio.run(main()) == "fetch-user"


def test_trio_task_names() -> None:
    async def main() -> str | None:
        return current_task_name()

    with bl.intercept("off"):
        name = trio.run(main)
    assert name is not None and name.endswith("main")


def test_violation_task_name_on_trio() -> None:
    async def worker() -> None:
        time.sleep(0.0001)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, name="trio-worker")

    with bl.intercept("log") as guard:
        trio.run(main)
    assert [v.task_name for v in guard.violations] == ["trio-worker"]


def test_a_loop_in_another_thread_does_not_make_this_thread_a_loop_thread() -> None:
    started, stop = threading.Event(), threading.Event()

    def run_loop() -> None:
        async def main() -> None:
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.001)

        asyncio.run(main())

    thread = threading.Thread(target=run_loop)
    thread.start()
    try:
        assert started.wait(5)
        assert answers() == (False, None)
        with bl.intercept("raise") as guard:
            time.sleep(0.0001)  # this thread drives no loop
    finally:
        stop.set()
        thread.join()
    assert guard.violations == []


def test_a_thread_running_its_own_loop_inside_a_worker_is_checked() -> None:
    def nested() -> None:
        async def inner() -> None:
            time.sleep(0.0001)

        asyncio.run(inner())

    async def main() -> None:
        await asyncio.to_thread(nested)

    with bl.intercept("log") as guard:
        asyncio.run(main())
    assert calls(guard) == ["time.sleep"]
    assert guard.violations[0].thread_name != "MainThread"


def test_trio_imported_after_activation_is_recognised(tmp_path: Path) -> None:
    script = tmp_path / "late_trio.py"
    script.write_text(
        textwrap.dedent(
            """
            import fcntl, select, socket, sys, tempfile, time
            import blockbuster_lite as bl

            assert "trio" not in sys.modules
            quiet, _ = socket.socketpair()
            lock_file = tempfile.TemporaryFile()
            with bl.intercept("log") as guard:
                import trio

                async def main():
                    time.sleep(0.0001)
                    select.select([quiet], [], [], 0.01)  # gated wrappers are rebuilt too
                    fcntl.flock(lock_file, fcntl.LOCK_EX)  # free: never reported

                trio.run(main)
            trio.run(main)  # trio keeps working once the guard has ended
            print([v.call for v in guard.violations])
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['time.sleep', 'select.select']"


def test_trio_imported_before_any_activation_is_recognised(tmp_path: Path) -> None:
    script = tmp_path / "early_trio.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            import trio
            import blockbuster_lite as bl

            async def main():
                time.sleep(0.0001)

            with bl.intercept("log") as guard:
                trio.run(main)
            print([v.call for v in guard.violations])
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['time.sleep']"
