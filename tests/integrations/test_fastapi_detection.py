"""FastAPI, for real: scope by any frame, metadata scans reported, first-request introspection clean."""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from typing import Annotated, Any

import httpx
import pydantic
import pytest
from fastapi import Depends, FastAPI, Request, Response

import blockbuster_lite as bl


class Item(pydantic.BaseModel):
    name: str
    price: float = 0.0


def common(q: str | None = None) -> dict[str, Any]:
    return {"q": q}


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/items")
    async def create(item: Item, params: Annotated[dict[str, Any], Depends(common)]) -> dict[str, Any]:
        return {"item": item.model_dump(), **params}

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"wrapt": importlib.metadata.version("wrapt")}

    def sync_shutdown() -> None:
        time.sleep(0.001)

    app.router.on_shutdown.append(sync_shutdown)
    return app


async def exercise(app: FastAPI, *paths: str) -> list[int]:
    codes = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path in paths:
            if path == "/items":
                response = await client.post(path, json={"name": "a"}, params={"q": "x"})
            else:
                response = await client.get(path)
            codes.append(response.status_code)
    return codes


async def lifespan(app: FastAPI) -> list[str]:
    """Start the app up and shut it down through the ASGI lifespan protocol, as servers do."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_first_request_introspection_is_clean() -> None:
    with bl.intercept("raise") as guard:
        assert asyncio.run(exercise(make_app(), "/items", "/items")) == [200, 200]
    assert guard.violations == []


def test_a_metadata_scan_from_a_route_is_reported() -> None:
    with bl.intercept("log") as guard:
        assert asyncio.run(exercise(make_app(), "/version")) == [200]
    assert guard.violations
    assert guard.violations[0].function.endswith("version")


def test_a_sync_shutdown_handler_is_in_a_fastapi_scope() -> None:
    app = make_app()
    with bl.intercept("log", scope=["fastapi"]) as guard:
        sent = asyncio.run(lifespan(app))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert [v.call for v in guard.violations] == ["time.sleep"]
    with bl.intercept("log", scope=["django"]) as other:
        asyncio.run(lifespan(make_app()))
    assert other.violations == []


def test_testclient_reading_the_tests_upload_file_is_not_the_apps_blocking_call(
    tmp_path: Any,
) -> None:
    """Starlette's TestClient reads the body the test posts (an open file) on the app's loop:
    in a server that body comes off the socket. The app's own file read is still reported."""
    from fastapi.testclient import TestClient

    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"x" * 70_000)
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body())

    @app.get("/own")
    async def own() -> Response:
        return Response(upload.read_bytes())

    with bl.intercept("log") as guard, TestClient(app) as client:
        with upload.open("rb") as body:  # opened while active: a checked file
            echoed = client.post("/echo", content=body)
        assert echoed.status_code == 200 and len(echoed.content) == 70_000
        assert guard.violations == []
        assert client.get("/own").status_code == 200
    assert {v.function.rpartition(".")[2] for v in guard.violations} == {"own"}
