"""Loop starts: the thread that is about to drive an event loop tells whoever asked.

Every event loop installs its async-generator hooks on its own thread when it starts to run,
before its first callback: asyncio's ``BaseEventLoop.run_forever`` (``asyncio.run``,
``run_until_complete``, ``asyncio.Runner``, anyio, uvicorn), uvloop's ``Loop.run_forever`` and
trio's runner (``trio.run``, guest mode) all call ``sys.set_asyncgen_hooks``, looked up on
``sys`` each time. While the patcher is active that one function is wrapped: the wrapper tells
the listeners, then calls the original. Nothing else changes: the hooks are the caller's, the
call's result and errors are the original's, and a listener's error is logged at debug level,
never raised into the program.

What listens: quiet objects (catalogue/_sqlite3_checked.py). A sqlite3 connection bound to the
thread that made it, made while that thread drove no loop, carries no checks (its calls cost
what the C methods cost) until a loop starts on that thread. Since a loop may have started while
the wrapper was not in place (between two activations), ``install`` tells the listeners that
every thread may have started one.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["install", "listen", "uninstall"]

logger = logging.getLogger("blockbuster_lite")

#: (on this thread, on every thread): called before a loop starts here; called at install.
_listeners: list[tuple[Callable[[], None], Callable[[], None]]] = []
_lock = threading.Lock()
_wrapper: Any = None
_original: Any = None


def listen(this_thread: Callable[[], None], every_thread: Callable[[], None]) -> None:
    """Call ``this_thread()`` on a thread about to drive a loop, and ``every_thread()`` whenever
    the wrapper is put in place (loops may have started unseen before). Idempotent."""
    with _lock:
        if (this_thread, every_thread) not in _listeners:
            _listeners.append((this_thread, every_thread))


def _tell(which: int) -> None:
    for listener in tuple(_listeners):
        try:
            listener[which]()
        except Exception:  # a bug of ours never reaches the program
            logger.debug("blockbuster_lite: a loop-start listener failed", exc_info=True)


def install() -> None:
    """Wrap ``sys.set_asyncgen_hooks`` (the patcher's first activation)."""
    global _wrapper, _original
    with _lock:
        if _wrapper is None or sys.set_asyncgen_hooks is not _wrapper:
            original = sys.set_asyncgen_hooks

            @functools.wraps(original)
            def set_asyncgen_hooks(*args: Any, **kwargs: Any) -> Any:
                if _wrapper is set_asyncgen_hooks:  # inert once uninstalled
                    _tell(0)
                return original(*args, **kwargs)

            _original, _wrapper = original, set_asyncgen_hooks
            sys.set_asyncgen_hooks = set_asyncgen_hooks
    _tell(1)


def uninstall() -> None:
    """Put the original back (the last guard stopped); a wrapper someone else has wrapped again
    is left in place, inert."""
    global _wrapper, _original
    with _lock:
        if _wrapper is not None and sys.set_asyncgen_hooks is _wrapper:
            sys.set_asyncgen_hooks = _original
        _wrapper = _original = None
