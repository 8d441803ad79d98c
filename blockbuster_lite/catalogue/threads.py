"""Waiting on threads, locks, queues and futures.

Each entry is flagged only when the call would actually wait: an uncontended lock, a set
event, a done future, a non-empty queue, ``blocking=False`` or a zero timeout pass through.

Event, Semaphore, Barrier, queue.Queue and concurrent.futures all wait through
``threading.Condition.wait``, and reach it only when they must wait; that one target catches
them and is reported as the call the user made (``queue.Queue.get``, ``threading.Event.wait``,
``concurrent.futures.Future.result``), so their fast paths cost nothing.

``threading.Lock``/``RLock`` objects are C types whose methods cannot be wrapped, so the
factories ``threading.Lock`` and ``threading.RLock`` are replaced while active: locks created
then are thin proxies whose ``acquire`` first tries the lock without waiting (so the uncontended
path never asks about the loop) and is checked only when it would wait. Locks created before
activation, ``_thread.allocate_lock`` used directly, and the locks inside ``threading``'s,
``queue``'s and ``logging``'s own objects are not checked (the waits built on them are).
These waits are never offloaded: a contended lock moved to another thread could deadlock the
process.
"""

from __future__ import annotations

import _thread
import functools
import operator
import sys
import types
from typing import Any

from ..core.hotpath import make_handler
from ..core.state import state
from ..core.targets import Target
from ..core.transparent import Wrapper
from ._predicates import argument, waits

ADVICE = (
    "use asyncio/anyio synchronization primitives, await a concurrent future with "
    "await asyncio.wrap_future(future), or offload the waiting code with "
    "await anyio.to_thread.run_sync(...)"
)


def _timeout0_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return waits(argument(args, kwargs, 0, "timeout"))


def _join_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return instance.is_alive() and waits(argument(args, kwargs, 0, "timeout"))


#: Modules whose public waits are built on threading.Condition.
_SYNC_MODULES = {
    "threading": "threading",
    "queue": "queue",
    "concurrent.futures._base": "concurrent.futures",
}


def describe_wait(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Name a Condition wait after the outermost synchronization call around it.

    ``queue.Queue.get`` rather than ``threading.Condition.wait``: the frames just outside the
    wait that belong to threading, queue or concurrent.futures say which call the user made.
    """
    name = "threading.Condition.wait"
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__") or ""
        public = _SYNC_MODULES.get(module)
        if public is not None:
            qualname = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
            if not qualname.rpartition(".")[2].startswith("_"):
                name = f"{public}.{qualname}"
        elif not module.startswith("blockbuster_lite"):
            break
        frame = frame.f_back  # type: ignore[assignment]
    return name


LOCK_ACQUIRE = Target("threading", "Lock", "threading.Lock.acquire", None, ADVICE, offload=False)
RLOCK_ACQUIRE = Target(
    "threading", "RLock", "threading.RLock.acquire", None, ADVICE, offload=False
)
_lock_handler = make_handler(LOCK_ACQUIRE)
_rlock_handler = make_handler(RLOCK_ACQUIRE)


class _CheckedLock:
    """A lock whose blocking ``acquire`` is checked; everything else is the real lock's.

    No ``__getattr__``: a class with one gets CPython's slow attribute hook (no specialised
    look-ups), which cost ~120 ns per ``acquire()`` + ``release()``. The real lock's other
    attributes are forwarded by properties instead (``_forwarding``), ``release`` is the real
    lock's bound C method, and so is ``__exit__``.
    """

    # ``__exit__`` is a slot: ``with`` looks it up on the type, finds the slot's descriptor and
    # gets the real lock's bound C ``__exit__`` (a release) stored at construction, so leaving
    # the block runs no Python frame and builds no bound method.
    __slots__ = ("__exit__", "__weakref__", "_acquire", "_lock", "release")
    _handler = staticmethod(_lock_handler)

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self._acquire = lock.acquire  # bound once: no method look-up per acquire
        self.release = lock.release
        self.__exit__ = lock.__exit__

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._acquire(False):
            return True
        if not blocking or timeout == 0:
            return False
        return bool(self._handler(self._acquire, self, (blocking, timeout), {}))

    __enter__ = acquire
    acquire_lock = acquire

    # copy, pickle and repr as the lock itself: refusing with its TypeError, naming its type
    def __reduce_ex__(self, protocol: Any) -> Any:
        return self._lock.__reduce_ex__(protocol)

    def __reduce__(self) -> Any:
        return self._lock.__reduce__()

    def __getstate__(self) -> Any:
        return self._lock.__getstate__()

    # isinstance(lock, type(threading.Lock())) stays true, and so does trio's check that its
    # RLock is _thread's signal-safe one (trio may be imported, and build locks, while active).
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._lock)

    def __repr__(self) -> str:
        return repr(self._lock)


class _CheckedRLock(_CheckedLock):
    __slots__ = ()
    _handler = staticmethod(_rlock_handler)


def _forwarding(proxy: type[_CheckedLock], lock_type: type) -> type[_CheckedLock]:
    """``proxy`` with a property for each attribute of ``lock_type`` it does not define itself
    (``locked``, ``_is_owned``, ``_release_save``, ``_at_fork_reinit``...), read from the lock."""
    names = {
        name: property(operator.attrgetter(f"_lock.{name}"))
        for name in dir(lock_type)
        if not (name.startswith("__") and name.endswith("__")) and not hasattr(proxy, name)
    }
    return type(proxy.__name__, (proxy,), {"__slots__": (), "__module__": __name__, **names})


_checked_types: dict[tuple[type, type], type[_CheckedLock]] = {}


def checked(proxy: type[_CheckedLock], lock: Any) -> _CheckedLock:
    """A checked proxy around ``lock``: ``proxy`` with forwarding properties for its type."""
    key = (proxy, type(lock))
    checked_type = _checked_types.get(key)
    if checked_type is None:
        checked_type = _checked_types[key] = _forwarding(proxy, key[1])
    return checked_type(lock)


#: Modules whose locks stay raw: the waits built on them (Event.wait, Condition.wait,
#: Semaphore.acquire, Queue.get/put, ...) are checked by their own targets, and logging's
#: handler locks are machinery. A proxy there would only add a Python call to every put/get/emit.
_RAW_LOCK_MODULES = frozenset({"threading", "queue", "logging", "logging.handlers"})


def _proxying_factory(original: Any, proxy: type[_CheckedLock], name: str) -> Any:
    """A replacement for ``threading.Lock``/``RLock`` that returns checked proxies.

    It has the original's name, module, doc and signature, and pickles as the original does:
    for a built-in original (``threading.Lock`` is ``_thread.allocate_lock``) it is a wrapper,
    which pickles by reference; for a Python function (``threading.RLock``) a plain function
    named after it, as cheap to call as the original (a wrapt wrapper around a Python function
    costs about 0.5 us a call, and every ``Condition()``, ``Event()`` and future makes an RLock).
    Left behind after the last guard stopped (a mock restored it), it makes raw locks.
    """
    if isinstance(original, types.FunctionType):

        def factory(*args: Any, **kwargs: Any) -> Any:
            lock = original(*args, **kwargs)
            if not state.guards or sys._getframe(1).f_globals.get("__name__") in _RAW_LOCK_MODULES:
                return lock
            return checked(proxy, lock)

        return functools.update_wrapper(factory, original)

    def handler(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        lock = wrapped(*args, **kwargs)
        if not state.guards or sys._getframe(1).f_globals.get("__name__") in _RAW_LOCK_MODULES:
            return lock
        return checked(proxy, lock)

    return Wrapper(original, handler, None, ("threading", name))


def _lock_factory(original: Any) -> Any:
    return _proxying_factory(original, _CheckedLock, "Lock")


def _stdlib_caller() -> bool:
    name = sys._getframe(2).f_globals.get("__name__") or ""
    return name.partition(".")[0] in sys.stdlib_module_names


def _thread_factory(original: Any, proxy: type[_CheckedLock], name: str) -> Any:
    """``_thread.allocate_lock``: the import system and the rest of the standard library call it
    at run time; only locks made outside it are checked. (``_thread.RLock`` is a type that
    ``isinstance`` checks use, so it stays; its instances are checked when a module holds one.)"""

    def handler(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        lock = wrapped(*args, **kwargs)
        if not state.guards or _stdlib_caller():
            return lock
        return checked(proxy, lock)

    return Wrapper(original, handler, None, ("_thread", name))


def _replace_condition_init(original: Any) -> Any:
    """A Condition made by user code waits on its own lock through a checked proxy.

    ``with cond:`` and ``cond.acquire()`` on a contended Condition wait on that lock, not in
    ``Condition.wait``. Conditions made inside threading, queue or concurrent.futures (Event,
    Queue, Future) keep their raw lock: the mutex they hold only for a moment is no wait.
    """

    def __init__(self: Any, lock: Any = None) -> None:
        original(self, lock)
        caller = sys._getframe(1).f_globals.get("__name__") or ""
        if caller.partition(".")[0] in sys.stdlib_module_names:
            return
        raw = self._lock
        if isinstance(raw, _CheckedLock):
            return
        proxy = checked(_CheckedLock if type(raw) is _LOCK_TYPE else _CheckedRLock, raw)
        self._lock = proxy
        self.acquire = proxy.acquire

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    __init__.__qualname__ = original.__qualname__
    __init__.__module__ = original.__module__
    __init__.__doc__ = original.__doc__
    return __init__


_LOCK_TYPE = _thread.LockType


def _rlock_factory(original: Any) -> Any:
    return _proxying_factory(original, _CheckedRLock, "RLock")


def _existing_lock(lock: Any) -> Any:
    return checked(_CheckedLock, lock)


def _existing_rlock(lock: Any) -> Any:
    return checked(_CheckedRLock, lock)


#: Locks created before activation and held by a module global or class attribute: the name is
#: rebound to a checked proxy around the same lock (core/rebind.py), so every holder still
#: shares one lock. ``_thread.allocate_lock`` bound by name becomes the checking factory.
PROXIES = (
    ("_thread", "LockType", _existing_lock),
    ("_thread", "RLock", _existing_rlock),
)

TARGETS = (
    # Every wait built on a Condition (Event.wait, Semaphore.acquire, Barrier.wait, Queue.get,
    # Queue.put, Queue.join, Future.result/exception, concurrent.futures.wait) reaches
    # Condition.wait only when it must really wait: one target catches them all, costs nothing
    # on their fast paths, and is reported under the name of the call the user made.
    Target(
        "threading", "Condition.wait", "threading.Condition.wait", _timeout0_waits, ADVICE,
        offload=False, describe=describe_wait,
    ),
    Target(
        "threading", "Condition.wait_for", "threading.Condition.wait_for", _timeout0_waits,
        ADVICE, offload=False, describe=describe_wait,
    ),
    Target("threading", "Thread.join", "threading.Thread.join", _join_waits, ADVICE, offload=False),
    Target("threading", "Lock", "threading.Lock", replace=_lock_factory, offload=False),
    Target("threading", "RLock", "threading.RLock", replace=_rlock_factory, offload=False),
    Target("_thread", "allocate_lock", "_thread.allocate_lock", offload=False,
           replace=lambda original: _thread_factory(original, _CheckedLock, "allocate_lock")),
    Target("threading", "Condition.__init__", "threading.Condition", offload=False,
           replace=_replace_condition_init),
)  # fmt: skip
