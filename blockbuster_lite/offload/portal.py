"""Portals: a task with a greenback portal can suspend from synchronous code, so its blocking
calls can wait for a worker thread. How tasks get one (a task factory on asyncio and uvloop, an
instrument on trio, ``ensure_portal``, ``@with_portal``), and why a call cannot be offloaded.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio

from ..core.config import ConfigError, Mode
from ..core.loop import current_library, trio_state
from ..core.report import logger
from ..core.state import state
from .greenlets import has_portal, run_in_portal
from .pools import ensure_pool_monitor
from .settings import file_capacity, offload_capacity, saturation_threshold

try:
    import greenback
except ImportError:  # the 'offload' extra is not installed
    greenback = None  # type: ignore[assignment]

__all__ = (
    "ensure_portal",
    "greenback",
    "install_task_factory",
    "offload_active",
    "portal_problem",
    "require_offload",
    "uninstall_task_factory",
    "with_portal",
)

T = TypeVar("T")

NO_GREENBACK = "the 'greenback' package is missing (pip install 'blockbuster-lite[offload]')"
NOT_IN_TASK = "not inside a task (a loop callback, e.g. from call_soon, cannot wait for a thread)"
NO_PORTAL = (
    "no portal in this task (await blockbuster_lite.offload.ensure_portal() in it, decorate its "
    "coroutine function with @blockbuster_lite.offload.with_portal, or serve it through "
    "BlockBusterMiddleware)"
)
BEING_CANCELLED = "the task is being cancelled (the call runs in place so clean-up code completes)"


#: The oldest anyio offload mode runs on (tested with 3.7.1 and 4.x).
MIN_ANYIO = (3, 7)


def require_offload(source: str) -> None:
    """Check that offload mode can run: greenback is importable, anyio recent enough, and the
    offload settings are valid."""
    if greenback is None:
        raise ConfigError(
            f"mode 'offload' from {source} needs the 'greenback' package: "
            "pip install 'blockbuster-lite[offload]'"
        )
    version = anyio_version()
    if version is not None and version < MIN_ANYIO:
        raise ConfigError(
            f"mode 'offload' from {source} needs anyio {'.'.join(map(str, MIN_ANYIO))} or later "
            f"(this environment has anyio {'.'.join(map(str, version))}): "
            "pip install 'blockbuster-lite[offload]'"
        )
    offload_capacity()
    file_capacity()
    saturation_threshold()


def anyio_version() -> tuple[int, ...] | None:
    """anyio's installed (major, minor), None when its metadata cannot be read."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("anyio")
    except PackageNotFoundError:
        return None
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def offload_active() -> bool:
    guards = state.guards
    return bool(guards) and guards[-1].mode is Mode.OFFLOAD


_asyncio_deadline: Callable[[], float] | None = None


def _asyncio_effective_deadline() -> float:
    """``anyio.current_effective_deadline()`` on asyncio, asked of anyio's asyncio backend
    itself: the public function first asks sniffio which library runs and looks the backend up,
    most of its ~3 us, paid by every offloaded call."""
    global _asyncio_deadline
    if _asyncio_deadline is None:
        try:
            from anyio._backends import _asyncio as backend

            backend_class = getattr(backend, "AsyncIOBackend", None)  # anyio 4; 3.x: a function
            found = getattr(backend_class or backend, "current_effective_deadline", None)
        except Exception:  # another anyio layout: the public function
            found = None
        _asyncio_deadline = found if callable(found) else anyio.current_effective_deadline
    return _asyncio_deadline()


def portal_problem() -> str | None:
    """Why a call made here cannot be offloaded; None when it can."""
    if greenback is None:
        return NO_GREENBACK
    library = current_library()
    if library == "asyncio":
        task = asyncio.current_task()
        if task is None:
            return NOT_IN_TASK
        if not has_portal(task):
            return NO_PORTAL
        deadline = _asyncio_effective_deadline()
    elif library != "trio" or trio_state.run_context.__dict__.get("task") is None:
        return NOT_IN_TASK
    elif not greenback.has_portal():
        return NO_PORTAL
    else:
        deadline = anyio.current_effective_deadline()
    if deadline == -math.inf:
        return BEING_CANCELLED
    return None


_bestow_failed = False


def _bestow(task: Any) -> None:
    global _bestow_failed
    try:
        assert greenback is not None
        greenback.bestow_portal(task)
    except Exception:
        if not _bestow_failed:
            _bestow_failed = True
            logger.exception("blockbuster_lite: could not give a task a portal for offload mode")


def _run_with_portal(coro: Any) -> Any:
    """Run a task's coroutine inside a greenback portal, entered without a checkpoint (on a
    pooled greenlet: see ``greenlets``)."""
    return run_in_portal(coro)


def _close_unstarted(coro: Any) -> Callable[[Any], None]:
    # A task cancelled before its first step never starts the coroutine it wraps: close it, so
    # Python does not warn that it was never awaited (closing a finished one does nothing).
    return lambda task: coro.close()


class _PortalTaskFactory:
    """An asyncio task factory: while offload mode is on, every new task gets a portal.

    The task's coroutine is wrapped in ``greenback.with_portal_run`` rather than given a portal
    with ``bestow_portal``: bestowing primes greenback's shim, so the task looks started before
    its first step, and anyio's task groups then cancel it before it ever runs (a task group
    cancelled right after ``start_soon`` must still start the child, as without offload mode).
    """

    def __init__(self, previous: Callable[..., Any] | None) -> None:
        self.previous = previous

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        wrapped = coro
        if offload_active() and asyncio.iscoroutine(coro):
            wrapped = _run_with_portal(coro)
        if self.previous is not None:
            task = self.previous(loop, wrapped, **kwargs)
        else:
            task = asyncio.Task(wrapped, loop=loop, **kwargs)
        if wrapped is not coro:
            task.add_done_callback(_close_unstarted(coro))
        return task


def install_task_factory(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Give every task ``loop`` (default: the running loop) creates from now on a portal.

    Composes with a task factory already set; a no-op when ours is already installed. Tasks get
    their portal only while a guard in offload mode is the innermost active guard.
    """
    if greenback is None:
        raise ConfigError(
            "install_task_factory() needs the 'greenback' package: "
            "pip install 'blockbuster-lite[offload]'"
        )
    loop = loop or asyncio.get_running_loop()
    current = loop.get_task_factory()
    if isinstance(current, _PortalTaskFactory):
        return
    loop.set_task_factory(_PortalTaskFactory(current))


def uninstall_task_factory(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Restore the task factory that ``install_task_factory()`` found on ``loop``."""
    loop = loop or asyncio.get_running_loop()
    current = loop.get_task_factory()
    if isinstance(current, _PortalTaskFactory):
        loop.set_task_factory(current.previous)


_trio_instrument: Any = None  # the RunVar holding this run's instrument, made on first use


def _install_trio_instrument() -> None:
    global _trio_instrument
    import trio

    if _trio_instrument is None:
        _trio_instrument = trio.lowlevel.RunVar("blockbuster_lite.portals", default=None)
    if _trio_instrument.get() is not None:
        return

    class PortalInstrument(trio.abc.Instrument):
        """While offload mode is on, every task spawned in this run gets a portal."""

        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            if offload_active():
                _bestow(task)

    instrument = PortalInstrument()
    trio.lowlevel.add_instrument(instrument)
    _trio_instrument.set(instrument)


async def ensure_portal() -> bool:
    """Give the current task a portal, so its blocking calls can be offloaded.

    Also makes every task the event loop starts afterwards get one (a task factory on asyncio and
    uvloop, an instrument on trio), so tasks spawned by the request or program (task groups,
    ``asyncio.gather``, Starlette's ``BaseHTTPMiddleware``) can offload too, and starts the
    thread-pool monitor. Returns False, doing nothing, when greenback is not installed.
    Cheap when the task already has a portal: no checkpoint then.
    """
    if greenback is None:
        return False
    try:
        if current_library() == "trio":
            _install_trio_instrument()
        else:
            install_task_factory()
    except Exception:
        logger.exception("blockbuster_lite: could not install portals for new tasks")
    if not greenback.has_portal():
        await greenback.ensure_portal()
    try:
        ensure_pool_monitor()
    except Exception:
        logger.exception("blockbuster_lite: could not start the thread-pool monitor")
    return True


def with_portal(
    func: Callable[..., Coroutine[Any, Any, T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    """Decorate a coroutine function so that its task gets a portal when it starts.

    ``anyio.run(with_portal(main))``, ``asyncio.run(with_portal(main)())``, ``trio.run(...)``.
    """

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        await ensure_portal()
        return await func(*args, **kwargs)

    return wrapper
