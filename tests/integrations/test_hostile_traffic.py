"""Hostile traffic against a real uvicorn on 127.0.0.1: memory stays flat, reports keep no secret
and no escape sequence.

The soaks measure the process's RSS after a warm-up that fills every bounded store (the process
guard keeps its last 10,000 violations) and again at the end; growth must stay under 5 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import blockbuster_lite as bl
from blockbuster_lite.asgi import UNROUTED, BlockBusterMiddleware, RequestContext, route_stats
from blockbuster_lite.core.guard import process_guard
from blockbuster_lite.core.state import request_context, state
from blockbuster_lite.integrations.summary import Summary
from blockbuster_lite.otel import disable_opentelemetry, enable_opentelemetry

ORIGINAL_SLEEP = time.sleep
GROWTH_LIMIT = 5 * 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@pytest.fixture(autouse=True)
def _clean_process_state() -> Iterator[None]:
    route_stats(reset=True)
    before = (state.guards, state.observers)
    yield
    route_stats(reset=True)
    assert (state.guards, state.observers) == before
    assert time.sleep is ORIGINAL_SLEEP


@contextlib.contextmanager
def serve(app: Any) -> Iterator[int]:
    """uvicorn in a thread on a free 127.0.0.1 port (h11, asyncio); yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(app, loop="asyncio", http="h11", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            ORIGINAL_SLEEP(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()


class KeepAliveClient:
    """A raw HTTP/1.1 client on one connection, pipelining requests in batches (fast enough to
    send 20,000 requests in seconds; httpx would spend most of the test in itself)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buffer = b""

    def get_many(self, paths: list[str]) -> list[int]:
        request = "".join(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" for path in paths)
        self.sock.sendall(request.encode())
        return [self._response()[0] for _ in paths]

    def request(self, target: str) -> tuple[int, bytes]:
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return self._response()

    def _response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        lengths = (int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length"))
        length = next(lengths, 0)
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body

    def _read(self) -> None:
        chunk = self.sock.recv(1 << 16)
        assert chunk, "the server closed the connection"
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def _quiet() -> contextlib.AbstractContextManager[Any]:
    """Record warnings (the server thread's too) instead of showing them."""
    return warnings.catch_warnings(record=True)


# -- unique 404 paths --------------------------------------------------------------------------


async def not_found(request: Request, exc: Exception) -> Response:
    for _ in range(5):
        os.stat(".")  # <- the 404 handler blocks
    return PlainTextResponse("not here", status_code=404)


async def item(request: Request) -> Response:
    return PlainTextResponse("ok")


def test_unique_404_paths_keep_memory_flat() -> None:
    app = Starlette(routes=[Route("/items/{item_id}", item)], exception_handlers={404: not_found})
    middleware = BlockBusterMiddleware(app, mode="warn")
    padding = "x" * 150  # long hostile paths: each key would cost more

    def paths(start: int, count: int) -> list[str]:
        return [f"/missing/{padding}/{number}" for number in range(start, start + count)]

    with _quiet() as caught, serve(middleware) as port:
        client = KeepAliveClient(port)
        try:
            for start in range(0, 3000, 250):  # warm-up: 15,000 violations fill every store
                assert set(client.get_many(paths(start, 250))) == {404}
            before = rss()
            for start in range(3000, 20_000, 250):
                assert set(client.get_many(paths(start, 250))) == {404}
            after = rss()
            guard = process_guard()
            assert guard is not None
            assert len(guard.violations) == 10_000  # the process guard's bound
            stats = guard.stats()
        finally:
            client.close()
    assert after - before < GROWTH_LIMIT, f"RSS grew {(after - before) / 2**20:.1f} MiB"
    assert route_stats() == {UNROUTED: {"os.stat": 100_000}}
    assert [(row.call, row.count) for row in stats] == [("os.stat", 100_000)]
    ours = [w for w in caught if issubclass(w.category, bl.BlockingCallWarning)]
    assert len(ours) == 1


# -- one long stream ---------------------------------------------------------------------------

STREAM_EVENTS = 30_000


async def events(request: Request) -> Response:
    async def stream() -> AsyncIterator[str]:
        for number in range(STREAM_EVENTS):
            time.sleep(1e-6)  # <- blocks in the stream
            yield f"data: {number}\n\n"
            if number % 100 == 0:
                await asyncio.sleep(0)
        context = request_context.get()
        assert isinstance(context, RequestContext)
        yield f"data: kept={len(context.violations)} dropped={context.dropped}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


def test_one_long_stream_with_many_blocking_calls_keeps_memory_flat() -> None:
    app = Starlette(routes=[Route("/events", events)])
    with _quiet(), serve(BlockBusterMiddleware(app, mode="warn")) as port:
        before = after = 0
        last = ""
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        with client, client.stream("GET", "/events") as response:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                last = line
                if line == "data: 12000":  # the process guard's store is full by now
                    before = rss()
            after = rss()
    assert before, "the stream ended early"
    assert after - before < GROWTH_LIMIT, f"RSS grew {(after - before) / 2**20:.1f} MiB"
    assert last == f"data: kept=100 dropped={STREAM_EVENTS - 100}"


# -- 2,000 ports from one line ------------------------------------------------------------------


def _closed_ports(count: int) -> list[int]:
    ports = []
    probes = [socket.socket() for _ in range(count)]
    for probe in probes:  # all bound at once: distinct ports, then closed (nothing listens)
        probe.bind(("127.0.0.1", 0))
        ports.append(probe.getsockname()[1])
    for probe in probes:
        probe.close()
    return ports


PORTS = _closed_ports(2000)


async def scan(request: Request) -> Response:
    refused = 0
    for port in PORTS:
        with socket.socket() as sock:
            sock.settimeout(2)
            try:
                sock.connect(("127.0.0.1", port))  # <- one line, 2,000 ports
            except OSError:
                refused += 1
    return PlainTextResponse(str(refused))


def test_two_thousand_ports_from_one_line_give_one_warning_and_one_summary_row() -> None:
    summary = Summary()
    state.observers = (*state.observers, summary)
    app = Starlette(routes=[Route("/scan", scan)])
    try:
        with _quiet() as caught, serve(BlockBusterMiddleware(app, mode="warn")) as port:
            response = httpx.get(f"http://127.0.0.1:{port}/scan", timeout=60)
            assert response.status_code == 200
    finally:
        state.observers = tuple(o for o in state.observers if o is not summary)
    ours = [w for w in caught if issubclass(w.category, bl.BlockingCallWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    rows = summary.rows()
    assert [(row.call, row.count) for row in rows] == [("socket.socket.connect", 2000)]
    assert len(summary.render().splitlines()) == 3  # heading, column names, one row
    assert route_stats() == {"/scan": {"socket.socket.connect": 2000}}


# -- secrets and escape sequences in every report ------------------------------------------------

HOSTILE = [
    # (the request target as sent, the path as the report shows it)
    ("/q/%0d%0aFORGED:%201%1b[31mred%7f%c2%85", "/q/\\r\\nFORGED: 1\\x1b[31mred\\x7f\\x85"),
    ("/q/%1b]0;title%07%00", "/q/\\x1b]0;title\\x07\\x00"),
    ("/q/%e2%80%a8%e2%80%ae%09", "/q/\\u2028\\u202e\\t"),
]


async def query(request: Request) -> Response:
    with bl.allow_blocking():
        conn = sqlite3.connect(":memory:")
    try:
        return PlainTextResponse(str(conn.execute("SELECT md5('s3cr3t-literal')").fetchall()))
    finally:
        conn.close()


async def raw_query(scope: Any, receive: Any, send: Any) -> None:
    """A plain ASGI app, no router: its reports show the request's path."""
    if scope["type"] != "http":
        return
    await query(Request(scope, receive))


def traced(app: Any, tracer: Any) -> Any:
    """The span an instrumented server would open around each request."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        with tracer.start_as_current_span("request"):
            await app(scope, receive, send)

    return asgi


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_opentelemetry(tracer_provider=provider)
    try:
        yield exporter, provider.get_tracer("tests")
    finally:
        disable_opentelemetry()


# Starlette's path patterns do not match a newline: a path with one reaches no route (404)
CASES = [(t, e, False) for t, e in HOSTILE] + [(t, e, True) for t, e in HOSTILE if "\\n" not in e]


@pytest.mark.parametrize(("target", "escaped", "routed"), CASES)
def test_a_hostile_path_and_an_sql_literal_reach_no_report_raw(
    caplog: pytest.LogCaptureFixture,
    spans: tuple[InMemorySpanExporter, Any],
    target: str,
    escaped: str,
    routed: bool,
) -> None:
    exporter, tracer = spans
    app: Any = raw_query
    if routed:  # inside Starlette's error middleware, as app.add_middleware() puts it
        app = Starlette(routes=[Route("/q/{rest:path}", query)], middleware=[Middleware(BlockBusterMiddleware)])
    route = "/q/{rest:path}" if routed else None
    shown = route or escaped  # a message names the route, or the path when nothing routed
    summary = Summary()
    state.observers = (*state.observers, summary)
    caplog.set_level(logging.WARNING)
    try:
        with bl.intercept("raise") as guard, serve(traced(app if routed else BlockBusterMiddleware(app), tracer)) as port:
            client = KeepAliveClient(port)
            try:
                status, raw_body = client.request(target)
            finally:
                client.close()
    finally:
        state.observers = tuple(o for o in state.observers if o is not summary)
    assert status == 500
    [violation] = guard.violations
    assert violation.call == "sqlite3.Connection.execute(SELECT ...)"
    assert violation.context["path"] == escaped
    assert violation.context["route"] == route
    assert violation.message.isprintable() and f"(request GET {shown})" in violation.message
    # the JSON 500 body
    body = json.loads(raw_body)
    assert b"s3cr3t" not in raw_body and body["path"] == escaped
    assert body["message"] == violation.message
    # the log: the refusal is logged once (by the middleware, at ERROR), escaped
    refusals = [r for r in caplog.records if "sqlite3.Connection.execute" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    line = refusals[0].getMessage()
    assert refusals[0].levelno == logging.ERROR and "[response 500]" in line
    assert line.isprintable() and shown in line and "s3cr3t" not in line
    # the exit summary
    text = summary.render()
    assert "sqlite3.Connection.execute(SELECT ...)" in text and "s3cr3t" not in text
    assert all(row.isprintable() for row in text.splitlines())
    # OpenTelemetry
    [request_span] = [span for span in exporter.get_finished_spans() if span.name == "request"]
    [event] = request_span.events
    attributes = dict(event.attributes or {})
    assert attributes["blockbuster_lite.call"] == "sqlite3.Connection.execute(SELECT ...)"
    assert attributes.get("http.route") == route
    for value in attributes.values():
        assert "s3cr3t" not in str(value) and str(value).isprintable()


def test_raise_mode_outside_a_request_logs_a_refusal_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        for _ in range(3):
            with contextlib.suppress(bl.BlockingCallError):
                time.sleep(0.001)  # <- refused three times, logged once

    caplog.set_level(logging.WARNING, logger="blockbuster_lite")
    with bl.intercept("raise") as guard:
        asyncio.run(main())
    assert len(guard.violations) == 3
    assert len([r for r in caplog.records if "time.sleep" in r.getMessage()]) == 1


def test_route_counts_stop_growing_past_the_route_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import Counter

    from blockbuster_lite.integrations import asgi

    monkeypatch.setattr(asgi, "MAX_ROUTES", 3)
    counts: dict[str, Counter[str]] = {}
    for number in range(50):  # e.g. a Mount whose prefix holds a path parameter
        asgi._count(counts, f"/tenant/{number}/items", "time.sleep")
    assert counts == {
        "/tenant/0/items": {"time.sleep": 1},
        "/tenant/1/items": {"time.sleep": 1},
        "/tenant/2/items": {"time.sleep": 1},
        "<other routes>": {"time.sleep": 47},
    }


async def sleepy(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    time.sleep(1e-6)  # <- a raw ASGI app: reports show the path
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_a_long_hostile_path_is_kept_cut_and_escaped() -> None:
    with bl.intercept("log") as guard, serve(BlockBusterMiddleware(sleepy)) as port:
        client = KeepAliveClient(port)
        try:
            status, _ = client.request("/" + "%1b" * 3000)
        finally:
            client.close()
    assert status == 204
    [violation] = guard.violations
    path = violation.context["path"]
    assert len(path) == 256 and path.startswith("/\\x1b\\x1b") and path.endswith("...")
    assert path in violation.message and violation.message.isprintable()
