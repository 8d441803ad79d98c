"""Run hooks: every event loop tells the watchdog when it starts and when it stops.

While a watchdog runs, three entry points are wrapped (and put back exactly when the last one
stops; a wrapper someone else has since wrapped again is left in place, inert):

* ``asyncio.BaseEventLoop.run_forever``: every pure-Python asyncio loop, which covers
  ``run_until_complete``, ``asyncio.run``, ``asyncio.Runner``, anyio's asyncio backend,
  pytest-asyncio and uvicorn's ``asyncio`` loop;
* ``uvloop.Loop.run_forever``: uvloop's loop is C, but ``uvloop.Loop`` is a Python subclass and
  uvloop's own ``run_until_complete`` calls ``run_forever`` through the instance, so one
  attribute on that subclass sees ``uvloop.run``, ``new_event_loop()`` + ``run_until_complete``,
  ``Runner(loop_factory=uvloop.new_event_loop)`` and uvicorn's ``uvloop`` loop;
* ``trio._core._run.setup_runner``: the one function ``trio.run`` and guest mode
  (``trio.lowlevel.start_guest_run``, anyio's trio backend, its pytest plugin) both call to
  build their ``Runner``. A name bound before activation (``from trio import run``) still ends
  up there. The watchdog adds its instrument to the new runner before ``before_run``.

uvloop and trio imported after the watchdog started are wrapped when they are imported
(``wrapt``'s post-import hook, as the catalogue does). Each wrapper calls the listener on the
loop thread: ``loop_started`` before the loop runs its first callback, ``loop_stopped`` once
it returned; any error there is logged, never raised into the program.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from collections.abc import Callable
from types import CodeType, ModuleType
from typing import Any, Protocol

import wrapt

from .reporting import log_failure

__all__ = ["RUN_CODES", "Listener", "hooked_kinds", "install", "reset_after_fork", "uninstall"]


class Listener(Protocol):
    """What the hooks call (the monitor), on the loop's own thread."""

    def loop_started(self, target: Any, kind: str) -> None: ...

    def loop_stopped(self, target: Any) -> None: ...


_listener: Listener | None = None
_lock = threading.RLock()  # register_post_import_hook calls back at once
_MISSING = object()
#: (owner, attribute, what was there before or _MISSING, our wrapper), for each hook in place.
_applied: list[tuple[Any, str, Any, Any]] = []
_import_hooks_registered = False


def _wrap_run_forever(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(original)
    def run_forever(self: Any) -> Any:
        listener = _listener
        nested = False
        try:
            nested = bool(self.is_running())  # then the original raises "already running"
            if listener is not None and not nested:
                listener.loop_started(self, "asyncio")
        except Exception as exc:  # the watchdog never takes the program down
            log_failure(exc)
        try:
            return original(self)
        finally:
            if not nested:  # the listener running now: a guard may have come or gone
                _stopped(_listener, self)

    return run_forever


def _stopped(listener: Listener | None, target: Any) -> None:
    if listener is None:
        return
    try:
        listener.loop_stopped(target)
    except Exception as exc:
        log_failure(exc)


def _wrap_setup_runner(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def setup_runner(*args: Any, **kwargs: Any) -> Any:
        runner = original(*args, **kwargs)
        listener = _listener
        if listener is not None:
            try:
                listener.loop_started(runner, "trio")
            except Exception as exc:
                log_failure(exc)
        return runner

    return setup_runner


#: Code of the frame a hooked loop runs in: for uvloop (C) it is the one right under every
#: callback, so the stack reader cuts there (and an idle uvloop thread's top frame is it).
RUN_CODES: frozenset[CodeType] = frozenset(
    {
        _wrap_run_forever(lambda loop: None).__code__,
    }
)


def _apply(owner: Any, name: str, wrap: Callable[[Any], Any]) -> None:
    if any(o is owner and n == name for o, n, _, _ in _applied):
        return
    previous = vars(owner).get(name, _MISSING)
    current = getattr(owner, name)
    replacement = wrap(current)
    setattr(owner, name, replacement)
    _applied.append((owner, name, previous, replacement))


def _hook_uvloop(module: ModuleType) -> None:
    loop_class = getattr(module, "Loop", None)
    if isinstance(loop_class, type) and hasattr(loop_class, "run_forever"):
        _apply(loop_class, "run_forever", _wrap_run_forever)


def _hook_trio(module: ModuleType | None = None) -> None:
    run_module = sys.modules.get("trio._core._run")
    if run_module is not None and callable(getattr(run_module, "setup_runner", None)):
        _apply(run_module, "setup_runner", _wrap_setup_runner)


def _on_import(module: ModuleType) -> None:
    with _lock:
        if _listener is None:
            return
        try:
            if module.__name__ == "uvloop":
                _hook_uvloop(module)
            else:
                _hook_trio(module)
        except Exception as exc:
            log_failure(exc)


def install(listener: Listener) -> None:
    """Wrap every loop entry point (now, or when its library is imported) for ``listener``."""
    global _listener, _import_hooks_registered
    with _lock:
        _listener = listener
        _apply(asyncio.base_events.BaseEventLoop, "run_forever", _wrap_run_forever)
        uvloop = sys.modules.get("uvloop")
        if uvloop is not None:
            _hook_uvloop(uvloop)
        if "trio" in sys.modules:
            _hook_trio()
        if not _import_hooks_registered:
            _import_hooks_registered = True
            wrapt.register_post_import_hook(_on_import, "uvloop")
            wrapt.register_post_import_hook(_on_import, "trio")


def reset_after_fork() -> None:
    """In a forked child: the lock may have been held by a thread that did not survive."""
    global _lock
    _lock = threading.RLock()


def uninstall() -> None:
    """Put every wrapped entry point back exactly as it was."""
    global _listener
    with _lock:
        _listener = None
        while _applied:
            owner, name, previous, replacement = _applied.pop()
            if vars(owner).get(name) is not replacement:
                continue  # wrapped again by someone else since: ours stays, inert
            if previous is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, previous)


def hooked_kinds() -> set[str]:
    """Which loop families report their start and stop now (diagnostics and tests)."""
    kinds = set()
    for owner, name, _, _ in _applied:
        if name == "setup_runner":
            kinds.add("trio")
        elif getattr(owner, "__module__", "") == "uvloop":
            kinds.add("uvloop")
        else:
            kinds.add("asyncio")
    return kinds
