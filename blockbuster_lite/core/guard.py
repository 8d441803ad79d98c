"""Guards: intercept(), activate(), deactivate(), activate_from_env().

allow_blocking() lives in core/allow.py.
"""

from __future__ import annotations

import _thread
import functools
import inspect
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast

from .config import (
    ENV_MODE,
    AllowRule,
    ConfigError,
    Mode,
    parse_allow,
    parse_bool,
    parse_count,
    parse_mode,
    parse_scope,
    parse_watchdog_seconds,
    settings_from_env,
)
from .extensions import extensions
from .patcher import patcher
from .repeats import Repeat, SeenSite, SiteKey, flush_log_counts, materialize
from .report import Violation, logger
from .state import state
from .stats import SiteStats, StatsCollector

__all__ = [
    "Guard",
    "activate",
    "activate_from_env",
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
    ``BlockingCallError`` the code under test swallowed. In warn and log mode, detections at a
    site already reported are kept compact (core/repeats.py): up to ``KEPT_PER_SITE`` per site,
    each built when the list is read; past that they are counted in ``stats()`` only.
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
        default_allow: bool = True,
    ) -> None:
        self.mode = parse_mode(mode, f"{source} argument 'mode'")
        self.allow: tuple[AllowRule, ...] = parse_allow(allow, f"{source} argument 'allow'")
        self.scope = parse_scope(scope, f"{source} argument 'scope'")
        self.watchdog = parse_watchdog_seconds(watchdog, f"{source} argument 'watchdog'")
        if max_violations is not None:
            max_violations = parse_count(
                max_violations, f"{source} argument 'max_violations'", "maximum", maximum=10**9
            )
        #: False also checks the known-trivial library calls (``policy.KNOWN_TRIVIAL``)
        self.default_allow = parse_bool(default_allow, f"{source} argument 'default_allow'")
        if self.mode is Mode.OFFLOAD:
            require_offload(source)
        self._source = source
        self._max = max_violations
        self._violations: deque[Violation | Repeat] = deque(maxlen=max_violations)
        self._reported: set[tuple[str, str, str, int, str]] = set()
        #: Sites reported in warn or log mode: their repeats are counted (see core/repeats.py).
        self._seen: dict[SiteKey, SeenSite] = {}
        #: The wrapt handlers' site tables this guard put counting sites in (core/hotpath.py),
        #: by (id of the table, f_lasti): taken out again when the sites are forgotten.
        self._fast: dict[tuple[int, int], dict[int, SeenSite]] = {}
        self._stats = StatsCollector()
        self._lock = _thread.allocate_lock()  # not the catalogue's checked lock
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
            default_allow=self.default_allow,
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
            kept = list(self._violations)
        # repeats are kept compact (core/repeats.py) and built when first read
        return [v if isinstance(v, Violation) else materialize(v) for v in kept]

    def stats(self) -> list[SiteStats]:
        """Per call site (patched calls and watchdog stalls): count and total, p50, p99 and
        maximum blocked time, worst first; every violation counts, even past ``max_violations``.
        """
        for seen in self._seen_sites():  # repeats counted since the last fold (core/repeats.py)
            seen.fold()
        return self._stats.snapshot()

    def clear(self) -> None:
        with self._lock:
            self._violations.clear()
            self._reported.clear()
            self._seen.clear()
            self._drop_fast()
            self._stats.clear()

    def __repr__(self) -> str:
        state_text = "active" if self._active else "inactive"
        return f"<Guard mode={self.mode.value} {state_text} violations={len(self._violations)}>"

    # -- recording (called from the hot path) -----------------------------------------------
    def _record(self, violation: Violation) -> None:
        with self._lock:
            self._violations.append(violation)
            self._stats.add(violation)

    def _keep_repeat(self, entry: Repeat) -> None:
        """A detection at a known site (see core/repeats.py), kept compact; no lock of ours:
        deque appends are atomic, and so is ``Guard.violations``' snapshot of the deque."""
        self._violations.append(entry)

    def _forget_sites(self) -> None:
        with self._lock:
            self._seen.clear()
            self._drop_fast()

    def _count_fast(self, sites: dict[int, SeenSite], lasti: int, seen: SeenSite) -> None:
        """Let a wrapt handler count ``seen``'s repeats from this call instruction by itself."""
        seen.owner = self  # None again if this guard was stopped and is started anew
        if sites.get(lasti) is not seen:
            sites[lasti] = seen
            self._fast[(id(sites), lasti)] = sites

    def _drop_fast(self, stopping: bool = False) -> None:
        """Take this guard's counting sites out of the handlers' tables; ``stopping``: and let
        go of them (a site's ``owner`` is this guard: a cycle refcounting alone cannot free)."""
        fast, self._fast = self._fast, {}
        for (_, lasti), sites in fast.items():
            seen = sites.get(lasti)
            if seen is not None and seen.owner is self:
                sites.pop(lasti, None)
        if stopping:  # after the tables: they recognise this guard's sites by their owner
            for site in self._seen_sites():
                site.owner = None

    def _seen_sites(self) -> list[SeenSite]:
        with self._lock:
            return list(self._seen.values())

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
            self._drop_fast(stopping=True)
            patcher.release()
        flush_log_counts(self)
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
    default_allow: bool = True,
) -> Guard:
    """A guard for a block of code or a function: ``with intercept("raise") as guard: ...``.

    ``default_allow=False`` also checks the known-trivial library calls (see the README).
    """
    return Guard(mode, allow=allow, scope=scope, watchdog=watchdog, source="intercept()",
                 default_allow=default_allow)  # fmt: skip


_process_guard: Guard | None = None
_process_lock = threading.RLock()


def activate(
    mode: Mode | str = Mode.WARN,
    *,
    allow: Iterable[str] | str = (),
    scope: Iterable[str] | str | None = None,
    watchdog: float | None = None,
    source: str = "activate()",
    default_allow: bool = True,
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
        default_allow=default_allow,
    )
    with _process_lock:
        current = _process_guard
        if current is not None and current.active:
            if (current.mode, current.allow, current.scope, current.watchdog,
                    current.default_allow) != (guard.mode, guard.allow, guard.scope,
                                               guard.watchdog, guard.default_allow):  # fmt: skip
                logger.info("blockbuster_lite: reconfiguring the active process guard")
                current._forget_sites()  # counted sites were judged under the old rules
                if current.watchdog != guard.watchdog:
                    current.stop()
                    current.watchdog = guard.watchdog
                    current.mode, current.allow, current.scope = guard.mode, guard.allow, guard.scope
                    current.default_allow = guard.default_allow
                    return current.start()
                current.mode, current.allow, current.scope = guard.mode, guard.allow, guard.scope
                current.default_allow = guard.default_allow
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
