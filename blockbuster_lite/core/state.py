"""Process-wide and context-local state shared by the hot path and the guards."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import AllowRule, Mode
    from .report import Violation

__all__ = ["ActiveGuard", "exempt", "reentrant", "request_context", "state"]


class ActiveGuard(Protocol):
    """What the hot path, the actions and the watchdog need of a guard (``guard.Guard``)."""

    mode: Mode
    allow: tuple[AllowRule, ...]
    scope: tuple[str, ...] | None
    in_startup: bool
    default_allow: bool
    #: Sites reported in warn or log mode (core/repeats.py: SiteKey -> SeenSite).
    _seen: dict[tuple[str, int, int], Any]
    _stats: Any  # the guard's stats.StatsCollector

    def effective_mode(self) -> Mode: ...

    def _keep_repeat(self, entry: list[Any]) -> None: ...

    def _seen_sites(self) -> list[Any]: ...

    def first_report(self, violation: Violation) -> bool: ...

    def _record(self, violation: Violation) -> None: ...

    def _count_fast(self, sites: dict[int, Any], lasti: int, seen: Any) -> None: ...


class _State:
    # Slots: the hot path reads guards and observers on every checked call, and CPython 3.11
    # specialises slot reads but not class attributes read through an instance.
    __slots__ = ("checked_calls", "guards", "observers", "requests_served")

    def __init__(self) -> None:
        #: Active guards, outermost first; replaced (never mutated): the hot path reads it
        #: lock-free.
        self.guards: tuple[ActiveGuard, ...] = ()
        #: Called with every recorded violation (statistics, OpenTelemetry); errors are contained.
        self.observers: tuple[Callable[[Violation], None], ...] = ()
        #: Calls checked on a loop thread under an active guard (the exit summary's "checked
        #: calls"); not atomic across threads: a count for the summary, not a ledger.
        self.checked_calls = 0
        #: HTTP requests seen by the ASGI middleware (the exit summary's "requests").
        self.requests_served = 0


state = _State()

#: Set while a checked call runs, so the calls it makes internally are not checked again.
reentrant: ContextVar[bool] = ContextVar("blockbuster_lite.reentrant", default=False)
#: Set by allow_blocking(): the current task or thread is exempt.
exempt: ContextVar[bool] = ContextVar("blockbuster_lite.exempt", default=False)
#: Set by the ASGI middleware for each request: method, path, route.
request_context: ContextVar[Mapping[str, Any] | None] = ContextVar(
    "blockbuster_lite.request_context", default=None
)
