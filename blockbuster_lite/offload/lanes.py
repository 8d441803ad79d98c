"""The offload pool's worker threads on asyncio (and uvloop) loops: one future per call.

``anyio.to_thread.run_sync`` costs its task three or four trips through the event loop per call
(a checkpoint, the capacity limiter, the result), and a task with a greenback portal pays the
portal's greenlet switches on each: a burst of offloaded calls lagged the loop two to four times
as much as the same calls made by hand. A ``ThreadLane`` hands the call to a worker thread through
a queue and the task awaits one future, resolved by ``call_soon_threadsafe``: one trip.

It keeps a limiter's interface for the pool monitor (``total_tokens``, ``borrowed_tokens``,
``statistics()``): at most ``total_tokens`` worker threads run calls at once, the rest queue
(``tasks_waiting``). Threads start on demand and exit after ``IDLE_S`` without work, or when the
capacity is lowered. A call whose task was cancelled before a worker took it never runs; one
cancelled while it runs finishes in the worker and its result is dropped (as with anyio's
``abandon_on_cancel=True``). Trio runs keep anyio's limiter and worker threads.
"""

from __future__ import annotations

import _thread
import threading
from _queue import Empty, SimpleQueue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.report import logger

__all__ = ("IDLE_S", "LaneStatistics", "ThreadLane")

#: A worker thread with no call for this long exits.
IDLE_S = 10.0


@dataclass(frozen=True)
class LaneStatistics:
    total_tokens: float
    borrowed_tokens: int
    tasks_waiting: int


def _deliver(future: Any, ok: bool, value: Any) -> None:
    if future.cancelled():  # the task was cancelled meanwhile: the result is dropped
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class ThreadLane:
    """Worker threads for one event loop's offloaded calls (see the module docstring)."""

    def __init__(self, capacity: int, name: str) -> None:
        self._capacity = capacity
        self._name = name
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._lock = _thread.allocate_lock()  # never the catalogue's checked lock
        self._threads = 0
        self._idle = 0
        self.borrowed_tokens = 0  # calls running in a worker
        self.tasks_waiting = 0  # calls queued for a worker

    @property
    def total_tokens(self) -> int:
        return self._capacity

    @total_tokens.setter
    def total_tokens(self, capacity: int) -> None:
        self._capacity = capacity
        with self._lock:
            spawn = min(self.tasks_waiting, capacity - self._threads) - self._idle
            self._threads += max(spawn, 0)
        for _ in range(max(spawn, 0)):
            self._start()

    def statistics(self) -> LaneStatistics:
        with self._lock:
            return LaneStatistics(self._capacity, self.borrowed_tokens, self.tasks_waiting)

    def submit(self, loop: Any, call: Callable[[], Any]) -> Any:
        """Queue ``call`` for a worker thread; returns the ``asyncio.Future`` of its result."""
        future = loop.create_future()
        with self._lock:
            self.tasks_waiting += 1
            spawn = self._idle < self.tasks_waiting and self._threads < self._capacity
            if spawn:
                self._threads += 1
        self._queue.put((loop, future, call))
        if spawn:
            self._start()
        return future

    def _start(self) -> None:
        try:
            thread = threading.Thread(
                target=self._work, name=f"blockbuster_lite {self._name}", daemon=True
            )
            thread.start()
        except BaseException:
            with self._lock:
                self._threads -= 1
            raise

    def _work(self) -> None:
        queue, lock = self._queue, self._lock
        while True:
            with lock:
                if self._threads > self._capacity:  # the capacity was lowered
                    self._threads -= 1
                    return
                self._idle += 1
            try:
                loop, future, call = queue.get(timeout=IDLE_S)
            except Empty:
                with lock:
                    self._idle -= 1
                    if self.tasks_waiting <= self._idle:  # nothing queued that needs us
                        self._threads -= 1
                        return
                continue
            with lock:
                self._idle -= 1
                self.tasks_waiting -= 1
                if future.cancelled():  # cancelled before it started: it never runs
                    continue
                self.borrowed_tokens += 1
            try:
                value, ok = call(), True
            except BaseException as exc:
                value, ok = exc, False
            finally:
                with lock:
                    self.borrowed_tokens -= 1
            try:
                loop.call_soon_threadsafe(_deliver, future, ok, value)
            except RuntimeError:  # the loop is closed: nobody waits for it any more
                pass
            except Exception:
                logger.exception("blockbuster_lite: could not hand an offloaded result back")
            del value, call, future, loop
