"""``BlockBusterMiddleware``, the pure ASGI middleware: the code lives in ``integrations/asgi.py``."""

from __future__ import annotations

from .integrations.asgi import MAX_REQUEST_VIOLATIONS as MAX_REQUEST_VIOLATIONS
from .integrations.asgi import MAX_ROUTES as MAX_ROUTES
from .integrations.asgi import UNROUTED as UNROUTED
from .integrations.asgi import BlockBusterMiddleware as BlockBusterMiddleware
from .integrations.asgi import RequestContext as RequestContext
from .integrations.asgi import route_stats as route_stats

__all__ = (
    "MAX_REQUEST_VIOLATIONS",
    "MAX_ROUTES",
    "UNROUTED",
    "BlockBusterMiddleware",
    "RequestContext",
    "route_stats",
)
