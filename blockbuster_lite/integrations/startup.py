"""Zero-code activation at interpreter start-up, and the start-up grace.

The package installs ``blockbuster_lite.pth`` into site-packages (wheel and editable installs).
Its one line runs in every interpreter of the environment, checks ``os.environ`` itself and
imports this module only when ``BLOCKBUSTER_LITE_MODE`` is set; unset, nothing is imported.
Spawned workers (``uvicorn --workers``, ``--reload``, multiprocessing) inherit the variables and
activate the same way; forked workers (gunicorn) inherit the patched process.

A bad value never stops the interpreter: ``activate_at_startup()`` prints one line naming the
variable to stderr and the program runs without the sanitizer (a typo must not break pip or
every other tool in the virtualenv). ``python -I`` and ``python -S`` skip ``.pth`` files, so they
skip the hook too.

Start-up grace (raise mode only, unless ``BLOCKBUSTER_LITE_STRICT_STARTUP=1``): while a server
starts, i.e. imports the app and runs the lifespan start-up, blocking calls are warned, not
raised, so a strict staging deploy cannot crash-loop on an import-time file read. The grace
begins when a server whose start-up we can follow is imported (uvicorn, which also covers
gunicorn's ``UvicornWorker`` and ``fastapi dev``/``run``) or the ASGI middleware module is
imported, and ends at ``end_startup()``: when uvicorn's ``Server.startup()`` returns, or when
``BlockBusterMiddleware`` sees the lifespan start-up complete or its first request. A program
that starts no such server (a script running ``asyncio.run``) never has a grace; its imports
run before any loop and are not checked anyway.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import wrapt

from ..core.config import ConfigError, Mode, parse_flag
from ..core.guard import Guard, activate_from_env, process_guard
from ..core.report import logger

__all__ = [
    "ENV_STRICT_STARTUP",
    "ENV_SUMMARY",
    "activate_at_startup",
    "end_startup",
    "in_startup",
    "parse_flag",
]

ENV_STRICT_STARTUP = "BLOCKBUSTER_LITE_STRICT_STARTUP"
ENV_SUMMARY = "BLOCKBUSTER_LITE_SUMMARY"

#: Servers whose start-up we follow: (module, class, async method that returns once the app is
#: imported and its lifespan start-up is done). Importing the module begins the grace.
SERVER_STARTUPS: tuple[tuple[str, str, str], ...] = (("uvicorn.server", "Server", "startup"),)
#: Importing the ASGI middleware also begins the grace; it calls end_startup() itself.
MIDDLEWARE_MODULE = "blockbuster_lite.integrations.asgi"

_attempted = False
_grace_wanted = False
_grace_open = False
_restore: list[tuple[type, str, Any, Any]] = []


def activate_at_startup(environ: Mapping[str, str] | None = None) -> Guard | None:
    """Activate as the BLOCKBUSTER_LITE_* variables say; called by the ``.pth`` hook.

    Never raises: an invalid setting or a failure is reported on stderr and the interpreter goes
    on without the sanitizer. Runs once (venvs with a ``lib64`` link process ``.pth`` twice).
    """
    global _attempted
    if _attempted:
        return process_guard()
    _attempted = True
    try:
        return _activate(os.environ if environ is None else environ)
    except ConfigError as exc:
        _complain(f"{exc}; running without the sanitizer")
    except Exception as exc:
        _complain(
            f"could not activate ({type(exc).__name__}: {exc}); running without the sanitizer"
        )
    return None


def _activate(environ: Mapping[str, str]) -> Guard | None:
    global _grace_wanted
    strict = parse_flag(environ.get(ENV_STRICT_STARTUP, ""), ENV_STRICT_STARTUP)
    summary = parse_flag(environ.get(ENV_SUMMARY, ""), ENV_SUMMARY)
    guard = activate_from_env(environ)
    if guard is None:
        return None
    if summary:
        from .summary import install_summary

        install_summary()
    if guard.mode is Mode.RAISE and not strict:
        _grace_wanted = True
        for module, owner, method in SERVER_STARTUPS:
            wrapt.register_post_import_hook(_follow_server(owner, method), module)
        wrapt.register_post_import_hook(_on_middleware_import, MIDDLEWARE_MODULE)
    return guard


def _complain(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"blockbuster_lite: {message}", file=sys.stderr, flush=True)


def _begin_grace() -> None:
    global _grace_open
    guard = process_guard()
    if guard is not None and _grace_wanted:
        guard.in_startup = True
        _grace_open = True


def _on_middleware_import(module: Any) -> None:
    _begin_grace()


def _follow_server(owner_name: str, method: str) -> Callable[[Any], None]:
    def hook(module: Any) -> None:
        owner = getattr(module, owner_name, None)
        original = vars(owner).get(method) if isinstance(owner, type) else None
        if original is None:  # a server version we do not know: no grace rather than endless
            return

        @functools.wraps(original)
        async def startup(*args: Any, **kwargs: Any) -> Any:
            try:
                return await original(*args, **kwargs)
            finally:
                end_startup()

        assert isinstance(owner, type)
        setattr(owner, method, startup)
        _restore.append((owner, method, original, startup))
        _begin_grace()

    return hook


def in_startup() -> bool:
    """True while the process guard is in its start-up grace."""
    guard = process_guard()
    return guard is not None and guard.in_startup


def end_startup() -> None:
    """End the start-up grace: raise mode raises from now on. Idempotent and cheap.

    Called when uvicorn's start-up returns and by the ASGI middleware (lifespan start-up
    complete, or first request); restores the server methods we wrapped.
    """
    global _grace_open, _grace_wanted
    if not _grace_open:
        return
    _grace_open = _grace_wanted = False  # start-up happens once: a late import does not reopen it
    while _restore:
        owner, method, original, wrapper = _restore.pop()
        if vars(owner).get(method) is wrapper:
            setattr(owner, method, original)
    guard = process_guard()
    if guard is None or not guard.in_startup:
        return
    guard.in_startup = False
    graced = sum(1 for v in guard.violations if v.action is Mode.WARN and v.kind == "call")
    if graced:
        logger.warning(
            "blockbuster_lite: start-up complete; %d blocking call(s) made during start-up were "
            "warned, not raised (set %s=1 to make start-up strict)",
            graced,
            ENV_STRICT_STARTUP,
        )
