"""Catalogue: waiting on locks, events, conditions, semaphores, threads, queues and futures."""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
import trio
from helpers import (
    LOOPS,
    OFF_LOOP,
    call_on,
    calls,
    check_uninstalled,
    raises_on,
    run_on,
    seen_off_loop,
    seen_on,
)

import blockbuster_lite as bl

FILENAME = os.path.basename(__file__)


@pytest.fixture
def held_elsewhere() -> Iterator[Callable[[Any], None]]:
    """hold(lock): another thread acquires ``lock`` and keeps it until the test ends."""
    release = threading.Event()
    threads: list[threading.Thread] = []

    def hold(lock: Any) -> None:
        acquired = threading.Event()

        def body() -> None:
            with lock:
                acquired.set()
                release.wait(10)

        thread = threading.Thread(target=body)
        thread.start()
        threads.append(thread)
        assert acquired.wait(5)

    yield hold
    release.set()
    for thread in threads:
        thread.join()


# -- locks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_a_contended_lock_acquired_on_a_loop_is_caught(loop: str) -> None:
    with bl.intercept("raise") as guard:
        lock = threading.Lock()  # created while active: a checked lock
        lock.acquire()
        try:
            error = raises_on(loop, lambda: lock.acquire(timeout=5))
        finally:
            lock.release()
    assert error.violation.call == "threading.Lock.acquire"
    assert calls(guard) == ["threading.Lock.acquire"]


def test_a_contended_lock_as_a_context_manager_is_caught(
    held_elsewhere: Callable[[Any], None],
) -> None:
    with bl.intercept("log") as guard:
        lock = threading.Lock()
        held_elsewhere(lock)

        def try_briefly() -> bool:
            return lock.acquire(timeout=0.01)

        assert call_on("asyncio", try_briefly) is False  # log mode: the wait really happened
        with pytest.raises(bl.BlockingCallError), bl.intercept("raise"):
            call_on("asyncio", lambda: lock.__enter__())
    assert calls(guard) == ["threading.Lock.acquire", "threading.Lock.acquire"]


@pytest.mark.parametrize(
    "attempt",
    [
        lambda lock: lock.acquire(blocking=False),
        lambda lock: lock.acquire(False),
        lambda lock: lock.acquire(timeout=0),
    ],
)
def test_a_lock_that_is_only_tried_is_not_caught(
    attempt: Callable[[Any], bool], held_elsewhere: Callable[[Any], None]
) -> None:
    with bl.intercept("raise") as guard:
        lock = threading.Lock()
        held_elsewhere(lock)
        assert call_on("asyncio", lambda: attempt(lock)) is False
    assert guard.violations == []


def test_an_uncontended_lock_is_not_caught() -> None:
    def use(lock: Any) -> bool:
        with lock:
            assert lock.locked()
        acquired = lock.acquire()
        lock.release()
        return bool(acquired) and not lock.locked()

    with bl.intercept("raise") as guard:
        assert call_on("asyncio", lambda: use(threading.Lock()))
        assert call_on("trio", lambda: use(threading.Lock()))
    assert guard.violations == []


def test_a_contended_rlock_is_caught_and_reentry_is_not(
    held_elsewhere: Callable[[Any], None],
) -> None:
    with bl.intercept("raise") as guard:
        mine, theirs = threading.RLock(), threading.RLock()

        def reenter() -> int:
            with mine, mine, mine:  # the owner re-acquires without waiting
                return 3

        assert call_on("asyncio", reenter) == 3
        held_elsewhere(theirs)
        error = raises_on("asyncio", lambda: theirs.acquire())
    assert error.violation.call == "threading.RLock.acquire"
    assert calls(guard) == ["threading.RLock.acquire"]


def test_a_lock_created_before_activation_is_not_checked() -> None:
    # Documented limit: only locks created while a guard is active are checked.
    lock = threading.Lock()
    lock.acquire()
    try:
        assert seen_on("asyncio", lambda: lock.acquire(timeout=0.001)) == []
    finally:
        lock.release()


def test_checked_locks_look_like_real_locks_and_outlive_the_guard() -> None:
    with bl.intercept("raise"):
        lock, rlock = threading.Lock(), threading.RLock()
    assert isinstance(lock, _thread.LockType)
    assert isinstance(rlock, _thread.RLock)
    assert type(rlock).__module__ != "_thread" and rlock.__class__.__module__ == "_thread"
    with lock, rlock, rlock:
        assert lock.locked()
    assert not lock.locked()
    assert lock.acquire(timeout=0.01)
    lock.release()
    assert "lock" in repr(lock)
    condition = threading.Condition(rlock)  # and they work where the stdlib expects locks
    with condition:
        condition.notify_all()


# -- events, conditions, semaphores, threads ---------------------------------------------------


def test_event_wait_on_an_unset_event_is_caught() -> None:
    event = threading.Event()
    error = raises_on("asyncio", lambda: event.wait(5))
    assert error.violation.call == "threading.Event.wait"
    assert "asyncio/anyio synchronization primitives" in str(error)
    assert seen_on("asyncio", lambda: event.wait(0.001)) == ["threading.Event.wait"]


@pytest.mark.parametrize(
    "wait",
    [
        lambda event: event.wait(0),
        lambda event: event.wait(timeout=0),
        lambda event: (event.set(), event.wait())[1],
        lambda event: (event.set(), event.wait(5))[1],
    ],
)
def test_event_waits_that_cannot_block_are_not_caught(wait: Callable[[Any], Any]) -> None:
    assert seen_on("asyncio", lambda: wait(threading.Event()), mode="raise") == []


def test_condition_wait_is_caught() -> None:
    condition = threading.Condition()

    def wait_briefly() -> bool:
        with condition:
            return condition.wait(0.001)

    assert seen_on("asyncio", wait_briefly) == ["threading.Condition.wait"]

    def poll() -> bool:
        with condition:
            return condition.wait(0)

    assert seen_on("asyncio", poll, mode="raise") == []


def test_semaphore_acquire_waits_only_when_exhausted() -> None:
    empty, free = threading.Semaphore(0), threading.Semaphore(1)
    assert raises_on("asyncio", lambda: empty.acquire()).violation.call == (
        "threading.Semaphore.acquire"
    )
    with bl.intercept("raise") as guard:
        assert call_on("asyncio", lambda: empty.acquire(blocking=False)) is False
        assert call_on("asyncio", lambda: free.acquire()) is True
    assert guard.violations == []


def test_thread_join_waits_only_for_a_live_thread() -> None:
    stop = threading.Event()
    live = threading.Thread(target=stop.wait, args=(10,))
    live.start()
    try:
        assert raises_on("asyncio", lambda: live.join()).violation.call == "threading.Thread.join"
        assert seen_on("asyncio", lambda: live.join(0), mode="raise") == []
    finally:
        stop.set()
        live.join()
    assert seen_on("asyncio", lambda: live.join(), mode="raise") == []


def test_barrier_wait_is_caught() -> None:
    barrier = threading.Barrier(2)
    assert raises_on("asyncio", lambda: barrier.wait()).violation.call == "threading.Barrier.wait"


# -- queues ------------------------------------------------------------------------------------


def test_get_on_an_empty_queue_is_caught() -> None:
    empty: queue.Queue[int] = queue.Queue()

    def get_briefly() -> None:
        with pytest.raises(queue.Empty):
            empty.get(timeout=0.01)

    assert seen_on("asyncio", get_briefly) == ["queue.Queue.get"]
    assert raises_on("trio", lambda: empty.get()).violation.call == "queue.Queue.get"


def test_queue_calls_that_cannot_block_are_not_caught() -> None:
    def exercise() -> list[int]:
        items: queue.Queue[int] = queue.Queue(maxsize=2)
        items.put(1)
        items.put_nowait(2)
        with pytest.raises(queue.Full):
            items.put(3, block=False)
        got = [items.get(), items.get_nowait()]
        with pytest.raises(queue.Empty):
            items.get(block=False)
        with pytest.raises(queue.Empty):
            items.get_nowait()
        items.task_done()
        items.task_done()
        items.join()  # nothing unfinished
        return got

    with bl.intercept("raise") as guard:
        assert call_on("asyncio", exercise) == [1, 2]
    assert guard.violations == []


def test_put_on_a_full_queue_and_join_with_unfinished_tasks_are_caught() -> None:
    full: queue.Queue[int] = queue.Queue(maxsize=1)
    full.put(1)
    assert raises_on("asyncio", lambda: full.put(2, timeout=5)).violation.call == "queue.Queue.put"
    assert raises_on("asyncio", lambda: full.join()).violation.call == "queue.Queue.join"


# -- futures -----------------------------------------------------------------------------------


def test_result_of_a_pending_future_is_caught() -> None:
    pending: concurrent.futures.Future[int] = concurrent.futures.Future()
    error = raises_on("asyncio", lambda: pending.result(timeout=5))
    assert error.violation.call == "concurrent.futures.Future.result"
    assert "asyncio.wrap_future" in str(error)
    assert raises_on("asyncio", lambda: pending.exception()).violation.call == (
        "concurrent.futures.Future.exception"
    )
    assert raises_on("asyncio", lambda: concurrent.futures.wait([pending])).violation.call == (
        "concurrent.futures.wait"
    )


def test_a_done_future_is_not_caught() -> None:
    done: concurrent.futures.Future[int] = concurrent.futures.Future()
    done.set_result(7)
    pending: concurrent.futures.Future[int] = concurrent.futures.Future()

    def read() -> int:
        concurrent.futures.wait([done])
        concurrent.futures.wait([pending], timeout=0)
        assert done.exception() is None
        return done.result()

    with bl.intercept("raise") as guard:
        assert call_on("asyncio", read) == 7
    assert guard.violations == []


def test_executor_result_on_the_loop_is_caught() -> None:
    release = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        future = executor.submit(release.wait, 5)
        try:
            error = raises_on("asyncio", lambda: future.result())
        finally:
            release.set()
    assert error.violation.call == "concurrent.futures.Future.result"


# -- the loop's own thread machinery is never caught -------------------------------------------


def test_run_in_executor_and_to_thread_are_never_caught() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        # not `with executor:`, whose exit joins the workers on the loop (a real wait)
        executor = concurrent.futures.ThreadPoolExecutor(2)
        first = await loop.run_in_executor(executor, pow, 2, 3)
        second = await loop.run_in_executor(None, pow, 2, 4)
        third = await asyncio.to_thread(pow, 2, 5)
        fourth = await anyio.to_thread.run_sync(pow, 2, 6)
        wrapped = await asyncio.wrap_future(executor.submit(pow, 2, 7))
        executor.shutdown(wait=False)
        return [first, second, third, fourth, wrapped]

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == [8, 16, 32, 64, 128]
    assert guard.violations == []


def test_a_process_pool_on_the_loop_is_not_caught() -> None:
    # submit() and shutdown(wait=False) nudge the pool's manager thread through a pipe: a few
    # bytes, never a wait. Only `with pool:` (a join on the loop) is a real blocking call.
    async def main() -> list[int]:
        pool = concurrent.futures.ProcessPoolExecutor(1)
        first = await asyncio.wrap_future(pool.submit(pow, 2, 3))
        second = await asyncio.get_running_loop().run_in_executor(pool, pow, 2, 4)
        pool.shutdown(wait=False)
        return [first, second]

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == [8, 16]
    assert guard.violations == []


def test_shutting_down_an_executor_with_wait_on_the_loop_is_caught() -> None:
    async def main() -> None:
        executor = concurrent.futures.ThreadPoolExecutor(1)
        executor.submit(time.sleep, 0.05)
        executor.shutdown(wait=True)

    with bl.intercept("warn") as guard, pytest.warns(bl.BlockingCallWarning):
        asyncio.run(main())
    assert [v.call for v in guard.violations] == ["threading.Thread.join"]


@pytest.mark.parametrize("loop", ["anyio-asyncio", "anyio-trio", "uvloop"])
def test_anyio_to_thread_is_never_caught(loop: str) -> None:
    async def main() -> list[int]:
        results = []
        for exponent in range(5):
            results.append(await anyio.to_thread.run_sync(pow, 2, exponent))
        return results

    with bl.intercept("raise") as guard:
        assert run_on(loop, main) == [1, 2, 4, 8, 16]
    assert guard.violations == []


def test_trio_to_thread_and_from_thread_are_never_caught() -> None:
    async def main() -> int:
        def in_thread() -> int:
            return trio.from_thread.run_sync(lambda: 21) * 2

        return await trio.to_thread.run_sync(in_thread)

    with bl.intercept("raise") as guard:
        assert trio.run(main) == 42
    assert guard.violations == []


def test_starting_a_thread_on_the_loop_is_not_caught() -> None:
    def start() -> None:
        thread = threading.Thread(target=lambda: None)
        thread.start()  # waits for the thread to signal it started: machinery

    assert seen_on("asyncio", start, mode="raise") == []


# -- off the loop, allowed, uninstalled --------------------------------------------------------


@pytest.mark.parametrize("where", OFF_LOOP)
def test_waits_off_the_loop_are_not_caught(where: str) -> None:
    def wait_everywhere() -> None:
        threading.Event().wait(0.001)
        with pytest.raises(queue.Empty):
            queue.Queue().get(timeout=0.001)
        lock = threading.Lock()
        lock.acquire()
        lock.acquire(timeout=0.001)

    assert seen_off_loop(where, wait_everywhere) == []


def test_allowed_waits() -> None:
    def wait_briefly() -> bool:
        return threading.Event().wait(0.001)

    with bl.intercept("raise") as guard, bl.allow_blocking():
        assert call_on("asyncio", wait_briefly) is False
    assert guard.violations == []
    assert seen_on("asyncio", wait_briefly, mode="raise", allow=[f"{FILENAME}"]) == []


def test_uninstalled_thread_primitives_are_the_originals() -> None:
    originals = (
        threading.Lock,
        threading.RLock,
        threading.Event.wait,
        queue.Queue.get,
        concurrent.futures.Future.result,
    )

    def wait_briefly() -> None:
        threading.Event().wait(0.001)

    check_uninstalled("threads", wait_briefly, "queue", "concurrent.futures")
    now = (
        threading.Lock,
        threading.RLock,
        threading.Event.wait,
        queue.Queue.get,
        concurrent.futures.Future.result,
    )
    assert all(a is b for a, b in zip(originals, now, strict=True))
    assert type(threading.Lock()) is _thread.LockType
