"""Offload mode (not available yet: see the README's roadmap)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._policy import ConfigError

if TYPE_CHECKING:
    from ._guard import Guard
    from ._patching import Target
    from ._policy import Site


def require_offload(source: str) -> None:
    raise ConfigError(f"mode 'offload' from {source} is not available in this version")


def try_offload(
    guard: Guard,
    target: Target,
    site: Site,
    wrapped: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[bool, Any, str]:
    return False, None, "offload mode is not available"


async def ensure_portal() -> bool:
    """Give the current task a portal so its blocking calls can be offloaded (False: none)."""
    return False
