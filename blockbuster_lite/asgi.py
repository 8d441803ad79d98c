"""``BlockBusterMiddleware``, the pure ASGI middleware: the code lives in ``integrations/asgi.py``."""

from __future__ import annotations

from .integrations.asgi import BlockBusterMiddleware as BlockBusterMiddleware
from .integrations.asgi import RequestContext as RequestContext
from .integrations.asgi import route_stats as route_stats

__all__ = (
    "BlockBusterMiddleware",
    "RequestContext",
    "route_stats",
)
