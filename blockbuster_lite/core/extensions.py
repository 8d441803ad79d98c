"""Where the layers above core plug in: offload, the watchdog, and what env activation turns on.

Core never imports ``offload/``, ``watchdog/`` or ``integrations/``. Each of them fills its slot
here when it is imported (the package's ``__init__`` imports them all), and core calls through
the slot. An empty slot means the part is not loaded; core then says so instead of failing.
Observers of violations (statistics, OpenTelemetry, the exit summary) subscribe through
``state.observers``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .policy import Site
    from .state import ActiveGuard
    from .targets import Target

__all__ = ["EnvHook", "OffloadSupport", "WatchdogHandle", "extensions"]


class OffloadSupport(Protocol):
    """The offload action (``offload/``): moves a checked call to a worker thread."""

    def require(self, source: str) -> None:
        """Raise ``ConfigError`` naming ``source`` when offload mode cannot run here."""

    def try_offload(
        self,
        guard: ActiveGuard,
        target: Target,
        site: Site,
        wrapped: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        call: str | None = None,
    ) -> tuple[bool, Any, str]:
        """``(True, result, "")`` when the call ran in a worker, else ``(False, None, why)``."""

    async def ensure_portal(self) -> bool:
        """Give the current task a portal (its blocking calls can then be offloaded)."""


class WatchdogHandle(Protocol):
    def stop(self) -> None: ...


#: ``(environ) -> enable``: validates its own variables (raising ``ConfigError``) before the
#: guard activates, and returns what to run once it is active.
EnvHook = Callable[[Mapping[str, str] | None], Callable[[], None]]


class _Extensions:
    offload: OffloadSupport | None = None
    start_watchdog: Callable[[ActiveGuard, float], WatchdogHandle] | None = None
    env_hooks: tuple[EnvHook, ...] = ()

    def add_env_hook(self, hook: EnvHook) -> None:
        if hook not in self.env_hooks:
            self.env_hooks = (*self.env_hooks, hook)


extensions = _Extensions()
