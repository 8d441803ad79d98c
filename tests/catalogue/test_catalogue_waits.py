"""Catalogue: waits not built on threading.Condition, each with its clean twin."""

from __future__ import annotations

import _thread
import asyncio
import fcntl
import multiprocessing
import queue
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import LOOPS, call_off_loop, call_on, calls

import blockbuster_lite as bl


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def seen(loop: str, make: Callable[[], Callable[[], Any]]) -> list[str]:
    """Objects are made while active (as code run under the sanitizer makes them)."""
    with bl.intercept("log") as guard:
        call = make()
        call_on(loop, call)
    return calls(guard)


def select_wait(pair: Any, ready: bool) -> Callable[[], Callable[[], Any]]:
    a, b = pair
    if ready:
        b.send(b"x")
    return lambda: lambda: select.select([a], [], [], 0.01)


def poller(kind: str, pair: Any, timeout: float) -> Callable[[], Callable[[], Any]]:
    a, _ = pair

    def make() -> Callable[[], Any]:
        if kind == "poll":
            p: Any = select.poll()
            p.register(a, select.POLLIN)
            return lambda: p.poll(timeout * 1000)
        if kind == "epoll":
            e = select.epoll()
            e.register(a, select.EPOLLIN)
            return lambda: e.poll(timeout)
        s = selectors.DefaultSelector()
        s.register(a, selectors.EVENT_READ)
        return lambda: s.select(timeout)

    return make


@pytest.mark.parametrize("loop", LOOPS)
def test_select_waiting_is_caught_and_a_ready_fd_is_clean(loop: str, pair: Any) -> None:
    assert seen(loop, select_wait(pair, ready=False)) == ["select.select"]
    assert seen(loop, select_wait(pair, ready=True)) == []


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    ("kind", "call"),
    [("poll", "select.poll.poll"), ("epoll", "select.epoll.poll"),
     ("selector", "selectors.EpollSelector.select")],
)  # fmt: skip
def test_pollers_waiting_are_caught(loop: str, kind: str, call: str, pair: Any) -> None:
    assert seen(loop, poller(kind, pair, 0.01)) == [call]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("kind", ["poll", "epoll", "selector"])
def test_pollers_that_cannot_wait_are_clean(loop: str, kind: str, pair: Any) -> None:
    assert seen(loop, poller(kind, pair, 0)) == []
    pair[1].send(b"x")
    assert seen(loop, poller(kind, pair, 0.01)) == []


@pytest.mark.parametrize("kind", ["poll", "epoll", "selector"])
def test_pollers_off_the_loop_are_clean(kind: str, pair: Any) -> None:
    with bl.intercept("raise") as guard:
        call = poller(kind, pair, 0.01)()
        call_off_loop("plain-thread", call)
    assert calls(guard) == []


def test_the_event_loops_own_selector_is_never_flagged() -> None:
    async def idle() -> None:
        import asyncio

        await asyncio.sleep(0.02)

    with bl.intercept("raise") as guard:
        import asyncio

        asyncio.run(idle())
        import trio

        trio.run(trio.sleep, 0.02)
    assert calls(guard) == []


@pytest.fixture
def lock_file(tmp_path: Path) -> Path:
    path = tmp_path / "lock"
    path.touch()
    return path


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("name", ["flock", "lockf"])
def test_a_contended_file_lock_is_caught(loop: str, name: str, lock_file: Path) -> None:
    holder = open(lock_file, "w")  # noqa: SIM115
    if name == "flock":
        fcntl.flock(holder, fcntl.LOCK_EX)
    release = threading.Timer(0.3, lambda: fcntl.flock(holder, fcntl.LOCK_UN))
    if name == "lockf":  # POSIX locks belong to the process: contend from a child
        holder.close()
        child = multiprocessing.get_context("fork").Process(target=_hold_lockf, args=(lock_file,))
        child.start()
        time.sleep(0.3)
    else:
        release.start()
    try:
        with bl.intercept("log") as guard, open(lock_file, "w") as mine:
            call_on(loop, lambda: getattr(fcntl, name)(mine, fcntl.LOCK_EX))
            getattr(fcntl, name)(mine, fcntl.LOCK_UN)
    finally:
        if name == "lockf":
            child.join()
        else:
            release.join()
            holder.close()
    assert f"fcntl.{name}" in calls(guard)


def _hold_lockf(path: Path) -> None:
    with open(path, "w") as file:
        fcntl.lockf(file, fcntl.LOCK_EX)
        time.sleep(0.5)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_free_or_non_blocking_file_lock_is_clean(loop: str, lock_file: Path) -> None:
    def take() -> None:
        with open(lock_file, "w") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            fcntl.flock(file, fcntl.LOCK_UN)
            fcntl.lockf(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(file, fcntl.LOCK_UN)

    with bl.intercept("log") as guard:
        call_on(loop, take)
    assert [c for c in calls(guard) if c.startswith("fcntl")] == []


@pytest.mark.parametrize("loop", LOOPS)
def test_simple_queue_get_waiting_is_caught(loop: str) -> None:
    def make() -> Callable[[], Any]:
        q: queue.SimpleQueue[int] = queue.SimpleQueue()
        threading.Timer(0.2, q.put, (1,)).start()
        return lambda: q.get()

    assert seen(loop, make) == ["queue.SimpleQueue.get"]


@pytest.mark.parametrize("loop", LOOPS)
def test_simple_queue_get_that_cannot_wait_is_clean(loop: str) -> None:
    def make() -> Callable[[], Any]:
        q: queue.SimpleQueue[int] = queue.SimpleQueue()
        q.put(1)

        def calls_() -> None:
            q.get()
            for kwargs in ({"block": False}, {"timeout": 0}):
                with pytest.raises(queue.Empty):
                    q.get(**kwargs)  # type: ignore[arg-type]

        return calls_

    assert seen(loop, make) == []
    assert isinstance(queue.SimpleQueue(), queue.SimpleQueue)


@pytest.mark.parametrize("loop", LOOPS)
def test_multiprocessing_waits_are_caught(loop: str) -> None:
    def make() -> Callable[[], Any]:
        reader, writer = multiprocessing.Pipe(duplex=False)
        threading.Timer(0.3, writer.send, ("x",)).start()
        return lambda: (reader.poll(0.01), reader.recv())

    assert seen(loop, make) == [
        "multiprocessing.connection.Connection.poll",
        "multiprocessing.connection.Connection.recv",
    ]


@pytest.mark.parametrize("loop", LOOPS)
def test_multiprocessing_calls_that_cannot_wait_are_clean(loop: str) -> None:
    def make() -> Callable[[], Any]:
        reader, writer = multiprocessing.Pipe(duplex=False)
        writer.send("x")
        return lambda: (reader.poll(), reader.poll(0), reader.poll(1), reader.recv())

    assert seen(loop, make) == []


@pytest.mark.parametrize("loop", LOOPS)
def test_thread_module_locks_and_a_conditions_own_lock(loop: str) -> None:
    def contend(lock: Any) -> Callable[[], Any]:
        lock.acquire()
        threading.Timer(0.2, lock.release).start()
        return lambda: (lock.acquire(), lock.release())

    with bl.intercept("log") as guard:
        call_on(loop, contend(_thread.allocate_lock()))
        condition = threading.Condition()
        held, done = threading.Event(), threading.Event()

        def hold() -> None:
            with condition:
                held.set()
                done.wait(0.2)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(5)

        def enter() -> None:
            with condition:
                pass

        call_on(loop, enter)
        holder.join()
    assert calls(guard) == ["threading.Lock.acquire", "threading.RLock.acquire"]


@pytest.mark.parametrize("loop", LOOPS)
def test_uncontended_thread_module_locks_are_clean(loop: str) -> None:
    def make() -> Callable[[], Any]:
        lock = _thread.allocate_lock()
        condition = threading.Condition()

        def use() -> None:
            with lock:
                pass
            with condition:
                condition.notify_all()

        return use

    assert seen(loop, make) == []


def test_the_loops_own_selector_costs_nothing_after_its_first_turn() -> None:
    """An asyncio loop polls its selector on every turn: once recognised, the selector's select
    is the original itself (bound on the instance), not our check."""
    seen: list[Any] = []

    async def main() -> None:
        await asyncio.sleep(0)
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        seen.append(type(selector).select)
        seen.append(selector.select.__func__)

    original = selectors.EpollSelector.select
    with bl.intercept("raise") as guard:
        asyncio.run(main())
    patched, bound = seen
    assert patched is not original and bound is original
    assert selectors.EpollSelector.select is original
    assert calls(guard) == []
