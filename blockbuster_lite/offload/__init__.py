"""Offload mode's public helpers: portals, the offload pool's capacity, thread-pool occupancy.

``mode="offload"`` (``BLOCKBUSTER_LITE_MODE=offload``, ``intercept("offload")``, ``activate("offload")``,
``BlockBusterMiddleware(mode="offload")``) runs blocking calls made in async code in a worker thread
while their task waits without blocking the loop. A task can do that only if it has a *portal*
(greenback, the ``offload`` extra):

- ASGI apps: ``BlockBusterMiddleware`` gives each request's task one;
- ``async with intercept("offload"):`` and ``@intercept("offload")`` on a coroutine function give
  the current task one;
- anything else: ``await ensure_portal()`` at the start of the task, ``@with_portal`` on its
  coroutine function, or ``install_task_factory(loop)`` before the tasks are created.

``ensure_portal()`` also gives every task the loop starts afterwards a portal (asyncio, uvloop and
trio), so task groups and ``asyncio.gather`` inside a request are covered.

Calls that cannot be offloaded are warned about instead, with the reason: see ``engine``.

Importing this package is cheap and needs neither anyio nor greenback: it registers the offload
action with core (``core.extensions``), and the names below load their modules on first use.
The modules: ``engine`` (the action: try_offload), ``portal`` (greenback portals, task factory),
``worker`` (one call in the pool), ``files`` (files opened by an offloaded open()), ``pools``
(occupancy and saturation of the offload pool and anyio's default pool), ``settings``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..core.config import ConfigError
from ..core.extensions import extensions

if TYPE_CHECKING:
    from ..core.policy import Site
    from ..core.state import ActiveGuard
    from ..core.targets import Target
    from .files import LARGE_IO as LARGE_IO
    from .files import OffloadingFile as OffloadingFile
    from .pools import PoolStatistics as PoolStatistics
    from .pools import pool_statistics as pool_statistics
    from .pools import saturation_counts as saturation_counts
    from .portal import ensure_portal as ensure_portal
    from .portal import install_task_factory as install_task_factory
    from .portal import uninstall_task_factory as uninstall_task_factory
    from .portal import with_portal as with_portal
    from .settings import DEFAULT_OFFLOAD_THREADS as DEFAULT_OFFLOAD_THREADS
    from .settings import DEFAULT_SATURATION_S as DEFAULT_SATURATION_S
    from .settings import ENV_OFFLOAD_FILE_THREADS as ENV_OFFLOAD_FILE_THREADS
    from .settings import ENV_OFFLOAD_THREADS as ENV_OFFLOAD_THREADS
    from .settings import ENV_SATURATION_MS as ENV_SATURATION_MS
    from .settings import file_capacity as file_capacity
    from .settings import offload_capacity as capacity
    from .settings import saturation_threshold as saturation_threshold
    from .settings import set_file_capacity as set_file_capacity
    from .settings import set_offload_capacity as set_capacity
    from .settings import set_saturation_threshold as set_saturation_threshold

__all__ = (
    "DEFAULT_OFFLOAD_THREADS",
    "DEFAULT_SATURATION_S",
    "ENV_OFFLOAD_FILE_THREADS",
    "ENV_OFFLOAD_THREADS",
    "ENV_SATURATION_MS",
    "LARGE_IO",
    "OffloadingFile",
    "PoolStatistics",
    "capacity",
    "ensure_portal",
    "file_capacity",
    "install_task_factory",
    "pool_statistics",
    "saturation_counts",
    "saturation_threshold",
    "set_capacity",
    "set_file_capacity",
    "set_saturation_threshold",
    "uninstall_task_factory",
    "with_portal",
)

#: Public name -> (module of this package, attribute): loaded on first access (PEP 562).
_LAZY: dict[str, tuple[str, str]] = {
    "DEFAULT_OFFLOAD_THREADS": ("settings", "DEFAULT_OFFLOAD_THREADS"),
    "DEFAULT_SATURATION_S": ("settings", "DEFAULT_SATURATION_S"),
    "ENV_OFFLOAD_FILE_THREADS": ("settings", "ENV_OFFLOAD_FILE_THREADS"),
    "ENV_OFFLOAD_THREADS": ("settings", "ENV_OFFLOAD_THREADS"),
    "ENV_SATURATION_MS": ("settings", "ENV_SATURATION_MS"),
    "LARGE_IO": ("files", "LARGE_IO"),
    "OffloadingFile": ("files", "OffloadingFile"),
    "PoolStatistics": ("pools", "PoolStatistics"),
    "capacity": ("settings", "offload_capacity"),
    "ensure_portal": ("portal", "ensure_portal"),
    "file_capacity": ("settings", "file_capacity"),
    "install_task_factory": ("portal", "install_task_factory"),
    "pool_statistics": ("pools", "pool_statistics"),
    "saturation_counts": ("pools", "saturation_counts"),
    "saturation_threshold": ("settings", "saturation_threshold"),
    "set_capacity": ("settings", "set_offload_capacity"),
    "set_file_capacity": ("settings", "set_file_capacity"),
    "set_saturation_threshold": ("settings", "set_saturation_threshold"),
    "uninstall_task_factory": ("portal", "uninstall_task_factory"),
    "with_portal": ("portal", "with_portal"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _OffloadSupport:
    """The offload action as core sees it; the engine (anyio, greenback) loads on first use."""

    def require(self, source: str) -> None:
        try:
            from .engine import require_offload
        except ImportError as exc:  # anyio (or what it needs) is not installed
            raise ConfigError(
                f"mode 'offload' from {source} needs the {exc.name or 'anyio'!r} package: "
                "pip install 'blockbuster_lite[offload]'"
            ) from exc
        require_offload(source)

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
        try:
            from .engine import try_offload
        except ImportError as exc:
            return False, None, f"the {exc.name or 'anyio'!r} package is missing (offload extra)"
        return try_offload(guard, target, site, wrapped, args, kwargs, call=call)

    async def ensure_portal(self) -> bool:
        from .portal import ensure_portal

        return await ensure_portal()


def _env_hook(environ: Mapping[str, str] | None = None) -> Callable[[], None]:
    """For ``activate_from_env``: refuse bad ``BLOCKBUSTER_LITE_OFFLOAD_*`` / ``_SATURATION_MS``
    values at activation, in every mode (the watchdog's pool sampling reads the threshold)."""
    from .settings import validate_env

    validate_env(environ)
    return _nothing


def _nothing() -> None:
    return None


extensions.offload = _OffloadSupport()
extensions.add_env_hook(_env_hook)
