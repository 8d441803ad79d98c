"""Offload mode: a blocking call made on the loop thread runs in a worker thread, and its task waits
for it without blocking the loop.

The engine is greenback (the ``offload`` extra). A task with a greenback *portal* can suspend from
synchronous code, so the patched call, however deep in sync code, awaits
``anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=<the offload pool>)`` and the loop
serves other tasks meanwhile. Works on asyncio, uvloop, anyio (either backend) and trio.

What is offloaded: calls whose catalogue entry is safe to move (``Target.offload``): sleeps, files
and the filesystem, DNS, sockets and HTTP clients, subprocesses, database drivers. A file object
returned by an offloaded ``open()`` moves its large reads and writes too (``read()`` of the whole
file, reads and writes of 64 KiB or more, ``readlines()``, ``writelines()``); line iteration, small
reads and writes, and ``close()`` stay on the loop, where they cost less than a thread hop. Bulk
file transfers run in a narrower lane of the pool (see ``_pools``): they are bandwidth-bound.

What falls back to warn mode, with the reason in the message: lock acquires and thread waits (a
contended ``threading.Lock`` moved to another thread can deadlock the process), calls outside any
task (a ``call_soon`` callback cannot wait), calls in a task without a portal, and calls made while
the task's cancel scope is already cancelled (the call runs in place so clean-up code completes).
A contended ``Lock``/``RLock``/``Semaphore`` acquire in a task with a portal is warned about and
then waited for by polling it from the loop thread, the task suspended: its holder may be another
task suspended in an offloaded call, which could never resume to release it if the loop thread
blocked (the deadlock offload mode would otherwise create).

Offloaded calls are still reported: the first per call site is logged at WARNING with the fix, and
every one is recorded (``action=Mode.OFFLOAD``, ``duration_s`` = how long the task waited), so offload
mode rescues the service without hiding the bug.

Semantics:
- Atomicity: other tasks run while the call is in the worker, exactly as if an ``await`` stood
  there. A read-modify-write of shared state spanning the call can lose updates. A threading lock
  held across an offloaded call and wanted by another task on the same loop stalls the loop until
  the call ends.
- Cancellation: a task cancelled while its call runs gets ``CancelledError`` (trio: ``Cancelled``)
  at once, raised from the blocking call; the worker thread finishes the call on its own and its
  result is dropped.
- Context variables: the call runs in a copy of the task's context; the values it sets are copied
  back into the task when it returns or raises (not when cancelled). A ``Token`` made in the worker
  cannot reset a variable in the task.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import io
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.to_thread
import wrapt

from ._loop import current_library, on_loop_thread, trio_state
from ._policy import ConfigError, Mode
from ._pools import (
    LoopPools,
    ensure_pool_monitor,
    file_capacity,
    offload_capacity,
    saturation_threshold,
)
from ._report import Violation, format_message, logger
from ._state import exempt, reentrant, state

try:
    import greenback
except ImportError:  # the 'offload' extra is not installed
    greenback = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._guard import Guard
    from ._patching import Target
    from ._policy import Site

__all__ = (
    "LARGE_IO",
    "OffloadingFile",
    "ensure_portal",
    "install_task_factory",
    "require_offload",
    "run_offloaded",
    "try_offload",
    "uninstall_task_factory",
    "with_portal",
)

T = TypeVar("T")

#: Reads and writes of at least this many bytes on a file opened by an offloaded open() move too.
LARGE_IO = 64 * 1024

OFFLOADED = "offloaded to a worker thread (offload mode)"
NO_GREENBACK = "the 'greenback' package is missing (pip install 'blockbuster_lite[offload]')"
NOT_IN_TASK = "not inside a task (a loop callback, e.g. from call_soon, cannot wait for a thread)"
NO_PORTAL = (
    "no portal in this task (await blockbuster_lite.offload.ensure_portal() in it, decorate its "
    "coroutine function with @blockbuster_lite.offload.with_portal, or serve it through "
    "BlockBusterMiddleware)"
)
WAITED = "the task waited for it without blocking the loop (offload mode)"
#: Acquires that a task suspended in an offloaded call may hold: polled, never moved to a worker.
POLLED_ACQUIRES = frozenset(
    {"threading.Lock.acquire", "threading.RLock.acquire"}
)
BEING_CANCELLED = "the task is being cancelled (the call runs in place so clean-up code completes)"


def never_offloaded(call: str) -> str:
    return (
        f"{call}() is never offloaded (a lock or thread wait moved to a worker thread can "
        "deadlock the process)"
    )


def require_offload(source: str) -> None:
    """Check that offload mode can run: greenback is importable and its settings are valid."""
    if greenback is None:
        raise ConfigError(
            f"mode 'offload' from {source} needs the 'greenback' package: "
            "pip install 'blockbuster_lite[offload]'"
        )
    offload_capacity()
    file_capacity()
    saturation_threshold()


def _offload_active() -> bool:
    guards = state.guards
    return bool(guards) and guards[-1].mode is Mode.OFFLOAD


def _portal_problem() -> str | None:
    """Why a call made here cannot be offloaded; None when it can."""
    if greenback is None:
        return NO_GREENBACK
    library = current_library()
    if library == "asyncio":
        if asyncio.current_task() is None:
            return NOT_IN_TASK
    elif library != "trio" or trio_state.run_context.__dict__.get("task") is None:
        return NOT_IN_TASK
    if not greenback.has_portal():
        return NO_PORTAL
    if anyio.current_effective_deadline() == -math.inf:
        return BEING_CANCELLED
    return None


# --- the offloaded call -----------------------------------------------------------------------


def _private_vars() -> frozenset[contextvars.ContextVar[Any]]:
    names: list[contextvars.ContextVar[Any]] = [reentrant, exempt]
    try:
        import sniffio

        names.append(sniffio.current_async_library_cvar)
    except ImportError:
        pass
    return frozenset(names)


_PRIVATE_VARS = _private_vars()
_MISSING = object()


def _leave_async_library() -> None:
    # The worker is no async context: sniffio (and the libraries asking it) must not say it is.
    try:
        import sniffio

        sniffio.current_async_library_cvar.set(None)
    except ImportError:
        pass


class _Job:
    """One call to run in the offload pool, in its own copy of the caller's context."""

    __slots__ = ("args", "call", "context", "files", "finished", "kwargs")

    def __init__(
        self,
        context: contextvars.Context,
        call: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        files: bool,
    ) -> None:
        self.files = files
        self.context = context
        self.call = call
        self.args = args
        self.kwargs = kwargs
        self.finished = False

    async def run(self) -> Any:
        pools: LoopPools | None = None
        limiter = None
        try:
            pools = ensure_pool_monitor()
            pools.sync_capacity()
            limiter = pools.file_limiter if self.files else pools.offload_limiter
        except Exception:  # a bug of ours must not fail the user's call: anyio's pool then
            logger.exception("blockbuster_lite: offload pool unavailable; using anyio's")
        submitted = time.perf_counter()

        def in_worker() -> Any:
            try:
                if pools is not None:
                    pools.note_wait(time.perf_counter() - submitted)
            except Exception:
                logger.debug("blockbuster_lite: pool wait check failed", exc_info=True)
            try:
                return self.context.run(self.call, *self.args, **self.kwargs)
            finally:
                self.finished = True

        return await anyio.to_thread.run_sync(in_worker, abandon_on_cancel=True, limiter=limiter)


def run_offloaded(
    call: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    files: bool = False,
) -> T:
    """Run ``call(*args, **kwargs)`` in the offload pool; the current task (with a portal) waits.

    ``files=True``: in the pool's bulk file I/O lane.
    """
    assert greenback is not None
    before = contextvars.copy_context()
    work = before.copy()
    work.run(_leave_async_library)
    job = _Job(work, call, args, kwargs, files)
    # The pool machinery runs on the loop in this task; nothing it calls is the user's doing.
    token = reentrant.set(True)
    try:
        return cast(T, greenback.await_(job.run()))
    finally:
        reentrant.reset(token)
        if job.finished:
            _bring_back(before, work)


def _bring_back(before: contextvars.Context, work: contextvars.Context) -> None:
    """Set in the task the context variables the call changed in the worker."""
    try:
        for var, value in work.items():
            if var not in _PRIVATE_VARS and before.get(var, _MISSING) is not value:
                var.set(value)
    except Exception:
        logger.exception("blockbuster_lite: could not copy context variables back from a worker")


def try_offload(
    guard: Guard,
    target: Target,
    site: Site,
    wrapped: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    call: str | None = None,
) -> tuple[bool, Any, str]:
    """Offload one checked call: ``(True, result, "")``, or ``(False, None, why not)``.

    ``call`` is the described call name (``psycopg2.cursor.execute(SELECT ...)``).

    Exceptions raised by the call itself (and the task's cancellation) propagate.
    """
    if not target.offload:
        if target.call in POLLED_ACQUIRES:
            return _acquire_cooperatively(guard, target, site, wrapped, args, kwargs)
        return False, None, never_offloaded(target.call)
    from ._hotpath import _build, _log_failure

    try:
        problem = _portal_problem()
        if problem is not None:
            return False, None, problem
        violation = _build(target, site, Mode.OFFLOAD, f"{OFFLOADED}; {target.advice}", call)
        if guard.first_report(violation):
            _log_offloaded(violation)
    except Exception as exc:
        _log_failure(f"offload of {target.call}", exc)
        return False, None, "internal error while preparing the offload (logged)"
    start = time.perf_counter()
    try:
        result = run_offloaded(wrapped, args, kwargs)
    finally:
        _record(violation, time.perf_counter() - start)
    if target.call == "open" and isinstance(result, io.IOBase):
        result = OffloadingFile(result)
    return True, result, ""


def _acquire_cooperatively(
    guard: Guard,
    target: Target,
    site: Site,
    wrapped: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[bool, Any, str]:
    """Wait for a contended lock by polling it from the loop thread, the task suspended meanwhile.

    The holder may be another task suspended in an offloaded call: blocking the loop thread here
    would stop it from ever resuming to release the lock (a deadlock offload mode would have made).
    Polling keeps the loop running and the owner the loop thread; it is reported as warn mode.
    """
    from ._hotpath import _build, _log_failure, _warn

    reason = never_offloaded(target.call)
    try:
        if _portal_problem() is not None:
            return False, None, reason
        timeout = args[1] if len(args) > 1 else kwargs.get("timeout", -1)
        advice = f"could not offload: {reason}; {WAITED}; {target.advice}"
        violation = _build(target, site, Mode.WARN, advice)
        if guard.first_report(violation):
            _warn(violation, site)
    except Exception as exc:
        _log_failure(f"cooperative wait for {target.call}", exc)
        return False, None, reason
    start = time.perf_counter()
    try:
        acquired = _poll(wrapped, timeout)
    finally:
        _record(violation, time.perf_counter() - start)
    return True, acquired, ""


def _poll(acquire: Callable[[bool], bool], timeout: float | None) -> bool:
    assert greenback is not None
    deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
    delay = 0.0005
    token = reentrant.set(True)
    try:
        while not acquire(False):
            pause = delay
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                pause = min(delay, remaining)
            greenback.await_(anyio.sleep(pause))
            delay = min(delay * 2, 0.02)
        return True
    finally:
        reentrant.reset(token)


def _log_offloaded(violation: Violation) -> None:
    token = reentrant.set(True)
    try:
        logger.warning("%s", format_message(violation))
    finally:
        reentrant.reset(token)


def _record(violation: Violation, duration: float) -> None:
    from ._hotpath import _log_failure, record

    try:
        record(replace(violation, duration_s=duration))
    except Exception as exc:
        _log_failure(f"offload of {violation.call}", exc)


# --- files opened by an offloaded open() ------------------------------------------------------


def _nbytes(data: Any) -> int:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return len(data)


def _io(method: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], large: bool) -> T:
    if large and on_loop_thread() and _offload_active() and not (reentrant.get() or exempt.get()):
        try:
            can_offload = _portal_problem() is None
        except Exception:
            can_offload = False
        if can_offload:
            return run_offloaded(method, args, kwargs, files=True)
    return method(*args, **kwargs)


def _large_size(args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> bool:
    size = args[0] if args else kwargs.get(name, -1)
    return size is None or size < 0 or size >= LARGE_IO


class OffloadingFile(wrapt.ObjectProxy[Any]):
    """A file object opened by an offloaded ``open()``: its large reads and writes are offloaded.

    Everything else is the real file's (``isinstance`` checks pass; ``type()`` is this proxy).
    """

    def __enter__(self) -> OffloadingFile:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self.__wrapped__.__exit__(*exc_info)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        return _io(self.__wrapped__.read, args, kwargs, _large_size(args, kwargs, "size"))

    def read1(self, *args: Any, **kwargs: Any) -> Any:
        return _io(self.__wrapped__.read1, args, kwargs, _large_size(args, kwargs, "size"))

    def readall(self) -> Any:
        return _io(self.__wrapped__.readall, (), {}, True)

    def readlines(self, *args: Any, **kwargs: Any) -> Any:
        hint = args[0] if args else kwargs.get("hint", -1)
        return _io(
            self.__wrapped__.readlines, args, kwargs, hint is None or not 0 < hint < LARGE_IO
        )

    def readinto(self, buffer: Any) -> Any:
        return _io(self.__wrapped__.readinto, (buffer,), {}, _nbytes(buffer) >= LARGE_IO)

    def readinto1(self, buffer: Any) -> Any:
        return _io(self.__wrapped__.readinto1, (buffer,), {}, _nbytes(buffer) >= LARGE_IO)

    def write(self, data: Any) -> Any:
        return _io(self.__wrapped__.write, (data,), {}, _nbytes(data) >= LARGE_IO)

    def writelines(self, lines: Any) -> Any:
        return _io(self.__wrapped__.writelines, (lines,), {}, True)


# --- portals ----------------------------------------------------------------------------------

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


async def _run_with_portal(coro: Any) -> Any:
    """Run a task's coroutine inside a greenback portal, entered without a checkpoint."""
    assert greenback is not None
    return await greenback.with_portal_run(lambda: coro)


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
        if _offload_active() and asyncio.iscoroutine(coro):
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
            "pip install 'blockbuster_lite[offload]'"
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
            if _offload_active():
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
