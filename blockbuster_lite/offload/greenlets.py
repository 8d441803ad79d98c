"""Portals for the tasks offload mode starts: greenback's protocol, on reused greenlets.

A task with a greenback portal runs each step of its coroutine in a child greenlet, so that sync
code deep inside the step can suspend the task (``greenback.await_``). ``greenback.with_portal_run``
makes a new greenlet per task; its first switch costs 8-13 us on CPython 3.11 (greenlet 3), which
is most of what a portal costs a short task (a burst of 1,000 new tasks in offload mode lagged
the loop about 16 ms for the portals alone, against 3.4 ms without them). ``run_in_portal``
keeps finished child greenlets, one pool per thread, and starts the next task's coroutine in one
of them: a switch into a started greenlet costs about 0.4 us.

It speaks greenback's protocol, so the two mix in one task: the task is registered in greenback's
table of portals while it runs (``greenback.has_portal()`` is true in it and ``greenback.await_``
works there, for our calls and the user's), a child sends ``(trap, greenlet to resume)`` to the
portal and is resumed with an ``outcome``, and nested greenlets (SQLAlchemy's async bridge,
``greenback.await_`` from a greenlet of the user's) are resumed where they trapped. Context
variables follow the task into the child as in greenback. When greenback's internals are not
what this module expects, ``run_in_portal`` is ``greenback.with_portal_run`` itself.

Memory: at most ``POOL_MAX`` idle greenlets per thread, about 6 KB each (a saved stack of one
frame); a thread's pool goes with the thread.
"""

from __future__ import annotations

import asyncio
import threading
import types
from collections.abc import Awaitable, Coroutine, Generator, MutableMapping
from typing import Any, TypeVar, cast

try:
    import greenback
    import outcome
    from greenlet import GreenletExit, getcurrent  # type: ignore[import-untyped]
    from greenlet import greenlet as Greenlet
except ImportError:  # the 'offload' extra is missing: nothing here is called then
    greenback = None  # type: ignore[assignment]

__all__ = ("POOL_MAX", "SERVE_CODE", "await_", "has_portal", "pool_size", "run_in_portal")

T = TypeVar("T")

#: Idle child greenlets kept per thread.
POOL_MAX = 1024

_DONE: Any = object()  # a child's last message: (_DONE, [how its coroutine ended])


class _Pool(threading.local):
    def __init__(self) -> None:
        self.idle: list[Greenlet] = []


_pool = _Pool()


def _task_portals() -> MutableMapping[object, Any] | None:
    if greenback is None:
        return None
    impl = getattr(greenback, "_impl", None)
    portals = getattr(impl, "task_portals", None)
    needed = ("trampoline", "with_portal_run", "await_")
    if not isinstance(portals, MutableMapping) or not all(hasattr(impl, n) for n in needed):
        return None
    return portals


_TASK_PORTALS = _task_portals()


def _serve(portal_greenlet: Greenlet, coro: Coroutine[Any, Any, Any], next_send: Any) -> None:
    """A pooled child greenlet: runs one coroutine to its end, hands back, waits for the next.

    Between two steps its stack is this frame alone, waiting in a switch (the watchdog reads
    ``portal_greenlet`` here to join the task's frames, as in greenback's ``trampoline``). How
    the coroutine ended goes back in ``ended``, which the portal empties: an idle greenlet holds
    no exception, traceback or frame of the task it ran.
    """
    this = getcurrent()
    ended: list[BaseException] = []
    done = (_DONE, ended)
    while True:
        try:
            while True:
                trap = next_send.send(coro)
                next_send = portal_greenlet.switch((trap, this))
        except GreenletExit:  # the greenlet is being destroyed (its task was abandoned)
            raise
        except BaseException as exc:  # StopIteration: the coroutine returned
            ended.append(exc)
        del coro, next_send
        trap = None
        portal_greenlet, coro, next_send = portal_greenlet.switch(done)


SERVE_CODE = _serve.__code__


@types.coroutine
def _pooled_shim(coro: Coroutine[Any, Any, Any]) -> Generator[Any, Any, Any]:
    portals = _TASK_PORTALS
    assert portals is not None
    task = asyncio.current_task()
    if task is None or task in portals:  # not a task, or one greenback gave a portal already
        return (yield from coro)
    portal = getcurrent()
    idle = _pool.idle
    context = portal.gr_context
    portals[task] = portal
    try:
        if idle:
            child = idle.pop()
            child.gr_context = context
            message = child.switch((portal, coro, outcome.Value(None)))
        else:
            child = Greenlet(_serve)
            child.gr_context = context
            message = child.switch(portal, coro, outcome.Value(None))
        while True:
            trap, resume = message
            if trap is _DONE:
                break
            try:
                next_send: Any = outcome.Value((yield trap))
            except BaseException as exc:  # thrown in by the loop (cancellation): the coroutine's
                next_send = outcome.Error(exc)
            now = portal.gr_context
            if now is not context and child.gr_context is context:
                child.gr_context = context = now  # the task's context was replaced meanwhile
            message = resume.switch(next_send)
    finally:
        del portals[task]
    ended = resume.pop()
    child.gr_context = None
    if not child.dead and len(idle) < POOL_MAX:
        idle.append(child)
    if isinstance(ended, StopIteration):
        return ended.value
    raise ended


async def _shim_portal(coro: Coroutine[Any, Any, Any]) -> Any:
    return await _pooled_shim(coro)


async def _greenback_portal(coro: Coroutine[Any, Any, Any]) -> Any:
    assert greenback is not None
    return await greenback.with_portal_run(lambda: coro)


#: ``run_in_portal(coro)``: a coroutine running ``coro`` in a portal of its task (asyncio).
run_in_portal = _shim_portal if _TASK_PORTALS is not None else _greenback_portal


def has_portal(task: object) -> bool:
    """``greenback.has_portal()`` for the running asyncio ``task``, without asking sniffio."""
    if _TASK_PORTALS is None:
        assert greenback is not None
        return greenback.has_portal()
    return _TASK_PORTALS.get(task) is not None


def await_(aw: Awaitable[T]) -> T:
    """``greenback.await_(aw)``; for a coroutine in an asyncio task with a portal, the same steps
    without greenback's task lookup through sniffio (about 3 us a call)."""
    portals = _TASK_PORTALS
    if portals is not None and isinstance(aw, types.CoroutineType):
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no asyncio loop in this thread (trio)
            task = None
        portal = portals.get(task) if task is not None else None
        if portal is not None:
            this = getcurrent()
            next_send: Any = outcome.Value(None)
            while True:
                try:
                    trap = next_send.send(aw)
                except StopIteration as exc:
                    return cast(T, exc.value)
                next_send = portal.switch((trap, this))
    assert greenback is not None
    return greenback.await_(aw)


def pool_size() -> int:
    """Idle child greenlets pooled for this thread."""
    return len(_pool.idle)
