"""requests, urllib3 and httpx against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
import requests
import requests.sessions
import urllib3
import urllib3.connectionpool
import urllib3.poolmanager
from helpers import call_on, marked_line

import blockbuster_lite as bl

CLASSES = (
    requests.sessions.Session,
    urllib3.poolmanager.PoolManager,
    urllib3.connectionpool.HTTPConnectionPool,
    httpx.Client,
)


class Server:
    def __init__(self) -> None:
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                body = b"hello"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    try:
        yield running
    finally:
        running.close()


line_of = functools.partial(marked_line, __file__)


def logged(call: Callable[[], Any]) -> tuple[Any, list[bl.Violation]]:
    with bl.intercept("log") as guard:
        result = call_on("asyncio", call)
    return result, guard.violations


def test_requests_reports_method_and_origin_once(server: Server) -> None:
    def get() -> Any:
        return requests.get(f"{server.origin}/private?token=abc123", timeout=5)  # flag: requests

    response, violations = logged(get)
    assert response.text == "hello"
    [violation] = violations  # urllib3, http.client and the socket underneath: not again
    assert violation.call == f"requests.Session.request(GET {server.origin})"
    assert (violation.filename, violation.lineno) == (__file__, line_of("flag: requests"))
    assert "abc123" not in violation.message and "private" not in violation.message
    assert "httpx.AsyncClient" in violation.message

    def send_prepared() -> Any:
        with requests.Session() as session:
            request = requests.Request("POST", f"http://user:pw@127.0.0.1:{server.port}/x")
            return session.send(request.prepare(), timeout=5)

    response, violations = logged(send_prepared)
    assert [v.call for v in violations] == [f"requests.Session.send(POST {server.origin})"]


def test_urllib3(server: Server) -> None:
    def pools() -> list[int]:
        manager = urllib3.PoolManager()
        pool = urllib3.connectionpool.HTTPConnectionPool("127.0.0.1", server.port)
        return [
            manager.request("GET", f"{server.origin}/a").status,
            pool.request("POST", "/b").status,
            urllib3.request("GET", f"{server.origin}/c").status,
        ]

    statuses, violations = logged(pools)
    assert statuses == [200, 200, 200]
    assert [v.call for v in violations] == [
        f"urllib3.PoolManager.urlopen(GET {server.origin})",
        f"urllib3.HTTPConnectionPool.urlopen(POST {server.origin})",
        f"urllib3.PoolManager.urlopen(GET {server.origin})",
    ]


def test_httpx_sync_client(server: Server) -> None:
    def get() -> list[str]:
        with httpx.Client() as client:
            first = client.get(f"{server.origin}/a").text  # flag: httpx
        return [first, httpx.post(f"{server.origin}/b").text]

    texts, violations = logged(get)
    assert texts == ["hello", "hello"]
    assert [(v.call, v.lineno) for v in violations] == [
        (f"httpx.Client.send(GET {server.origin})", line_of("flag: httpx")),
        (f"httpx.Client.send(POST {server.origin})", line_of("flag: httpx") + 1),
    ]


def test_raise_mode_refuses_before_anything_is_sent(server: Server) -> None:
    before = list(server.paths)

    def fetch() -> None:
        requests.get(f"{server.origin}/never", timeout=5)

    with bl.intercept("raise"), pytest.raises(bl.BlockingCallError) as info:
        call_on("asyncio", fetch)
    assert info.value.violation.call == f"requests.Session.request(GET {server.origin})"
    assert server.paths == before


def test_httpx_async_client_is_never_flagged(server: Server) -> None:
    async def main() -> list[str]:
        async with httpx.AsyncClient() as client:
            first = await client.get(f"{server.origin}/async")
            async with client.stream("GET", f"{server.origin}/stream") as response:
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
        return [first.text, body.decode()]

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == ["hello", "hello"]
    assert guard.violations == []


def test_clean_under_a_worker_thread(server: Server) -> None:
    async def main() -> str:
        response = await anyio.to_thread.run_sync(
            lambda: requests.get(f"{server.origin}/thread", timeout=5)
        )
        return response.text

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == "hello"
    assert guard.violations == []


def test_flagged_under_trio(server: Server) -> None:
    def get() -> None:
        with httpx.Client() as client:
            client.get(f"{server.origin}/trio")

    with bl.intercept("raise"), pytest.raises(bl.BlockingCallError) as info:
        call_on("trio", get)
    assert info.value.violation.call == f"httpx.Client.send(GET {server.origin})"


def test_restored_after_the_guard() -> None:
    before = {cls: dict(vars(cls)) for cls in CLASSES}
    with bl.intercept("raise"):
        assert vars(httpx.Client)["send"] is not before[httpx.Client]["send"]
    for cls in CLASSES:
        after = vars(cls)
        assert after.keys() == before[cls].keys()
        assert all(after[name] is value for name, value in before[cls].items()), cls
