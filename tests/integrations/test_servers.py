"""Zero-code instrumentation of the ASGI app a real server serves: uvicorn, hypercorn, gunicorn.

Each test starts a real server on 127.0.0.1 with an *unmodified* app and only the
BLOCKBUSTER_LITE_* variables, and talks to it over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from _services import PostgresInfo

ENV_PREFIX = "BLOCKBUSTER_LITE_"

FASTAPI_APP = """
import os
import time

from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def sleepy(item_id: int):
    time.sleep(0.5)  # SLEEP
    return {"item": item_id, "pid": os.getpid()}


@app.get("/ping")
async def ping():
    return {"pid": os.getpid()}
"""

STARLETTE_APP = """
import time

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def sleepy(request):
    time.sleep(0.5)  # SLEEP
    return JSONResponse({"ok": True})


async def ping(request):
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/items/{item_id}", sleepy), Route("/ping", ping)])
"""

RAW_ASGI_APP = """
import json
import time


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"].startswith("/items"):
        time.sleep(0.5)  # SLEEP
    body = json.dumps({"ok": True}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"""

ASGI2_APP = """
import json
import time


class app:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] != "http":
            return
        if self.scope["path"].startswith("/items"):
            time.sleep(0.5)  # SLEEP
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
"""

ALSO_BY_HAND = FASTAPI_APP + """
from blockbuster_lite.asgi import BlockBusterMiddleware

app.add_middleware(BlockBusterMiddleware)
"""

ASYNCPG_APP = """
import os

import asyncpg
from fastapi import FastAPI

app = FastAPI()


@app.get("/query")
async def query():
    connection = await asyncpg.connect(os.environ["PG_URL"])
    try:
        return {"value": await connection.fetchval("SELECT 41 + 1")}
    finally:
        await connection.close()


@app.get("/stat")
async def stat():
    os.stat(".")  # STAT
    return {"ok": True}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def line_of(source: str, marker: str) -> int:
    return next(n for n, line in enumerate(source.splitlines(), 1) if f"# {marker}" in line)


class Server:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, port: int) -> None:
        self.process, self.log, self.port = process, log, port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.output}")
            try:
                httpx.get(f"{self.url}/ping", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"server did not answer in {timeout}s:\n{self.output}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
                "--port", str(port)]  # fmt: skip
    if server == "hypercorn":
        return [sys.executable, "-m", "hypercorn", "app:app", "--bind", f"127.0.0.1:{port}"]
    assert server == "gunicorn"
    return [sys.executable, "-m", "gunicorn", "app:app", "-k", "uvicorn.workers.UvicornWorker",
            "-w", "2", "-b", f"127.0.0.1:{port}"]  # fmt: skip


@contextmanager
def serve(
    tmp_path: Path, source: str, server: str = "uvicorn", extra_env: dict[str, str] | None = None,
    **settings: str,
) -> Iterator[Server]:
    (tmp_path / "app.py").write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({ENV_PREFIX + name: value for name, value in settings.items()})
    env.update(extra_env or {})
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command(server, port), cwd=tmp_path, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    running = Server(process, log, port)
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.stop()


async def concurrently(url: str, count: int) -> tuple[float, list[httpx.Response]]:
    async with httpx.AsyncClient(timeout=30) as client:
        start = time.perf_counter()
        responses = await asyncio.gather(*(client.get(f"{url}/items/{i}") for i in range(count)))
        return time.perf_counter() - start, list(responses)


SERVERS = ["uvicorn", "hypercorn", "gunicorn"]


@pytest.mark.parametrize("server", SERVERS)
def test_offload_serves_ten_sleeping_requests_concurrently(tmp_path: Path, server: str) -> None:
    with serve(tmp_path, FASTAPI_APP, server, MODE="offload") as running:
        elapsed, responses = asyncio.run(concurrently(running.url, 10))
    assert [r.status_code for r in responses] == [200] * 10, running.output
    # In place they take 5 s (2.5 s over gunicorn's two workers); offloaded, 0.5 s plus the
    # hops: 1.06 s was seen once on a 2-core machine running another test suite beside it.
    assert elapsed < 2.0, f"10 requests sleeping 0.5 s took {elapsed:.2f} s\n{running.output}"
    out = running.output
    assert re.search(rf"blockbuster_lite \[pid \d+\]: {'uvicorn' if server == 'gunicorn' else server}"
                     r": FastAPI app instrumented", out), out  # fmt: skip
    assert "offloaded to a worker thread" in out
    assert "(request GET /items/{item_id})" in out


@pytest.mark.parametrize("server", SERVERS)
def test_raise_answers_a_json_500_naming_the_route(tmp_path: Path, server: str) -> None:
    with serve(tmp_path, FASTAPI_APP, server, MODE="raise") as running:
        response = httpx.get(f"{running.url}/items/7", timeout=10)
    assert response.status_code == 500, running.output
    body = response.json()
    assert body["route"] == "/items/{item_id}" and body["path"] == "/items/7"
    assert body["call"] == "time.sleep"
    assert body["site"] == f"app.py:{line_of(FASTAPI_APP, 'SLEEP')}"
    assert body["function"] == "sleepy"


@pytest.mark.parametrize(
    ("source", "kind"),
    [(STARLETTE_APP, "Starlette app"), (RAW_ASGI_APP, "ASGI app"), (ASGI2_APP, "ASGI app")],
    ids=["starlette", "raw-asgi", "asgi2"],
)
def test_any_asgi_app_is_instrumented(tmp_path: Path, source: str, kind: str) -> None:
    with serve(tmp_path, source, "uvicorn", MODE="offload") as running:
        elapsed, responses = asyncio.run(concurrently(running.url, 10))
    assert [r.status_code for r in responses] == [200] * 10, running.output
    assert elapsed < 1.0, running.output
    assert f"uvicorn: {kind}" in running.output


def test_raw_asgi_app_gets_the_json_500_under_hypercorn(tmp_path: Path) -> None:
    with serve(tmp_path, RAW_ASGI_APP, "hypercorn", MODE="raise") as running:
        response = httpx.get(f"{running.url}/items/1", timeout=10)
    assert response.status_code == 500, running.output
    assert response.json()["path"] == "/items/1"


def test_a_middleware_added_by_hand_is_not_doubled(tmp_path: Path) -> None:
    with serve(tmp_path, ALSO_BY_HAND, "uvicorn", MODE="raise") as running:
        response = httpx.get(f"{running.url}/items/3", timeout=10)
    out = running.output
    assert response.status_code == 500 and response.json()["route"] == "/items/{item_id}"
    assert "app instrumented" not in out  # the app already has it
    assert out.count("[response 500]") == 1, out  # one middleware logged the request


def test_instrumentation_can_be_turned_off(tmp_path: Path) -> None:
    with serve(tmp_path, FASTAPI_APP, "uvicorn", MODE="warn", ASGI="0") as running:
        httpx.get(f"{running.url}/items/3", timeout=10)
    out = running.output
    assert "app instrumented" not in out
    assert "Blocking call to time.sleep()" in out and "(request GET" not in out


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_asyncpg_connects_in_raise_mode_and_user_stat_is_refused(
    tmp_path: Path, postgres: PostgresInfo, server: str
) -> None:
    env = {"PG_URL": postgres.url, "HOME": str(tmp_path)}  # a ~/.pgpass asyncpg finds and reads
    (tmp_path / ".pgpass").write_text("127.0.0.1:*:*:nobody:secret\n")
    (tmp_path / ".pgpass").chmod(0o600)
    with serve(tmp_path, ASYNCPG_APP + "\n@app.get('/ping')\nasync def ping():\n    return {}\n",
               server, extra_env=env, MODE="raise") as running:  # fmt: skip
        answers = [httpx.get(f"{running.url}/query", timeout=10) for _ in range(3)]
        refused = httpx.get(f"{running.url}/stat", timeout=10)
    assert [a.status_code for a in answers] == [200] * 3, running.output
    assert answers[0].json() == {"value": 42}
    assert refused.status_code == 500
    assert refused.json()["call"] == "os.stat"
    assert refused.json()["site"] == f"app.py:{line_of(ASYNCPG_APP, 'STAT')}"
    assert "connect_utils" not in running.output  # the known-trivial lookups were let through


def test_asyncpg_lookups_are_reported_with_default_allow_off(
    tmp_path: Path, postgres: PostgresInfo
) -> None:
    env = {"PG_URL": postgres.url}
    with serve(tmp_path, ASYNCPG_APP + "\n@app.get('/ping')\nasync def ping():\n    return {}\n",
               "uvicorn", extra_env=env, MODE="raise", DEFAULT_ALLOW="0") as running:  # fmt: skip
        answer = httpx.get(f"{running.url}/query", timeout=10)
    assert answer.status_code == 500
    message = answer.json()["message"]
    assert re.search(r"at app\.py:\d+ in query \(inside asyncpg/connect_utils\.py:\d+ in \w+\)",
                     message), message  # fmt: skip
    assert 'allow it with BLOCKBUSTER_LITE_ALLOW=asyncpg.connect_utils or ' \
        'allow=["asyncpg.connect_utils"]' in message  # fmt: skip
    assert "asyncio.sleep" not in message and "anyio.Path" not in message


def test_clean_run_says_so_with_counts(tmp_path: Path) -> None:
    with serve(tmp_path, FASTAPI_APP, "uvicorn", MODE="warn") as running:
        for _ in range(3):
            httpx.get(f"{running.url}/ping", timeout=10)
    out = running.output
    assert re.search(r"blockbuster_lite: active from BLOCKBUSTER_LITE_MODE \(warn mode, \d+ of \d+ "
                     r"functions patched", out), out  # fmt: skip
    match = re.search(r"blockbuster_lite: no blocking calls on the event loop \(warn mode, "
                      r"([\d,]+) checked calls, (\d+) requests\)", out)  # fmt: skip
    assert match, out
    assert int(match.group(2)) >= 4  # wait_until_ready's ping and ours


def test_summary_groups_requests_with_routes_and_worker_pids(tmp_path: Path) -> None:
    with serve(tmp_path, FASTAPI_APP, "gunicorn", MODE="warn") as running:
        pids = {httpx.get(f"{running.url}/items/1", timeout=10).json()["pid"] for _ in range(4)}
    out = running.output
    assert re.search(r"BlockingCallWarning: Blocking call to time\.sleep\(\) .* \(blocked 50\d\.\d "
                     r"ms\) \[pid \d+\]", out), out  # fmt: skip
    for pid in pids:
        assert f"blockbuster_lite summary (pid {pid}): 1 call site(s) blocked" in out, out
    assert re.search(r"^ +during requests:$", out, re.M)
    assert re.search(r"^ +\d+ +\d+\.\d +50\d\.\d +GET /items/\{item_id\} +time\.sleep\(\) at "
                     rf"app\.py:{line_of(FASTAPI_APP, 'SLEEP')} in sleepy$", out, re.M), out  # fmt: skip


# -- instrument_app itself, in process -----------------------------------------------------


@pytest.fixture
def process_guard() -> Iterator[None]:
    import blockbuster_lite as bl

    bl.activate("warn")
    try:
        yield
    finally:
        bl.deactivate()


def test_instrument_app_needs_the_process_guard() -> None:
    from fastapi import FastAPI

    from blockbuster_lite.integrations.servers import instrument_app

    app = FastAPI()
    assert instrument_app(app, "test") is app and app.user_middleware == []


@pytest.mark.usefixtures("process_guard")
def test_instrument_app_adds_the_middleware_to_a_fastapi_app_once() -> None:
    from fastapi import FastAPI

    from blockbuster_lite.asgi import BlockBusterMiddleware
    from blockbuster_lite.integrations.servers import instrument_app

    app = FastAPI()
    assert instrument_app(app, "test") is app
    assert instrument_app(instrument_app(app, "test"), "test") is app
    assert [m.cls for m in app.user_middleware] == [BlockBusterMiddleware]


@pytest.mark.usefixtures("process_guard")
def test_instrument_app_wraps_a_started_app_and_any_callable() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from blockbuster_lite.asgi import BlockBusterMiddleware
    from blockbuster_lite.integrations.servers import instrument_app

    started = FastAPI()
    with TestClient(started) as client:
        client.get("/")  # builds the middleware stack: Starlette refuses add_middleware now
    wrapped = instrument_app(started, "test")
    assert isinstance(wrapped, BlockBusterMiddleware) and wrapped.app is started
    assert instrument_app(wrapped, "test") is wrapped

    async def raw(scope: object, receive: object, send: object) -> None:
        pass

    around = instrument_app(raw, "test")
    assert isinstance(around, BlockBusterMiddleware) and around.app is raw
