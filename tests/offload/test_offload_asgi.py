"""Offload mode under a real uvicorn on 127.0.0.1: a frozen endpoint is rescued.

Twenty concurrent requests to an ``async def`` endpoint that blocks for 0.5 s (``time.sleep``, an
HTTP call to a slow local server) take about 10 s without the sanitizer; in offload mode they take
about 0.5 s, and a probe task on the server's loop sees no stall. The same for a whole-file read.
The wall-clock bounds here are generous (CI machines are shared); benchmarks/bench_offload.py
records the real figures.
"""

from __future__ import annotations

import asyncio
import http.server
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
import requests
import uvicorn
from fastapi import FastAPI

import blockbuster_lite as bl
from blockbuster_lite.asgi import BlockBusterMiddleware
from blockbuster_lite.core.guard import process_guard

ORIGINAL_SLEEP = time.sleep
REQUESTS = 20
SERVERS = [
    pytest.param("asyncio", "h11", id="asyncio-h11"),
    pytest.param("uvloop", "httptools", id="uvloop-httptools"),
]


class LagProbe:
    """Measures how late the loop wakes a task that sleeps 5 ms at a time."""

    def __init__(self) -> None:
        self.max_lag = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.005)
            self.max_lag = max(self.max_lag, loop.time() - start - 0.005)


class SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(0.5)
        body = b"slow"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class SlowServer(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # a burst of connections must not overflow the listen backlog
    daemon_threads = True


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    server = SlowServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("offload") / "big.bin"
    path.write_bytes(b"x" * (64 * 1024 * 1024))
    return path


def make_app(*, slow_url: str = "", big_file: Path | None = None, threads: int = 0) -> FastAPI:
    probe = LagProbe()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if threads:
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        task = asyncio.get_running_loop().create_task(probe.run())
        yield
        task.cancel()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(BlockBusterMiddleware, mode="offload")

    @app.get("/sleep")
    async def sleep() -> dict[str, str]:
        time.sleep(0.5)
        return {"slept": "0.5"}

    @app.get("/file")
    async def read_file() -> dict[str, int]:
        assert big_file is not None
        with open(big_file, "rb") as f:
            data = f.read()
        return {"size": len(data)}

    @app.get("/http")
    async def call_slow_server() -> dict[str, str]:
        return {"body": requests.get(slow_url, timeout=10).text}

    @app.get("/sync")
    def sync_endpoint() -> dict[str, str]:  # FastAPI runs it in anyio's default thread pool
        time.sleep(0.4)
        return {"slept": "0.4"}

    @app.get("/lag")
    async def lag() -> dict[str, float]:
        value, probe.max_lag = probe.max_lag, 0.0
        return {"max_lag": value}

    @app.get("/violations")
    async def violations() -> list[dict[str, Any]]:
        guard = process_guard()
        if guard is None:
            return []
        return [
            {"call": v.call, "action": v.action.value, "route": v.context.get("route")}
            for v in guard.violations
        ]

    return app


@contextmanager
def serve(app: FastAPI, loop: str, http_impl: str) -> Iterator[str]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, loop=loop, http=http_impl, lifespan="on",
        log_level="warning", access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in 20 s"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive()


async def burst(base: str, path: str, count: int = REQUESTS) -> tuple[float, list[Any], float]:
    """``count`` concurrent GETs: (wall seconds, JSON bodies, the server loop's worst lag)."""
    async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as client:
        await client.get("/lag")  # warm up; resets the probe
        start = time.perf_counter()
        responses = await asyncio.gather(*(client.get(path) for _ in range(count)))
        wall = time.perf_counter() - start
        lag = (await client.get("/lag")).json()["max_lag"]
    assert [r.status_code for r in responses] == [200] * count
    return wall, [r.json() for r in responses], lag


def run_burst(base: str, path: str) -> tuple[float, list[Any], float, list[dict[str, Any]]]:
    async def main() -> tuple[float, list[Any], float, list[dict[str, Any]]]:
        wall, bodies, lag = await burst(base, path)
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            violations = (await client.get("/violations")).json()
        return wall, bodies, lag, violations

    return asyncio.run(main())


@pytest.mark.parametrize(("loop", "http_impl"), SERVERS)
def test_sleeping_endpoint_is_rescued(loop: str, http_impl: str) -> None:
    with serve(make_app(), loop, http_impl) as base:
        wall, bodies, lag, violations = run_burst(base, "/sleep")
    assert bodies == [{"slept": "0.5"}] * REQUESTS
    assert wall < 1.5, f"{REQUESTS} requests of 0.5 s took {wall:.2f} s (blocking: ~10 s)"
    assert lag < 0.2, f"the server's loop stalled for {lag * 1000:.0f} ms"
    sleeps = [v for v in violations if v["call"] == "time.sleep"]
    assert len(sleeps) == REQUESTS
    assert {(v["action"], v["route"]) for v in sleeps} == {("offload", "/sleep")}
    assert time.sleep is ORIGINAL_SLEEP  # the middleware's guard ended with the server


@pytest.mark.parametrize(("loop", "http_impl"), SERVERS)
def test_large_file_read_is_rescued(loop: str, http_impl: str, big_file: Path) -> None:
    # Made on the loop, twenty 64 MiB reads stall it for up to their sum (~0.6-0.9 s here with
    # asyncio+h11); offloaded, in the narrower file lane of the pool, the probe keeps ticking.
    with serve(make_app(big_file=big_file), loop, http_impl) as base:
        _, bodies, lag, violations = run_burst(base, "/file")
    assert bodies == [{"size": big_file.stat().st_size}] * REQUESTS
    assert lag < 0.2, f"the server's loop stalled for {lag * 1000:.0f} ms"
    assert {v["action"] for v in violations if v["call"] == "open"} == {"offload"}


@pytest.mark.parametrize(("loop", "http_impl"), SERVERS)
def test_http_call_to_a_slow_server_is_rescued(loop: str, http_impl: str, slow_url: str) -> None:
    with serve(make_app(slow_url=slow_url), loop, http_impl) as base:
        wall, bodies, lag, violations = run_burst(base, "/http")
    assert bodies == [{"body": "slow"}] * REQUESTS
    assert wall < 1.5, f"{REQUESTS} calls to a 0.5 s server took {wall:.2f} s (blocking: ~10 s)"
    assert lag < 0.2, f"the server's loop stalled for {lag * 1000:.0f} ms"
    assert violations and {v["action"] for v in violations} == {"offload"}


def test_fastapi_thread_pool_saturation_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    # FastAPI runs sync endpoints in anyio's default pool; with 2 workers and 6 requests of
    # 0.4 s, requests queue for ~0.8 s and the pool monitor says so.
    caplog.set_level(logging.WARNING, logger="blockbuster_lite")
    with serve(make_app(threads=2), "asyncio", "h11") as base:

        async def main() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as client:
                await client.get("/lag")
                responses = await asyncio.gather(*(client.get("/sync") for _ in range(6)))
            assert [r.status_code for r in responses] == [200] * 6

        asyncio.run(main())
    saturated = [r.getMessage() for r in caplog.records if "pool saturated" in r.getMessage()]
    assert saturated, "no saturation warning"
    assert "anyio default pool 2/2 busy" in saturated[0]
    assert "waiting" in saturated[0] and "FastAPI" in saturated[0]


def test_guard_mode_offload_without_the_middleware_mode(slow_url: str) -> None:
    # A process guard in offload mode (as BLOCKBUSTER_LITE_MODE=offload makes) plus the
    # middleware without a mode: the middleware still gives each request a portal.
    app = FastAPI()
    app.add_middleware(BlockBusterMiddleware)

    @app.get("/sleep")
    async def sleep() -> dict[str, bool]:
        time.sleep(0.5)
        return {"ok": True}

    guard = bl.activate("offload")
    try:
        with serve(app, "asyncio", "h11") as base:

            async def main() -> float:
                async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as c:
                    start = time.perf_counter()
                    responses = await asyncio.gather(*(c.get("/sleep") for _ in range(10)))
                    assert [r.status_code for r in responses] == [200] * 10
                    return time.perf_counter() - start

            wall = asyncio.run(main())
    finally:
        bl.deactivate()
    assert wall < 1.5
    assert [v.action for v in guard.violations if v.call == "time.sleep"] == [bl.Mode.OFFLOAD] * 10
    assert time.sleep is ORIGINAL_SLEEP
