"""The ASGI middleware, behind a real uvicorn on 127.0.0.1 and a real HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.routing import Mount, Route

import blockbuster_lite as bl
from blockbuster_lite.asgi import BlockBusterMiddleware, route_stats
from blockbuster_lite.core.guard import process_guard
from blockbuster_lite.core.state import request_context, state

SERVERS = [
    pytest.param(("asyncio", "h11"), id="asyncio-h11"),
    pytest.param(("uvloop", "httptools"), id="uvloop-httptools"),
]
ORIGINAL_SLEEP = time.sleep


def _line_of(marker: str) -> int:
    with open(__file__, encoding="utf-8") as source:
        for number, line in enumerate(source, 1):
            if line.rstrip().endswith(marker) and "_line_of" not in line:
                return number
    raise AssertionError(marker)


SLEEP_LINE = _line_of("# <- the blocking call")


def make_app(**middleware: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BlockBusterMiddleware, **middleware)

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        time.sleep(0.05)  # <- the blocking call
        return {"item_id": item_id}

    @app.get("/files/{name}")
    async def read_file(name: str) -> dict[str, int]:
        with open(__file__, "rb") as source:
            return {"size": len(source.read(100))}

    @app.get("/clean/{n}")
    async def clean(n: int, q: str = "") -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"n": n, "q": q}

    @app.post("/echo")
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @app.get("/sync")
    def sync_endpoint() -> dict[str, bool]:
        time.sleep(0.001)  # a worker thread: never flagged
        return {"ok": True}

    return app


@contextlib.contextmanager
def serve(app: Any, server: tuple[str, str], **config: Any) -> Iterator[httpx.Client]:
    """Run uvicorn in a thread on a free 127.0.0.1 port; yield a client bound to it."""
    loop, http = server
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = uvicorn.Config(app, loop=loop, http=http, log_level="warning", **config)
    uv = uvicorn.Server(settings)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, name="uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not uv.started:
            assert thread.is_alive(), "uvicorn exited during start-up"
            assert time.monotonic() < deadline, "uvicorn did not start"
            ORIGINAL_SLEEP(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()


@pytest.fixture(autouse=True)
def _clean_process_state() -> Iterator[None]:
    route_stats(reset=True)
    before = (state.guards, state.observers)
    yield
    assert (state.guards, state.observers) == before
    assert time.sleep is ORIGINAL_SLEEP


@pytest.mark.parametrize("server", SERVERS)
def test_raise_mode_answers_500_naming_call_site_and_route(
    server: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with bl.intercept("raise") as guard, serve(make_app(), server) as client:
        response = client.get("/items/7")
        ok = client.get("/clean/1")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "blocking call"
    assert body["call"] == "time.sleep"
    assert body["site"] == f"tests/integrations/test_asgi.py:{SLEEP_LINE}"
    assert body["function"].endswith("read_item")
    assert body["route"] == "/items/{item_id}"
    assert (body["method"], body["path"]) == ("GET", "/items/7")
    assert "time.sleep()" in body["message"] and "asyncio.sleep" in body["message"]
    assert ok.status_code == 200
    [violation] = guard.violations
    assert violation.action is bl.Mode.RAISE and violation.duration_s is None
    assert violation.context == {"method": "GET", "path": "/items/7", "route": "/items/{item_id}"}
    errors = [r for r in caplog.records if r.name == "blockbuster_lite.asgi"]
    assert [r.levelno for r in errors] == [logging.ERROR]
    assert f"tests/integrations/test_asgi.py:{SLEEP_LINE}" in errors[0].getMessage()
    assert "GET /items/{item_id}" in errors[0].getMessage()
    assert route_stats() == {"/items/{item_id}": {"time.sleep": 1}}


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.filterwarnings("ignore::blockbuster_lite.BlockingCallWarning")
def test_warn_mode_serves_the_request_and_records_its_route(server: tuple[str, str]) -> None:
    with bl.intercept("warn") as guard, serve(make_app(), server) as client:
        responses = [client.get("/items/3"), client.get("/items/4"), client.get("/files/x.txt")]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[0].json() == {"item_id": 3}
    sleeps = [v for v in guard.violations if v.call == "time.sleep"]
    assert [v.context["path"] for v in sleeps] == ["/items/3", "/items/4"]
    assert {v.context["route"] for v in sleeps} == {"/items/{item_id}"}
    assert all(v.action is bl.Mode.WARN and v.duration_s is not None for v in sleeps)
    assert [v.context["route"] for v in guard.violations if v.call == "open"] == ["/files/{name}"]
    assert route_stats() == {"/items/{item_id}": {"time.sleep": 2}, "/files/{name}": {"open": 1, "file.read": 1}}


@pytest.mark.parametrize("server", SERVERS)
def test_a_hundred_clean_requests_report_nothing(server: tuple[str, str]) -> None:
    with bl.intercept("raise") as guard, serve(make_app(), server) as client:
        statuses = []
        for n in range(100):
            if n % 4 == 0:
                response = client.post("/echo", json={"n": n, "text": "x" * n})
            elif n % 4 == 1:
                response = client.get("/sync")
            elif n % 4 == 2:
                response = client.get("/missing/route")
            else:
                response = client.get(f"/clean/{n}", params={"q": "search"})
            statuses.append(response.status_code)
    assert statuses.count(200) == 75 and statuses.count(404) == 25
    assert guard.violations == []
    assert route_stats() == {}


def test_middleware_instance_keeps_its_own_route_counts() -> None:
    async def blocking_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan support: uvicorn carries on without it
        time.sleep(0.001)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    first, second = BlockBusterMiddleware(blocking_app), BlockBusterMiddleware(blocking_app)
    with bl.intercept("log") as guard, serve(first, ("asyncio", "h11")) as client:
        assert client.get("/a").status_code == 204
        assert client.get("/b").status_code == 204
    assert len(guard.violations) == 2
    # a raw ASGI app has no router: its requests count as unrouted (never one key per path)
    assert first.route_counts == {"<unrouted>": {"time.sleep": 2}}
    assert second.route_counts == {}
    assert route_stats() == first.route_counts


def test_an_error_the_app_handles_itself_is_still_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    @app.exception_handler(bl.BlockingCallError)
    async def handle(request: Request, exc: bl.BlockingCallError) -> JSONResponse:
        return JSONResponse({"detail": "custom"}, status_code=503)

    with bl.intercept("raise") as guard, serve(app, ("asyncio", "h11")) as client:
        response = client.get("/items/9")
    assert (response.status_code, response.json()) == (503, {"detail": "custom"})
    assert len(guard.violations) == 1
    [record] = [r for r in caplog.records if r.name == "blockbuster_lite.asgi"]
    assert record.levelno == logging.ERROR
    assert f"test_asgi.py:{SLEEP_LINE}" in record.getMessage()
    assert "[response 503]" in record.getMessage()


def test_routes_inside_a_mount_carry_the_mount_prefix() -> None:
    async def thing(request: Request) -> JSONResponse:
        time.sleep(0.001)
        return JSONResponse({})

    app = make_app()
    app.router.routes.append(Mount("/api/{version}", routes=[Route("/things/{thing_id}", thing)]))
    with bl.intercept("raise") as guard, serve(app, ("asyncio", "h11")) as client:
        response = client.get("/api/v2/things/5")
    assert response.status_code == 500
    assert response.json()["route"] == "/api/v2/things/{thing_id}"
    assert guard.violations[0].context["path"] == "/api/v2/things/5"


@pytest.mark.filterwarnings("ignore::blockbuster_lite.BlockingCallWarning")
def test_lifespan_start_up_ends_start_up_grace() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        time.sleep(0.001)  # start-up work: reported, not fatal
        yield

    app = make_app()
    app.router.lifespan_context = lifespan
    guard = bl.activate("raise")
    try:
        guard.in_startup = True
        with serve(app, ("asyncio", "h11"), lifespan="on") as client:
            assert guard.in_startup is False
            response = client.get("/items/1")
        [startup, request] = guard.violations
    finally:
        bl.deactivate()
    assert startup.action is bl.Mode.WARN and startup.context == {}
    assert request.action is bl.Mode.RAISE
    assert response.status_code == 500


def test_first_request_ends_start_up_grace_without_lifespan() -> None:
    guard = bl.activate("raise")
    try:
        guard.in_startup = True
        with serve(make_app(), ("asyncio", "h11"), lifespan="off") as client:
            response = client.get("/items/1")
        assert guard.in_startup is False
    finally:
        bl.deactivate()
    assert response.status_code == 500


def test_mode_argument_activates_for_the_app_lifetime() -> None:
    assert process_guard() is None
    with serve(make_app(mode="raise"), ("asyncio", "h11")) as client:
        guard = process_guard()
        assert guard is not None and guard.mode is bl.Mode.RAISE and guard.active
        assert guard.in_startup is False
        assert client.get("/items/2").status_code == 500
        assert client.get("/clean/2").status_code == 200
    assert process_guard() is None
    assert [v.call for v in guard.violations] == ["time.sleep"]


def test_mode_argument_is_validated_at_construction() -> None:
    with pytest.raises(bl.ConfigError, match="invalid mode 'strict'"):
        BlockBusterMiddleware(make_app(), mode="strict")
    with pytest.raises(bl.ConfigError, match="allow and scope need a mode"):
        BlockBusterMiddleware(make_app(), allow=["app.routes"])
    with pytest.raises(bl.ConfigError, match="invalid allow rule"):
        BlockBusterMiddleware(make_app(), mode="warn", allow=["a:b:c"])


def test_websocket_scope_passes_through_untouched() -> None:
    seen: dict[str, Any] = {}

    async def ws_app(scope: Any, receive: Any, send: Any) -> None:
        seen["scope"] = scope
        seen["context"] = request_context.get()
        message = await receive()
        await send({"type": "websocket.accept"})
        seen["message"] = message

    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": []}
    with bl.intercept("raise"):
        asyncio.run(BlockBusterMiddleware(ws_app)(scope, receive, send))
    assert seen == {"scope": scope, "context": None, "message": {"type": "websocket.connect"}}
    assert sent == [{"type": "websocket.accept"}]


def test_error_after_the_response_started_propagates() -> None:
    async def streaming_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        time.sleep(0.001)

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/stream", "headers": []}
    with bl.intercept("raise") as guard, pytest.raises(bl.BlockingCallError):
        asyncio.run(BlockBusterMiddleware(streaming_app)(scope, receive, send))
    assert [m["status"] for m in sent] == [200]
    assert guard.violations[0].context == {"method": "GET", "path": "/stream", "route": None}


def test_blocking_error_inside_an_exception_group_becomes_a_500() -> None:
    async def child() -> None:
        time.sleep(0.001)

    async def grouped_app(scope: Any, receive: Any, send: Any) -> None:
        async with anyio.create_task_group() as group:  # raises an ExceptionGroup
            group.start_soon(child)

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/g", "headers": []}
    with bl.intercept("raise"):
        asyncio.run(BlockBusterMiddleware(grouped_app)(scope, receive, send))
    assert sent[0]["status"] == 500
