"""Sync HTTP clients: requests, urllib3, httpx's ``Client``.

Each request is reported once, at the outermost client call, with its method and origin and
nothing else (no path, query string or credentials): ``requests.Session.request(GET
http://127.0.0.1:8000)``, ``urllib3.PoolManager.urlopen(POST https://api.example.com)``,
``httpx.Client.send(GET http://127.0.0.1:8000)``. ``requests.get(...)``, ``urllib3.request(...)``
and ``httpx.get(...)`` go through these. The layers underneath (urllib3 under requests,
``http.client``, sockets) are not reported again.

Reading a streamed body later (``requests`` with ``stream=True``, urllib3 with
``preload_content=False``, ``httpx.Client.stream``) is reported as the socket read it makes.
``httpx.AsyncClient`` is a separate class and is never touched.
"""

from __future__ import annotations

from typing import Any

from ..core.targets import Target
from ._describe import http_origin, with_detail
from ._predicates import argument

ADVICE = "use httpx.AsyncClient, or offload with await anyio.to_thread.run_sync(...)"


def _method_and_url(call: str) -> Any:
    def describe(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        method = argument(args, kwargs, 0, "method")
        url = argument(args, kwargs, 1, "url")
        return with_detail(call, http_origin(method, url))

    return describe


def _prepared_request(call: str) -> Any:
    def describe(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        request = argument(args, kwargs, 0, "request")
        return with_detail(call, http_origin(request.method, request.url))

    return describe


def _pool_request(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    method = argument(args, kwargs, 0, "method")
    origin = f"{instance.scheme}://{instance.host}"
    if instance.port is not None:
        origin += f":{instance.port}"
    return with_detail("urllib3.HTTPConnectionPool.urlopen", http_origin(method, origin))


TARGETS = (
    Target(
        "requests.sessions", "Session.request", "requests.Session.request", None, ADVICE,
        describe=_method_and_url("requests.Session.request"),
    ),
    Target(
        "requests.sessions", "Session.send", "requests.Session.send", None, ADVICE,
        describe=_prepared_request("requests.Session.send"),
    ),
    Target(
        "urllib3.poolmanager", "PoolManager.urlopen", "urllib3.PoolManager.urlopen", None, ADVICE,
        describe=_method_and_url("urllib3.PoolManager.urlopen"),
    ),
    Target(
        "urllib3.connectionpool", "HTTPConnectionPool.urlopen",
        "urllib3.HTTPConnectionPool.urlopen", None, ADVICE, describe=_pool_request,
    ),
    Target(
        "httpx", "Client.send", "httpx.Client.send", None, ADVICE,
        describe=_prepared_request("httpx.Client.send"),
    ),
)  # fmt: skip
