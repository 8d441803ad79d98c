"""Waits not built on threading.Condition: select, poll, epoll, selectors, file locks, C queues,
multiprocessing pipes and queues, ``_thread`` locks and a Condition's own lock.

Each of them first tries the wait without waiting (a zero timeout, ``LOCK_NB``, a
non-blocking ``get``) and returns at once when that succeeds: a ready descriptor, a free file
lock or a non-empty queue is never flagged, and neither is a call that asks not to wait
(timeout 0, ``block=False``). Only a call that would really wait is checked, where it runs.

The event loop's own waits are never checked: the selector an asyncio loop polls is recognised
by identity, and ``select.epoll``/``select.poll`` objects created by ``selectors`` (the loop's
selectors) or by trio/anyio stay the raw C objects. These waits are never offloaded: moving a
wait on a shared object to another thread changes who holds it.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from asyncio import _get_running_loop
from types import MethodType
from typing import Any

from ..core.hotpath import make_handler
from ..core.loop import loop_gate, on_loop_thread, trio_state
from ..core.targets import Target
from ..core.transparent import Wrapper
from ._predicates import _MISSING, argument

ADVICE = (
    "use the loop's own I/O (asyncio streams, loop.add_reader, anyio), or offload the waiting "
    "code with await anyio.to_thread.run_sync(...)"
)

#: Modules whose poll/epoll objects are an event loop's own: left raw.
_LOOP_MODULES = ("selectors", "asyncio", "trio", "anyio", "uvloop")


def _target(module: str, path: str, call: str, replace: Any) -> Target:
    return Target(module, path, call, None, ADVICE, offload=False, replace=replace)


def _nonblocking(timeout: Any) -> bool:
    return timeout is not _MISSING and timeout is not None and timeout <= 0


# -- select.select ---------------------------------------------------------------------------

SELECT = Target("select", "select", "select.select", None, ADVICE, offload=False)


def _replace_select(original: Any) -> Any:
    handler = make_handler(SELECT)

    def select(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # called on a loop thread only (loop_gate); a selector's own select is checked by its
        # wrapper
        if sys._getframe(1).f_globals.get("__name__") == "selectors":
            return wrapped(*args, **kwargs)
        timeout = argument(args, kwargs, 3, "timeout")
        if _nonblocking(timeout):
            return wrapped(*args, **kwargs)
        ready = wrapped(*args[:3], 0)
        if any(ready):
            return ready
        return handler(wrapped, instance, args, kwargs)

    return Wrapper(original, select, loop_gate(), ("select", "select"))


# -- select.poll / select.epoll objects ------------------------------------------------------


def _ms_nonblocking(timeout: Any) -> bool:
    return timeout is not _MISSING and timeout is not None and timeout == 0


class _CheckedPoller:
    """A poll/epoll object whose waiting ``poll`` is checked; the rest is the real object's."""

    __slots__ = ("_poller",)
    _handler: Any = None

    def __init__(self, poller: Any) -> None:
        self._poller = poller

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        poller = self._poller
        if not on_loop_thread():
            return poller.poll(*args, **kwargs)
        if _ms_nonblocking(argument(args, kwargs, 0, "timeout")):
            return poller.poll(*args, **kwargs)
        ready = poller.poll(0, *args[1:])  # level-triggered: the same events; edge: kept here
        if ready:
            return ready
        return self._handler(poller.poll, self, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._poller, name)

    def __enter__(self) -> Any:
        self._poller.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._poller.__exit__(*exc_info)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._poller)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self._poller.__reduce_ex__(protocol)  # refuses like the real object

    def __copy__(self) -> Any:
        return copy.copy(self._poller)

    def __deepcopy__(self, memo: Any) -> Any:
        return copy.deepcopy(self._poller, memo)

    def __repr__(self) -> str:
        return f"<checked {repr(self._poller)[1:]}"


def _poller_factory(original: Any, target: Target) -> Any:
    namespace = {"__slots__": (), "_handler": staticmethod(make_handler(target))}
    proxy = type(f"_Checked_{target.path}", (_CheckedPoller,), namespace)

    def factory(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        poller = wrapped(*args, **kwargs)
        caller = sys._getframe(1).f_globals.get("__name__") or ""
        if caller.partition(".")[0] in _LOOP_MODULES:
            return poller
        return proxy(poller)

    return Wrapper(original, factory, None, (target.module, target.path))


POLL = Target("select", "poll", "select.poll.poll", None, ADVICE, offload=False)
EPOLL = Target("select", "epoll", "select.epoll.poll", None, ADVICE, offload=False)


# -- selectors -------------------------------------------------------------------------------


def _replace_selector_select(target: Target) -> Any:
    def replace(original: Any) -> Any:
        handler = make_handler(target)

        def select(self: Any, timeout: float | None = None) -> Any:
            loop: Any = _get_running_loop()
            if loop is not None and getattr(loop, "_selector", None) is self:
                # The loop's own selector, polled on every turn: from now on its select is the
                # original, bound on the instance, so later turns pay nothing (once per loop).
                # An instance attribute already there is someone's hook (the watchdog times the
                # loop's turns that way): it stays, and calls us on every turn.
                with contextlib.suppress(AttributeError, TypeError):
                    own = vars(self)
                    if "select" not in own:
                        own["select"] = MethodType(original, self)
                return original(self, timeout)
            # asyncio was asked above: on_loop_thread() is needed only for trio
            if (loop is None and not on_loop_thread()) or (timeout is not None and timeout <= 0):
                return original(self, timeout)
            ready = original(self, 0)
            if ready:
                return ready
            return handler(original, None, (self, timeout), {})

        # pickles by reference (selectors.EpollSelector.select) and copies to itself
        select.__name__ = original.__name__
        select.__qualname__ = original.__qualname__
        select.__module__ = original.__module__
        select.__doc__ = original.__doc__
        select.__wrapped__ = original  # type: ignore[attr-defined]
        return select

    return replace


def _selector(path: str) -> Target:
    call = f"selectors.{path}"
    target = Target("selectors", path, call, None, ADVICE, offload=False)
    return _target("selectors", path, call, _replace_selector_select(target))


# -- fcntl file locks ------------------------------------------------------------------------


def _replace_file_lock(name: str) -> Any:
    target = Target("fcntl", name, f"fcntl.{name}", None, ADVICE, offload=False)

    def replace(original: Any) -> Any:
        import fcntl

        handler = make_handler(target)
        waiting = fcntl.LOCK_SH | fcntl.LOCK_EX

        def lock(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if len(args) < 2:  # called on a loop thread only (loop_gate)
                return wrapped(*args, **kwargs)
            operation = args[1]
            if not isinstance(operation, int) or operation & fcntl.LOCK_NB or not operation & waiting:
                return wrapped(*args, **kwargs)
            try:  # a free lock is taken without waiting
                return wrapped(args[0], operation | fcntl.LOCK_NB, *args[2:], **kwargs)
            except (BlockingIOError, PermissionError):
                pass
            return handler(wrapped, instance, args, kwargs)

        return Wrapper(original, lock, loop_gate(), ("fcntl", name))

    return replace


# -- queue.SimpleQueue -----------------------------------------------------------------------

SIMPLE_QUEUE_GET = Target(
    "queue", "SimpleQueue", "queue.SimpleQueue.get", None, ADVICE, offload=False
)


def _replace_simple_queue(original: Any) -> Any:
    import queue

    handler = make_handler(SIMPLE_QUEUE_GET)

    class _Meta(type):
        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, original)

        def __subclasscheck__(cls, sub: Any) -> bool:
            return issubclass(sub, original)

    original_get = original.get

    def get(self: Any, block: bool = True, timeout: float | None = None) -> Any:
        if not block or (_get_running_loop() is None and (
            trio_state.run_context is None or "runner" not in trio_state.run_context.__dict__
        )):  # on_loop_thread(), inlined: this is every worker thread's queue
            return original_get(self, block, timeout)
        try:
            return original_get(self, False)
        except queue.Empty:
            if timeout is not None and timeout <= 0:
                raise
        return handler(original_get, self, (self, block, timeout), {})

    get.__qualname__ = f"{original.__name__}.get"
    get.__module__ = "queue"
    get.__doc__ = original.get.__doc__
    # "queue.SimpleQueue" pickles by reference to this class while active (and to the C type after)
    namespace = {"get": get, "__module__": "queue", "__doc__": original.__doc__}
    return _Meta(original.__name__, (original,), namespace)


# -- multiprocessing -------------------------------------------------------------------------


def _nothing_to_read(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return not instance.poll()


def _poll_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    timeout = argument(args, kwargs, 0, "timeout")
    if timeout is _MISSING or (timeout is not None and timeout <= 0):
        return False  # poll() defaults to a zero timeout
    return not instance._poll(0)


def _mp_get_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    block = argument(args, kwargs, 0, "block")
    timeout = argument(args, kwargs, 1, "timeout")
    if block is False or _nonblocking(timeout):
        return False
    return bool(instance.empty())


def _mp(path: str, call: str, predicate: Any) -> Target:
    module, _, path = path.partition(":")
    return Target(module, path, call, predicate, ADVICE, offload=False)


MULTIPROCESSING = (
    *(
        _mp(f"multiprocessing.connection:_ConnectionBase.{name}",
            f"multiprocessing.connection.Connection.{name}", _nothing_to_read)
        for name in ("recv", "recv_bytes", "recv_bytes_into")
    ),
    _mp("multiprocessing.connection:_ConnectionBase.poll",
        "multiprocessing.connection.Connection.poll", _poll_waits),
    _mp("multiprocessing.queues:Queue.get", "multiprocessing.Queue.get", _mp_get_waits),
    _mp("multiprocessing.queues:SimpleQueue.get", "multiprocessing.SimpleQueue.get",
        lambda instance, args, kwargs: bool(instance.empty())),
)  # fmt: skip


TARGETS = (
    _target("select", "select", "select.select", _replace_select),
    _target("select", "poll", "select.poll", lambda original: _poller_factory(original, POLL)),
    _target("select", "epoll", "select.epoll", lambda original: _poller_factory(original, EPOLL)),
    _selector("SelectSelector.select"),
    _selector("_PollLikeSelector.select"),
    _selector("EpollSelector.select"),
    _target("fcntl", "flock", "fcntl.flock", _replace_file_lock("flock")),
    _target("fcntl", "lockf", "fcntl.lockf", _replace_file_lock("lockf")),
    _target("queue", "SimpleQueue", "queue.SimpleQueue", _replace_simple_queue),
    *MULTIPROCESSING,
)
