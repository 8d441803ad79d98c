"""Waiting on threads, locks, queues and futures.

Each entry is flagged only when the call would actually wait: an uncontended lock, a set
event, a done future, a non-empty queue, ``blocking=False`` or a zero timeout pass through.

``threading.Lock``/``RLock`` objects are C types whose methods cannot be wrapped, so the
factories ``threading.Lock`` and ``threading.RLock`` are replaced while active: locks created
then are thin proxies whose ``acquire`` first tries the lock without waiting (so the uncontended
path never asks about the loop) and is checked only when it would wait. Locks created before
activation, ``_thread.allocate_lock`` used directly, and the locks inside ``threading``'s and
``queue``'s own classes (a ``Condition()``'s lock, an ``Event``'s) are not checked: the waits
built on those are checked as themselves. These waits are never
offloaded: a contended lock moved to another thread could deadlock the process.
"""

from __future__ import annotations

import sys
from typing import Any

from .._hotpath import make_handler
from .._patching import Target
from ._predicates import _MISSING, argument, waits

ADVICE = (
    "use asyncio/anyio synchronization primitives, or offload the waiting code with "
    "await anyio.to_thread.run_sync(...)"
)
FUTURE_ADVICE = (
    "await it instead: await asyncio.wrap_future(future) / loop.run_in_executor(...)"
)


def _event_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return not instance.is_set() and waits(argument(args, kwargs, 0, "timeout"))


def _timeout0_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return waits(argument(args, kwargs, 0, "timeout"))


def _semaphore_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    blocking = argument(args, kwargs, 0, "blocking")
    if blocking is not _MISSING and not blocking:
        return False
    return waits(argument(args, kwargs, 1, "timeout")) and instance._value == 0


def _join_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return instance.is_alive() and waits(argument(args, kwargs, 0, "timeout"))


def _queue_get_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    block = argument(args, kwargs, 0, "block")
    if block is not _MISSING and not block:
        return False
    return waits(argument(args, kwargs, 1, "timeout")) and instance.empty()


def _queue_put_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    block = argument(args, kwargs, 1, "block")
    if block is not _MISSING and not block:
        return False
    return waits(argument(args, kwargs, 2, "timeout")) and instance.full()


def _queue_join_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return bool(instance.unfinished_tasks)


def _future_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return not instance.done() and waits(argument(args, kwargs, 0, "timeout"))


def _futures_wait_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    futures = argument(args, kwargs, 0, "fs")
    if not waits(argument(args, kwargs, 1, "timeout")):
        return False
    try:
        return not all(future.done() for future in futures)
    except TypeError:
        return True


LOCK_ACQUIRE = Target("threading", "Lock", "threading.Lock.acquire", None, ADVICE, offload=False)
RLOCK_ACQUIRE = Target(
    "threading", "RLock", "threading.RLock.acquire", None, ADVICE, offload=False
)
_lock_handler = make_handler(LOCK_ACQUIRE)
_rlock_handler = make_handler(RLOCK_ACQUIRE)


class _CheckedLock:
    """A lock whose blocking ``acquire`` is checked; everything else is the real lock's."""

    __slots__ = ("__weakref__", "_lock", "locked", "release")
    _handler = staticmethod(_lock_handler)

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.release = lock.release
        self.locked = lock.locked

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        lock = self._lock
        if lock.acquire(False):
            return True
        if not blocking or timeout == 0:
            return False
        return bool(self._handler(lock.acquire, self, (blocking, timeout), {}))

    __enter__ = acquire

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lock, name)

    # isinstance(lock, type(threading.Lock())) stays true, and so does trio's check that its
    # RLock is _thread's signal-safe one (trio may be imported, and build locks, while active).
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._lock)

    def __repr__(self) -> str:
        return f"<checked {repr(self._lock)[1:]}"


class _CheckedRLock(_CheckedLock):
    __slots__ = ()
    _handler = staticmethod(_rlock_handler)

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.release = lock.release
        if hasattr(lock, "locked"):
            self.locked = lock.locked


#: Modules whose locks stay raw: the waits built on them (Event.wait, Condition.wait,
#: Semaphore.acquire, Queue.get/put, ...) are checked by their own targets, and logging's
#: handler locks are machinery. A proxy there would only add a Python call to every put/get/emit.
_RAW_LOCK_MODULES = frozenset({"threading", "queue", "logging", "logging.handlers"})


def _lock_factory(original: Any) -> Any:
    def Lock(*args: Any, **kwargs: Any) -> Any:
        lock = original(*args, **kwargs)
        if sys._getframe(1).f_globals.get("__name__") in _RAW_LOCK_MODULES:
            return lock
        return _CheckedLock(lock)

    Lock.__wrapped__ = original  # type: ignore[attr-defined]
    Lock.__doc__ = original.__doc__
    return Lock


def _rlock_factory(original: Any) -> Any:
    def RLock(*args: Any, **kwargs: Any) -> Any:
        lock = original(*args, **kwargs)
        if sys._getframe(1).f_globals.get("__name__") in _RAW_LOCK_MODULES:
            return lock
        return _CheckedRLock(lock)

    RLock.__wrapped__ = original  # type: ignore[attr-defined]
    RLock.__doc__ = original.__doc__
    return RLock


TARGETS = (
    Target("threading", "Event.wait", "threading.Event.wait", _event_waits, ADVICE, offload=False),
    Target(
        "threading", "Condition.wait", "threading.Condition.wait", _timeout0_waits, ADVICE,
        offload=False,
    ),
    Target(
        "threading", "Semaphore.acquire", "threading.Semaphore.acquire", _semaphore_waits,
        ADVICE, offload=False,
    ),
    Target("threading", "Thread.join", "threading.Thread.join", _join_waits, ADVICE, offload=False),
    Target(
        "threading", "Barrier.wait", "threading.Barrier.wait", _timeout0_waits, ADVICE,
        offload=False,
    ),
    Target("queue", "Queue.get", "queue.Queue.get", _queue_get_waits, ADVICE, offload=False),
    Target("queue", "Queue.put", "queue.Queue.put", _queue_put_waits, ADVICE, offload=False),
    Target("queue", "Queue.join", "queue.Queue.join", _queue_join_waits, ADVICE, offload=False),
    Target(
        "concurrent.futures._base", "Future.result", "concurrent.futures.Future.result",
        _future_waits, FUTURE_ADVICE, offload=False,
    ),
    Target(
        "concurrent.futures._base", "Future.exception", "concurrent.futures.Future.exception",
        _future_waits, FUTURE_ADVICE, offload=False,
    ),
    Target(
        "concurrent.futures", "wait", "concurrent.futures.wait", _futures_wait_waits,
        FUTURE_ADVICE, offload=False,
    ),
    Target("threading", "Lock", "threading.Lock", replace=_lock_factory, offload=False),
    Target("threading", "RLock", "threading.RLock", replace=_rlock_factory, offload=False),
)  # fmt: skip
