"""Zero-code ASGI instrumentation: the app a server loads gets ``BlockBusterMiddleware``.

With ``BLOCKBUSTER_LITE_MODE`` (or the runner) the start-up hook registers post-import hooks on
the servers below, the way OpenTelemetry's auto-instrumentation wraps frameworks: nothing is
imported by us, a server that is never imported is never touched. When a server loads its app,
the app gets the same per-request context (method, path, route), offload portal and raise-mode
JSON 500 as with ``app.add_middleware(BlockBusterMiddleware)``:

- uvicorn (``uvicorn app:app``, ``uvicorn.run``, ``fastapi run``/``dev``, gunicorn's
  ``uvicorn.workers.UvicornWorker`` and ``uvicorn_worker.UvicornWorker``, which all go through
  ``uvicorn.config.Config.load``): ``Config.loaded_app`` is instrumented after ``load()``;
- hypercorn (CLI and ``hypercorn.asyncio.serve``/``hypercorn.trio.serve``): the app
  ``hypercorn.utils.wrap_app`` wraps for ASGI.

How: a Starlette or FastAPI app (found through the ``.app`` chain of the wrappers around it)
whose middleware stack is not built yet gets the middleware as its outermost *user* middleware,
inside Starlette's ``ServerErrorMiddleware``, so the JSON 500 is sent before Starlette's plain
one; any other ASGI callable (ASGI2 apps once uvicorn adapted them) is wrapped from outside.
Never twice: an app whose user middleware already holds ``BlockBusterMiddleware``, or that is
one, is left alone, and a middleware that finds the scope already handled by an outer one passes
the request straight through (``asgi.HANDLED``). One line on stderr says what was instrumented.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import wrapt

from ..core.config import parse_bool
from ..core.extensions import extensions
from ..core.guard import process_guard

if TYPE_CHECKING:
    from .asgi import BlockBusterMiddleware

__all__ = ["ENV_ASGI", "SERVER_HOOKS", "env_hook", "install_server_hooks", "instrument_app",
           "instrumented"]  # fmt: skip

#: ``0`` leaves the servers' apps alone (env activation then checks calls without the request).
ENV_ASGI = "BLOCKBUSTER_LITE_ASGI"
_MARK = "_self_blockbuster_lite_hook"  # wrapt keeps ``_self_*`` on the proxy, not the function

#: (module, patch function): registered as post-import hooks, in this order.
SERVER_HOOKS: tuple[tuple[str, str], ...] = (
    ("uvicorn.config", "_hook_uvicorn"),
    ("hypercorn.utils", "_hook_hypercorn"),
    ("hypercorn.asyncio", "_hook_hypercorn"),
    ("hypercorn.trio", "_hook_hypercorn"),
)

#: What was instrumented in this process: ``"uvicorn: FastAPI app (middleware added)"``.
instrumented: list[str] = []
_installed = False


def install_server_hooks() -> None:
    """Register the post-import hooks (idempotent); the servers are instrumented on import."""
    global _installed
    if _installed:
        return
    _installed = True
    for module, function in SERVER_HOOKS:
        wrapt.register_post_import_hook(globals()[function], module)


def env_hook(environ: Mapping[str, str] | None = None) -> Callable[[], None]:
    """For ``activate_from_env``: validate ``BLOCKBUSTER_LITE_ASGI``; once active, hook servers."""
    env = os.environ if environ is None else environ
    wanted = parse_bool(env.get(ENV_ASGI, ""), ENV_ASGI)
    return install_server_hooks if wanted else _nothing


def _nothing() -> None:
    pass


def _middleware_class() -> type[BlockBusterMiddleware]:
    # imported when a server loads its app, not before: importing the middleware module begins
    # raise mode's start-up grace (see integrations/startup.py)
    from .asgi import BlockBusterMiddleware

    return BlockBusterMiddleware


def _starlette_app(app: Any) -> Any:
    """The Starlette/FastAPI app at ``app`` or down its ``.app`` chain of wrappers; else None."""
    middleware_class = _middleware_class()
    module = sys.modules.get("starlette.applications")
    starlette = getattr(module, "Starlette", None)
    if starlette is None:
        return None
    for _ in range(16):
        if isinstance(app, starlette):
            return app
        if isinstance(app, middleware_class):
            return None
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _already_instrumented(app: Any) -> bool:
    middleware_class = _middleware_class()
    for _ in range(16):
        if isinstance(app, middleware_class):
            return True
        middleware = getattr(app, "user_middleware", None)
        if isinstance(middleware, list) and any(
            getattr(m, "cls", None) is middleware_class for m in middleware
        ):
            return True
        app = getattr(app, "app", None)
        if app is None:
            return False
    return False


def instrument_app(app: Any, server: str) -> Any:
    """``app`` with the middleware in it (the same object) or around it (a new one).

    Only while the process guard env activation made is on (a server started after
    ``deactivate()`` serves its app untouched). Never raises: a failure leaves the app as it was
    and says so on stderr.
    """
    try:
        if app is None or process_guard() is None or _already_instrumented(app):
            return app
        inner = _starlette_app(app)
        name = type(inner if inner is not None else app).__name__
        if inner is not None and _add_to_starlette(inner):
            _say(f"{server}: {name} app instrumented (BlockBusterMiddleware as its outermost "
                 "user middleware)")  # fmt: skip
            return app
        _say(f"{server}: ASGI app {name} instrumented (wrapped in BlockBusterMiddleware)")
        return _middleware_class()(app)
    except Exception as exc:
        _say(f"{server}: could not instrument the app ({type(exc).__name__}: {exc}); requests "
             "are checked without their route")  # fmt: skip
        return app


def _add_to_starlette(app: Any) -> bool:
    """``app.add_middleware(BlockBusterMiddleware)``; False once the app has started (Starlette
    >= 0.24 refuses then; older ones rebuild their stack, which is what we want)."""
    if not callable(getattr(app, "add_middleware", None)):
        return False
    try:
        app.add_middleware(_middleware_class())
    except RuntimeError:
        return False
    return True


def _say(what: str) -> None:
    instrumented.append(what)
    pid = f" [pid {os.getpid()}]"
    with contextlib.suppress(OSError, ValueError):
        print(f"blockbuster_lite{pid}: {what}", file=sys.stderr, flush=True)


def _hook_uvicorn(module: Any) -> None:
    config = getattr(module, "Config", None)
    if config is None or getattr(vars(config).get("load"), _MARK, False):
        return

    def load(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)
        loaded = getattr(instance, "loaded_app", None)
        if loaded is not None:
            instance.loaded_app = instrument_app(loaded, "uvicorn")
        return result

    wrapt.wrap_function_wrapper(config, "load", load)
    _mark(vars(config)["load"])


def _hook_hypercorn(module: Any) -> None:
    original = getattr(module, "wrap_app", None)
    if original is None or getattr(original, _MARK, False):
        return

    def wrap_app(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        wrapper = wrapped(*args, **kwargs)
        if type(wrapper).__name__ == "ASGIWrapper" and hasattr(wrapper, "app"):
            wrapper.app = instrument_app(wrapper.app, "hypercorn")
        return wrapper

    wrapt.wrap_function_wrapper(module, "wrap_app", wrap_app)
    _mark(module.wrap_app)


def _mark(wrapper: Callable[..., Any]) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        setattr(wrapper, _MARK, True)


extensions.add_env_hook(env_hook)
