"""A pure ASGI middleware: each violation names its request, and raise mode answers with a 500.

``app.add_middleware(BlockBusterMiddleware)`` (FastAPI, Starlette) or ``BlockBusterMiddleware(app)``
(any ASGI app). With no ``mode`` the middleware checks nothing itself: it relies on the guard that
is already active (``BLOCKBUSTER_LITE_MODE``, the runner, ``activate()``, ``intercept()``) and adds
to every violation of a request its ``method``, ``path`` and matched ``route`` template
(``/items/{item_id}``), counts violations per route, and, when the innermost guard raises, turns
the ``BlockingCallError`` into a JSON 500 (if the response has not started) and logs every
violation of the request at ERROR, with its call site, on logger ``blockbuster_lite.asgi``. That
ERROR line is the refusal's one log line: the raise action does not log it again.

Memory is bounded by the app's code, not its traffic. Route counts are keyed by the route
template; requests no route matched (404s, or an app without a router) count under
``"<unrouted>"``, and past ``MAX_ROUTES`` distinct routes under ``"<other routes>"``. Each route
counts per call family (``sqlite3.Cursor.execute``, not each statement). A request keeps at most
``MAX_REQUEST_VIOLATIONS`` violations for its log lines (a long stream can make thousands) and
counts the rest in ``RequestContext.dropped``. Method, path and route are stored with control
characters escaped (``escape_control``): a path with CR/LF or ANSI codes cannot forge a log line;
the path is cut to ``MAX_PATH_CHARS`` characters.

With ``mode=...`` the middleware also turns the process-wide guard on (``activate()``): at lifespan
start-up, with start-up grace (raise mode only warns until the app reports start-up complete), or
at the first request when the server runs no lifespan; it turns that guard off again at lifespan
shutdown. An explicit ``mode`` wins over ``BLOCKBUSTER_LITE_MODE``; ``mode="off"`` activates
nothing. WebSocket and other non-HTTP scopes pass through untouched.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from ..core.config import ConfigError, Mode, parse_mode
from ..core.extensions import extensions
from ..core.guard import Guard, activate, deactivate, process_guard
from ..core.patcher import patcher
from ..core.report import BlockingCallError, Violation, escape_control
from ..core.state import request_context, state
from .startup import end_startup

__all__ = (
    "MAX_REQUEST_VIOLATIONS",
    "MAX_ROUTES",
    "UNROUTED",
    "BlockBusterMiddleware",
    "RequestContext",
    "route_stats",
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("blockbuster_lite.asgi")

_KEYS = ("method", "path", "route")

#: The route-statistics key of requests no route matched (404s, apps without a router).
UNROUTED = "<unrouted>"
#: Distinct routes counted by name; any further ones count under ``OTHER_ROUTES``.
MAX_ROUTES = 1000
OTHER_ROUTES = "<other routes>"
#: Violations one request keeps for its log lines; the rest are counted (``dropped``).
MAX_REQUEST_VIOLATIONS = 100
#: A request's path and method as reports keep them are cut to this length (a client sends up
#: to uvicorn's 16 KiB line; a process guard keeps 10,000 violations, each with its request's).
MAX_PATH_CHARS = 256
MAX_METHOD_CHARS = 32
_counts_lock = threading.Lock()
_totals: dict[str, Counter[str]] = {}
_in_flight = 0


def route_template(scope: Mapping[str, Any]) -> str | None:
    """The matched route's template, e.g. ``/api/items/{item_id}``; None before routing.

    Starlette's router stores the matched route in the scope it was given (the one this
    middleware passed down). Inside a ``Mount`` the route holds only its own part of the path, so
    the mount's matched prefix (``root_path`` beyond ``app_root_path``) is put in front.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    root_path: str = scope.get("root_path", "")
    app_root_path: str = scope.get("app_root_path", root_path)
    prefix = root_path[len(app_root_path) :]
    if not hasattr(route, "endpoint"):  # a Mount or Host that was not routed any further
        return prefix or path
    return prefix + path


class RequestContext(Mapping[str, Any]):
    """``method``, ``path`` and ``route`` of one request, as ``Violation.context`` copies them.

    Routing happens inside the app, after this middleware ran, so ``route`` is read from the
    scope when a violation is built (by then the endpoint's route is known). Every value has its
    control characters escaped. ``violations`` keeps the first ``MAX_REQUEST_VIOLATIONS`` of the
    request, ``dropped`` counts the others.
    """

    __slots__ = (
        "_scope", "_snapshot", "dropped", "dropped_refusals", "method", "owner", "path",
        "violations",
    )  # fmt: skip

    #: Tells the raise action that this request logs its refusals (once, at ERROR).
    logs_refusals = True

    def __init__(self, scope: Scope, owner: BlockBusterMiddleware) -> None:
        self._scope = scope
        self.method: str | None = _escaped(scope.get("method"), MAX_METHOD_CHARS)
        self.path: str | None = _escaped(scope.get("path"), MAX_PATH_CHARS)
        self.owner = owner
        self.violations: list[Violation] = []
        self.dropped = 0
        self.dropped_refusals = 0  # dropped ones of raise mode: the log line counts them
        self._snapshot: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        """The copy ``Violation.context`` holds: one dict shared while the route stays the same."""
        snapshot = self._snapshot
        route = self["route"]
        if snapshot is None or snapshot["route"] != route:
            snapshot = self._snapshot = {"method": self.method, "path": self.path, "route": route}
        return snapshot

    def keep(self, violation: Violation) -> None:
        if len(self.violations) < MAX_REQUEST_VIOLATIONS:
            self.violations.append(violation)
        else:
            self.dropped += 1
            if violation.action is Mode.RAISE:
                self.dropped_refusals += 1

    def __getitem__(self, key: str) -> Any:
        if key == "route":
            return _escaped(route_template(self._scope))
        if key == "method":
            return self.method
        if key == "path":
            return self.path
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_KEYS)

    def __len__(self) -> int:
        return len(_KEYS)


def _escaped(value: Any, limit: int | None = None) -> Any:
    if not isinstance(value, str):
        return value
    text = escape_control(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _observe(violation: Violation) -> None:
    context = request_context.get()
    if not isinstance(context, RequestContext):
        return
    context.keep(violation)
    route = violation.context.get("route") or UNROUTED
    family = violation.family or violation.call
    with _counts_lock:
        _count(_totals, route, family)
        _count(context.owner._counts, route, family)


def _count(counts: dict[str, Counter[str]], route: str, family: str) -> None:
    calls = counts.get(route)
    if calls is None:
        if len(counts) >= MAX_ROUTES:
            route = OTHER_ROUTES
        calls = counts.setdefault(route, Counter())
    calls[family] += 1


def _request_started() -> None:
    # Observe only while requests are in flight: a process that stops serving is left as found.
    global _in_flight
    with patcher.lock:
        _in_flight += 1
        if _in_flight == 1:
            state.observers = (*state.observers, _observe)


def _request_finished() -> None:
    global _in_flight
    with patcher.lock:
        _in_flight -= 1
        if _in_flight == 0:
            state.observers = tuple(o for o in state.observers if o is not _observe)


def _snapshot(counts: dict[str, Counter[str]], reset: bool = False) -> dict[str, dict[str, int]]:
    with _counts_lock:
        copy = {route: dict(calls) for route, calls in counts.items()}
        if reset:
            counts.clear()
    return copy


def route_stats(*, reset: bool = False) -> dict[str, dict[str, int]]:
    """``{route: {call family: count}}`` over every middleware of the process (unmatched
    requests under ``UNROUTED``); ``reset`` clears it."""
    return _snapshot(_totals, reset)


def _end_startup() -> None:
    end_startup()
    # A grace begun elsewhere (this middleware's own guard, a runner) ends here too.
    guard = process_guard()
    if guard is not None:
        guard.in_startup = False


def _blocking_error(exc: BaseException) -> BlockingCallError | None:
    """The BlockingCallError that ``exc`` is, or that an exception group holds and nothing else."""
    if isinstance(exc, BlockingCallError):
        return exc
    inner: Iterable[BaseException] = getattr(exc, "exceptions", None) or ()
    found = [_blocking_error(e) for e in inner]
    if found and all(found):
        return found[0]
    return None


class BlockBusterMiddleware:
    """Pure ASGI middleware; see the module docstring. ``route_counts``: ``{route: {call: n}}``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        mode: Mode | str | None = None,
        allow: Iterable[str] | str = (),
        scope: Iterable[str] | str | None = None,
    ) -> None:
        self.app = app
        self._mode = None if mode is None else parse_mode(mode, "BlockBusterMiddleware(mode=...)")
        if self._mode is None and (allow or scope is not None):
            raise ConfigError(
                "BlockBusterMiddleware: allow and scope need a mode; without one the middleware "
                "uses the active guard (set allow/scope there, e.g. BLOCKBUSTER_LITE_ALLOW)"
            )
        self._settings: dict[str, Any] = {"allow": allow, "scope": scope}
        if self._mode is not None:  # validate now, not at the first request
            Guard(self._mode, **self._settings, source="BlockBusterMiddleware")
        self.guard: Guard | None = None
        self._owns_guard = False
        self._serving = False
        self._counts: dict[str, Counter[str]] = {}

    @property
    def route_counts(self) -> dict[str, dict[str, int]]:
        return _snapshot(self._counts)

    def _ensure_guard(self, *, startup: bool) -> None:
        if self._mode is None or self._mode is Mode.OFF:
            return
        if self.guard is not None and self.guard.active:
            return
        fresh = process_guard() is None
        self.guard = activate(self._mode, **self._settings, source="BlockBusterMiddleware")
        if fresh:
            self._owns_guard = True
            self.guard.in_startup = startup

    def _start_serving(self) -> None:
        if not self._serving:
            self._serving = True
            self._ensure_guard(startup=False)
            _end_startup()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self._start_serving()
        context = RequestContext(scope, self)
        status: int | None = None

        async def send_checked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = request_context.set(context)
        _request_started()
        try:
            guards = state.guards
            if guards and guards[-1].mode is Mode.OFFLOAD:
                offload = extensions.offload
                if offload is not None:
                    await offload.ensure_portal()
            await self.app(scope, receive, send_checked)
        except Exception as exc:
            error = _blocking_error(exc)
            if error is None or status is not None:
                raise
            status = 500
            await _send_error(send, error.violation, context)
        finally:
            _request_finished()
            request_context.reset(token)
            _log_request(context, status)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._ensure_guard(startup=True)

        async def send_checked(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self._serving = True
                _end_startup()
            elif message["type"] == "lifespan.shutdown.complete" and self._owns_guard:
                self._owns_guard = self._serving = False
                deactivate()
            await send(message)

        await self.app(scope, receive, send_checked)


async def _send_error(send: Send, violation: Violation, context: RequestContext) -> None:
    body = json.dumps(
        {
            "error": "blocking call",
            "call": violation.call,
            "site": violation.site,
            "function": escape_control(violation.function),
            "method": context.method,
            "path": context.path,
            "route": violation.context.get("route") or context["route"],
            "message": violation.message,
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _log_request(context: RequestContext, status: int | None) -> None:
    for violation in context.violations:
        if violation.action is Mode.RAISE:
            logger.error("%s [response %s]", violation.message, status or "none")
    if context.dropped_refusals:
        logger.error(
            "blockbuster_lite: %d more blocking call(s) in request %s %s not listed [response %s]",
            context.dropped_refusals,
            context.method or "",
            context.path or "",
            status or "none",
        )
