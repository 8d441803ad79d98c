"""Catalogue: sockets, TLS, DNS and the stdlib HTTP client (real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import http.client
import http.server
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import trio
from helpers import (
    LOOPS,
    OFF_LOOP,
    call_on,
    calls,
    check_uninstalled,
    raises_on,
    run_on,
    seen_off_loop,
    seen_on,
)

import blockbuster_lite as bl

FILENAME = os.path.basename(__file__)


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from 127.0.0.1"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    """A thread accepting connections on 127.0.0.1 and echoing what it receives."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


# -- blocking sockets --------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_blocking_socket_calls_on_a_loop_are_caught(
    loop: str, pair: tuple[socket.socket, socket.socket]
) -> None:
    left, right = pair
    assert raises_on(loop, lambda: left.sendall(b"x")).violation.call == "socket.socket.sendall"
    left.sendall(b"x")  # off the loop
    assert raises_on(loop, lambda: right.recv(1)).violation.call == "socket.socket.recv"


def test_every_blocking_socket_operation_is_reported(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    left, right = pair

    def exchange() -> bytes:
        left.send(b"ab")
        buffer = bytearray(1)
        right.recv_into(buffer)
        return bytes(buffer) + right.recv(1)

    with bl.intercept("log") as guard:
        assert call_on("asyncio", exchange) == b"ab"
    assert calls(guard) == [
        "socket.socket.send",
        "socket.socket.recv_into",
        "socket.socket.recv",
    ]


def test_a_socket_with_a_timeout_still_blocks(pair: tuple[socket.socket, socket.socket]) -> None:
    left, _ = pair
    left.settimeout(5)
    assert raises_on("asyncio", lambda: left.sendall(b"x")).violation.call == (
        "socket.socket.sendall"
    )


def test_create_connection_and_accept_are_caught(echo_port: int) -> None:
    error = raises_on("asyncio", lambda: socket.create_connection(("127.0.0.1", echo_port)))
    assert error.violation.call == "socket.create_connection"
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        error = raises_on("asyncio", lambda: listener.accept())
        assert error.violation.call == "socket.socket.accept"
    finally:
        listener.close()


def test_create_connection_is_reported_once(echo_port: int) -> None:
    def connect_and_echo() -> bytes:
        with socket.create_connection(("127.0.0.1", echo_port)) as conn:
            conn.sendall(b"ping")
            return conn.recv(4)

    with bl.intercept("log") as guard:
        assert call_on("asyncio", connect_and_echo) == b"ping"
    assert calls(guard) == [
        "socket.create_connection",  # not also socket.socket.connect inside it
        "socket.socket.sendall",
        "socket.socket.recv",
    ]


@pytest.mark.parametrize("where", OFF_LOOP)
def test_socket_calls_off_the_loop_are_not_caught(where: str, echo_port: int) -> None:
    def echo() -> bytes:
        with socket.create_connection(("127.0.0.1", echo_port)) as conn:
            conn.sendall(b"pong")
            return conn.recv(4)

    assert seen_off_loop(where, echo) == []


# -- calls that cannot block -------------------------------------------------------------------


def test_non_blocking_sockets_are_never_caught(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    left.setblocking(False)
    right.settimeout(0)

    def exchange() -> bytes:
        left.send(b"z")
        return right.recv(1)

    assert seen_on("asyncio", exchange, mode="raise") == []


def test_an_error_from_a_non_blocking_socket_call_is_neither_swallowed_nor_retried() -> None:
    # The cleared-by-predicate fast path once wrapped the real call in its try/except: a reset
    # reported by recv was swallowed, the call ran again and read b"" (an orderly EOF) instead.
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()  # linger 0: the peer sees a reset, not an end of stream
    client.setblocking(False)
    try:
        with bl.intercept("raise") as guard, pytest.raises(ConnectionResetError):
            call_on("asyncio", lambda: client.recv(10))
    finally:
        client.close()
        listener.close()
    assert guard.violations == []


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", b"127.0.0.1", None])
def test_resolving_an_ip_literal_is_not_caught(host: str | bytes | None) -> None:
    def resolve() -> object:
        return socket.getaddrinfo(host, 80, proto=socket.IPPROTO_TCP)

    assert seen_on("asyncio", resolve, mode="raise") == []


@pytest.mark.parametrize(
    ("call_name", "call"),
    [
        ("socket.getaddrinfo", lambda: socket.getaddrinfo("localhost", 80)),
        ("socket.gethostbyname", lambda: socket.gethostbyname("localhost")),
        ("socket.getfqdn", lambda: socket.getfqdn("127.0.0.1")),
    ],
)
def test_name_resolution_is_caught(call_name: str, call: object) -> None:
    assert raises_on("asyncio", call).violation.call == call_name  # type: ignore[arg-type]


def test_the_loops_own_resolver_is_not_caught() -> None:
    async def main() -> bool:
        infos = await asyncio.get_running_loop().getaddrinfo("localhost", 80)
        return bool(infos)

    with bl.intercept("raise") as guard:
        assert asyncio.run(main())
    assert guard.violations == []


# -- async streams never trip the sanitizer ----------------------------------------------------


async def asyncio_echo_round_trip() -> bytes:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello")
    await writer.drain()
    data = await reader.readexactly(5)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return data


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "anyio-asyncio"])
def test_asyncio_streams_are_never_caught(loop: str) -> None:
    with bl.intercept("raise") as guard:
        assert run_on(loop, asyncio_echo_round_trip) == b"hello"
    assert guard.violations == []


@pytest.mark.parametrize("loop", ["anyio-asyncio", "anyio-trio"])
def test_anyio_streams_are_never_caught(loop: str, echo_port: int) -> None:
    async def main() -> bytes:
        async with await anyio.connect_tcp("127.0.0.1", echo_port) as stream:
            await stream.send(b"anyio")
            return bytes(await stream.receive(5))

    with bl.intercept("raise") as guard:
        assert run_on(loop, main) == b"anyio"
    assert guard.violations == []


def test_trio_streams_are_never_caught(echo_port: int) -> None:
    async def main() -> bytes:
        stream = await trio.open_tcp_stream("127.0.0.1", echo_port)
        async with stream:
            await stream.send_all(b"trio!")
            return bytes(await stream.receive_some(5))

    with bl.intercept("raise") as guard:
        assert trio.run(main) == b"trio!"
    assert guard.violations == []


@pytest.mark.parametrize("loop", ["trio", "anyio-trio"])
def test_trio_connecting_by_host_name_is_never_caught(loop: str, echo_port: int) -> None:
    # trio first calls socket.getaddrinfo(..., flags=AI_NUMERICHOST) on the loop thread: it
    # cannot block (a name fails at once), then resolves the name in a worker thread.
    async def main() -> bytes:
        async with await anyio.connect_tcp("localhost", echo_port) as stream:
            await stream.send(b"named")
            return bytes(await stream.receive(5))

    async def with_trio() -> bytes:
        stream = await trio.open_tcp_stream("localhost", echo_port)
        async with stream:
            await stream.send_all(b"named")
            return bytes(await stream.receive_some(5))

    with bl.intercept("raise") as guard:
        assert (trio.run(with_trio) if loop == "trio" else run_on(loop, main)) == b"named"
    assert guard.violations == []


def test_numeric_only_getaddrinfo_is_not_caught() -> None:
    def resolve() -> object:
        try:
            return socket.getaddrinfo("localhost", 80, flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            return None

    assert seen_on("asyncio", resolve, mode="raise") == []


# -- HTTP --------------------------------------------------------------------------------------


def test_urlopen_is_reported_once_as_an_http_call(http_url: str) -> None:
    def fetch() -> int:
        with urllib.request.urlopen(http_url) as response:
            return int(response.status)

    with bl.intercept("log") as guard:
        assert call_on("asyncio", fetch) == 200
    assert calls(guard) == ["urllib.request.urlopen"]  # not a dozen socket operations
    assert guard.violations[0].function.endswith("fetch")


def test_urlopen_raise_mode_sends_no_request(http_url: str) -> None:
    error = raises_on("asyncio", lambda: urllib.request.urlopen(http_url))
    assert error.violation.call == "urllib.request.urlopen"
    assert "httpx.AsyncClient" in str(error)


def test_reading_the_response_body_is_its_own_call(http_url: str) -> None:
    with urllib.request.urlopen(http_url) as response:  # off the loop
        error = raises_on("asyncio", lambda: response.read())
    assert error.violation.call == "http.client.HTTPResponse.read"


def test_http_client_requests_are_caught(http_url: str) -> None:
    port = int(http_url.rsplit(":", 1)[1].strip("/"))

    def get() -> bytes:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/")
            return connection.getresponse().read()
        finally:
            connection.close()

    with bl.intercept("log") as guard:
        assert call_on("asyncio", get) == b"hello from 127.0.0.1"
    assert calls(guard) == [
        "http.client.HTTPConnection.request",
        "http.client.HTTPConnection.getresponse",
        "http.client.HTTPResponse.read",
    ]


def test_urlopen_off_the_loop_and_allowed(http_url: str) -> None:
    def fetch() -> bytes:
        with urllib.request.urlopen(http_url) as response:
            return bytes(response.read())

    assert seen_off_loop("anyio.to_thread", fetch) == []
    with bl.intercept("raise") as guard, bl.allow_blocking():
        assert call_on("asyncio", fetch) == b"hello from 127.0.0.1"
    assert guard.violations == []
    assert seen_on("asyncio", fetch, mode="raise", allow=[f"{FILENAME}:fetch"]) == []


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[int]:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                while data := tls.recv(1024):
                    tls.sendall(data)
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    thread.join(5)


def test_tls_handshake_and_reads_on_the_loop_are_caught(
    certificate: tuple[Path, Path], tls_server: int
) -> None:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    raw = socket.create_connection(("127.0.0.1", tls_server))  # off the loop

    def talk() -> bytes:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"secret")
            return tls.recv(6)

    with bl.intercept("log") as guard:
        assert call_on("asyncio", talk) == b"secret"
    # recv() reads through SSLSocket.read: reported once, as recv
    assert calls(guard) == [
        "ssl.SSLSocket.do_handshake",
        "ssl.SSLSocket.sendall",
        "ssl.SSLSocket.recv",
    ]


def test_tls_calls_raise_before_touching_the_connection(
    certificate: tuple[Path, Path], tls_server: int
) -> None:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    with context.wrap_socket(
        socket.create_connection(("127.0.0.1", tls_server)), server_hostname="localhost"
    ) as tls:
        assert raises_on("asyncio", lambda: tls.sendall(b"x")).violation.call == (
            "ssl.SSLSocket.sendall"
        )
        assert raises_on("trio", lambda: tls.recv(1)).violation.call == "ssl.SSLSocket.recv"
        tls.sendall(b"still usable")
        assert tls.recv(12) == b"still usable"


def test_asyncio_tls_streams_are_never_caught(
    certificate: tuple[Path, Path], tls_server: int
) -> None:
    async def main() -> bytes:
        context = ssl.create_default_context(cafile=str(certificate[0]))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", tls_server, ssl=context, server_hostname="localhost"
        )
        writer.write(b"async")
        await writer.drain()
        data = await reader.readexactly(5)
        writer.close()
        await writer.wait_closed()
        return data

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == b"async"
    assert guard.violations == []


# -- uninstalled -------------------------------------------------------------------------------


def test_uninstalled_socket_calls_are_the_originals(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    left, right = pair
    own = {name: vars(socket.socket).get(name) for name in ("sendall", "recv", "sendfile")}
    create_connection = socket.create_connection
    urlopen = urllib.request.urlopen

    def exchange() -> bytes:
        left.sendall(b"q")
        return right.recv(1)

    check_uninstalled("sockets", exchange, "ssl", "http.client", "urllib.request")
    assert {name: vars(socket.socket).get(name) for name in own} == own
    assert own["sendall"] is None and own["recv"] is None  # inherited from _socket.socket
    assert socket.create_connection is create_connection
    assert urllib.request.urlopen is urlopen
