"""One offloaded call: it runs in the offload pool in a copy of the task's context, while the task
waits through its portal; the context variables it set are copied back into the task.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import anyio
import anyio.to_thread

from ..core.report import logger
from ..core.state import exempt, reentrant
from .greenlets import await_
from .lanes import ThreadLane
from .pools import LoopPools, ensure_pool_monitor
from .portal import greenback as greenback

__all__ = ("run_offloaded",)

T = TypeVar("T")

#: anyio 4.1 renamed ``to_thread.run_sync``'s ``cancellable`` to ``abandon_on_cancel``; anyio 3.7
#: and 4.0 know only the old name.
_ABANDON_ON_CANCEL = (
    "abandon_on_cancel"
    if "abandon_on_cancel" in inspect.signature(anyio.to_thread.run_sync).parameters
    else "cancellable"
)


def _sniffio_var() -> contextvars.ContextVar[Any] | None:
    try:
        import sniffio

        return sniffio.current_async_library_cvar
    except ImportError:
        return None


_SNIFFIO_VAR = _sniffio_var()
#: Never copied back from a worker: ours, and sniffio's (the worker is no async context).
_PRIVATE_VARS = frozenset(v for v in (reentrant, exempt, _SNIFFIO_VAR) if v is not None)
_MISSING = object()


def _leave_async_library() -> None:
    # The worker is no async context: sniffio (and the libraries asking it) must not say it is.
    if _SNIFFIO_VAR is not None:
        _SNIFFIO_VAR.set(None)


class _Job:
    """One call to run in the offload pool, in its own copy of the caller's context.

    Lean on purpose: a burst of offloaded calls holds one job per waiting task, and every
    object a waiting task keeps alive brings the garbage collector's next pass closer (a full
    pass over a big application's heap is tens of milliseconds on the loop)."""

    __slots__ = ("args", "call", "context", "elapsed", "files", "finished", "kwargs", "pools",
                 "submitted")  # fmt: skip

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
        self.elapsed: float | None = None  # how long the call itself ran in the worker
        self.pools: LoopPools | None = None
        self.submitted = 0.0

    def in_worker(self) -> Any:
        try:
            if self.pools is not None:
                self.pools.note_wait(time.perf_counter() - self.submitted)
        except Exception:
            logger.debug("blockbuster_lite: pool wait check failed", exc_info=True)
        start = time.perf_counter()
        try:
            return self.context.run(self.call, *self.args, **self.kwargs)
        finally:
            self.elapsed = time.perf_counter() - start
            self.finished = True

    async def run(self) -> Any:
        limiter = None
        try:
            pools = self.pools = ensure_pool_monitor()
            pools.sync_capacity()
            limiter = pools.file_limiter if self.files else pools.offload_limiter
        except Exception:  # a bug of ours must not fail the user's call: anyio's pool then
            logger.exception("blockbuster_lite: offload pool unavailable; using anyio's")
        self.submitted = time.perf_counter()
        if isinstance(limiter, ThreadLane):  # asyncio: one future, one trip through the loop
            return await limiter.submit(asyncio.get_running_loop(), self.in_worker)
        options: dict[str, Any] = {_ABANDON_ON_CANCEL: True, "limiter": limiter}
        return await anyio.to_thread.run_sync(self.in_worker, **options)


def run_offloaded(
    call: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    files: bool = False,
    timing: list[float] | None = None,
) -> T:
    """Run ``call(*args, **kwargs)`` in the offload pool; the current task (with a portal) waits.

    ``files=True``: in the pool's bulk file I/O lane. ``timing``: gets how long the call itself
    ran in the worker (not the wait), when it finished.
    """
    assert greenback is not None
    work = contextvars.copy_context()
    if _SNIFFIO_VAR is not None and work.get(_SNIFFIO_VAR) is not None:
        work.run(_leave_async_library)
    job = _Job(work, call, args, kwargs, files)
    # The pool machinery runs on the loop in this task; nothing it calls is the user's doing.
    token = reentrant.set(True)
    try:
        return cast(T, await_(job.run()))
    finally:
        reentrant.reset(token)
        if job.finished:
            _bring_back(work)
            if timing is not None and job.elapsed is not None:
                timing.append(job.elapsed)


def _bring_back(work: contextvars.Context) -> None:
    """Set in the task the context variables the call changed in the worker (the task's own
    context cannot have changed meanwhile: it was waiting)."""
    try:
        for var, value in work.items():
            if var not in _PRIVATE_VARS and var.get(_MISSING) is not value:
                var.set(value)
    except Exception:
        logger.exception("blockbuster_lite: could not copy context variables back from a worker")
