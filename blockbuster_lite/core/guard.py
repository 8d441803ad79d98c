"""Guards: intercept(), activate(), deactivate(), activate_from_env(), allow_blocking()."""

from __future__ import annotations

import functools
import inspect
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextvars import Token
from types import TracebackType
from typing import Any, TypeVar, cast

from .config import (
    ENV_MODE,
    AllowRule,
    ConfigError,
    Mode,
    parse_allow,
    parse_count,
    parse_mode,
    parse_scope,
    parse_watchdog_seconds,
    settings_from_env,
)
from .extensions import extensions
from .patcher import patcher
from .report import Violation, logger
from .state import exempt, state
from .stats import SiteStats, StatsCollector

__all__ = [
    "Guard",
    "activate",
    "activate_from_env",
    "allow_blocking",
    "deactivate",
    "intercept",
]

F = TypeVar("F", bound=Callable[..., Any])

#: A process-wide guard keeps at most this many violations (the oldest are dropped).
PROCESS_GUARD_MAX_VIOLATIONS = 10_000


class Guard:
    """An active (or activatable) sanitizer configuration.

    Use it as a context manager (sync or async) or as a decorator of sync and async functions; a
    decorated function gets a fresh guard, with the same settings, for each call.
    ``violations`` lists every detection made while the guard was active, including those whose
    ``BlockingCallError`` the code under test swallowed.
    """

    def __init__(
        self,
        mode: Mode | str = Mode.RAISE,
        *,
        allow: Iterable[str] | str = (),
        scope: Iterable[str] | str | None = None,
        watchdog: float | None = None,
        source: str = "intercept()",
        max_violations: int | None = None,
    ) -> None:
        self.mode = parse_mode(mode, f"{source} argument 'mode'")
        self.allow: tuple[AllowRule, ...] = parse_allow(allow, f"{source} argument 'allow'")
        self.scope = parse_scope(scope, f"{source} argument 'scope'")
        self.watchdog = parse_watchdog_seconds(watchdog, f"{source} argument 'watchdog'")
        if max_violations is not None:
            max_violations = parse_count(
                max_violations, f"{source} argument 'max_violations'", "maximum", maximum=10**9
            )
        if self.mode is Mode.OFFLOAD:
            require_offload(source)
        self._source = source
        self._max = max_violations
        self._violations: deque[Violation] = deque(maxlen=max_violations)
        self._reported: set[tuple[str, str, str, int, str]] = set()
        self._stats = StatsCollector()
        self._lock = threading.Lock()
        self._active = False
        self._watchdog_handle: Any = None
        #: While True, raise mode only warns (start-up grace; see the runner and the middleware).
        self.in_startup = False

    # -- configuration ---------------------------------------------------------------------
    def _copy(self) -> Guard:
        return Guard(
            self.mode,
            allow=[rule.text for rule in self.allow],
            scope=self.scope,
            watchdog=self.watchdog,
            source=self._source,
            max_violations=self._max,
        )

    def effective_mode(self) -> Mode:
        if self.in_startup and self.mode is Mode.RAISE:
            return Mode.WARN
        return self.mode

    @property
    def active(self) -> bool:
        return self._active

    @property
    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    def stats(self) -> list[SiteStats]:
        """Per call site (patched calls and watchdog stalls): count and total, p50, p99 and
        maximum blocked time, worst first; every violation counts, even past ``max_violations``.
        """
        return self._stats.snapshot()

    def clear(self) -> None:
        with self._lock:
            self._violations.clear()
            self._reported.clear()
            self._stats.clear()

    def __repr__(self) -> str:
        state_text = "active" if self._active else "inactive"
        return f"<Guard mode={self.mode.value} {state_text} violations={len(self._violations)}>"

    # -- recording (called from the hot path) -----------------------------------------------
    def _record(self, violation: Violation) -> None:
        with self._lock:
            self._violations.append(violation)
            self._stats.add(violation)

    def first_report(self, violation: Violation) -> bool:
        """True the first time this guard sees this call family at this site (deduplicates
        reports): ``socket.connect`` to 2,000 ports from one line is one report, not 2,000."""
        key = violation.report_key
        with self._lock:
            if key in self._reported:
                return False
            self._reported.add(key)
            return True

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> Guard:
        with patcher.lock:
            if self._active:
                raise RuntimeError(f"{self!r} is already active; a guard can be entered once")
            patcher.acquire()
            self._active = True
            state.guards = (*state.guards, self)
        if self.watchdog is not None:
            try:
                start_watchdog = extensions.start_watchdog
                if start_watchdog is None:
                    raise ConfigError(
                        f"watchdog={self.watchdog!r} from {self._source}: the watchdog is not "
                        "loaded (import blockbuster_lite.watchdog)"
                    )
                self._watchdog_handle = start_watchdog(self, self.watchdog)
            except Exception:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        with patcher.lock:
            if not self._active:
                return
            self._active = False
            state.guards = tuple(g for g in state.guards if g is not self)
            patcher.release()
        handle, self._watchdog_handle = self._watchdog_handle, None
        if handle is not None:
            handle.stop()

    def __enter__(self) -> Guard:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Guard:
        self.start()
        if self.mode is Mode.OFFLOAD:  # the entering task gets a portal: its calls can move
            try:
                offload = extensions.offload
                if offload is not None:
                    await offload.ensure_portal()
            except BaseException:
                self.stop()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self._copy():
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._copy():
                return func(*args, **kwargs)

        return cast(F, wrapper)


def intercept(
    mode: Mode | str = Mode.RAISE,
    *,
    allow: Iterable[str] | str = (),
    scope: Iterable[str] | str | None = None,
    watchdog: float | None = None,
) -> Guard:
    """A guard for a block of code or a function: ``with intercept("raise") as guard: ...``."""
    return Guard(mode, allow=allow, scope=scope, watchdog=watchdog, source="intercept()")


_process_guard: Guard | None = None
_process_lock = threading.RLock()


def activate(
    mode: Mode | str = Mode.WARN,
    *,
    allow: Iterable[str] | str = (),
    scope: Iterable[str] | str | None = None,
    watchdog: float | None = None,
    source: str = "activate()",
) -> Guard:
    """Turn the sanitizer on for the whole process (servers). Idempotent.

    A second call with the same settings returns the active guard; with other settings it
    reconfigures that guard in place (logged).
    """
    global _process_guard
    guard = Guard(
        mode,
        allow=allow,
        scope=scope,
        watchdog=watchdog,
        source=source,
        max_violations=PROCESS_GUARD_MAX_VIOLATIONS,
    )
    with _process_lock:
        current = _process_guard
        if current is not None and current.active:
            if (current.mode, current.allow, current.scope, current.watchdog) != (
                guard.mode,
                guard.allow,
                guard.scope,
                guard.watchdog,
            ):
                logger.info("blockbuster_lite: reconfiguring the active process guard")
                if current.watchdog != guard.watchdog:
                    current.stop()
                    current.watchdog = guard.watchdog
                    current.mode, current.allow, current.scope = guard.mode, guard.allow, guard.scope
                    return current.start()
                current.mode, current.allow, current.scope = guard.mode, guard.allow, guard.scope
            else:
                logger.debug("blockbuster_lite: activate() called again; already active")
            return current
        _process_guard = guard.start()
        return guard


def deactivate() -> None:
    """Turn the process-wide guard off; with no other guard active, every original is restored."""
    global _process_guard
    with _process_lock:
        guard, _process_guard = _process_guard, None
    if guard is not None:
        guard.stop()


def process_guard() -> Guard | None:
    return _process_guard


def activate_from_env(environ: Mapping[str, str] | None = None) -> Guard | None:
    """Activate process-wide as the BLOCKBUSTER_LITE_* variables say; None when unset or off."""
    settings = settings_from_env(environ)
    if settings is None:
        return None
    # each hook (OpenTelemetry: BLOCKBUSTER_LITE_OTEL) validates its variables before activating
    enablers = [hook(environ) for hook in extensions.env_hooks]
    guard = activate(**settings, source=ENV_MODE)
    for enable in enablers:
        enable()
    return guard


def require_offload(source: str) -> None:
    """Raise ``ConfigError`` naming ``source`` when offload mode cannot run in this process."""
    offload = extensions.offload
    if offload is None:
        raise ConfigError(
            f"mode 'offload' from {source}: offload support is not loaded "
            "(import blockbuster_lite.offload)"
        )
    offload.require(source)


class allow_blocking:
    """Exempt the current task or thread (a ContextVar) from every guard.

    ``with allow_blocking(): ...``, ``@allow_blocking`` or ``@allow_blocking()`` on sync and
    async functions. Other tasks and threads stay checked.
    """

    def __new__(cls, func: Callable[..., Any] | None = None) -> Any:
        instance = super().__new__(cls)
        instance._tokens = []
        if func is not None:
            return instance(func)
        return instance

    _tokens: list[Token[bool]]

    def __enter__(self) -> None:
        self._tokens.append(exempt.set(True))

    def __exit__(self, *exc_info: object) -> None:
        exempt.reset(self._tokens.pop())

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = exempt.set(True)
                try:
                    return await func(*args, **kwargs)
                finally:
                    exempt.reset(token)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = exempt.set(True)
            try:
                return func(*args, **kwargs)
            finally:
                exempt.reset(token)

        return cast(F, wrapper)
