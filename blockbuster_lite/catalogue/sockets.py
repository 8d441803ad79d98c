"""Sockets, TLS sockets, DNS, and the stdlib HTTP client.

Socket methods are checked only on blocking sockets (``gettimeout() != 0.0``); asyncio's and
anyio's transports use non-blocking sockets and pass straight through. DNS look-ups of IP
literals need no resolver and are not flagged.
"""

from __future__ import annotations

from ..core.targets import Target
from ._predicates import always, blocking_socket, resolves_name

SOCKET_ADVICE = (
    "use asyncio streams / anyio.connect_tcp(), or offload with await anyio.to_thread.run_sync(...)"
)
DNS_ADVICE = "use await loop.getaddrinfo() / anyio.getaddrinfo(), or offload with await anyio.to_thread.run_sync(...)"
HTTP_ADVICE = "use httpx.AsyncClient or aiohttp, or offload with await anyio.to_thread.run_sync(...)"

SOCKET_METHODS = (
    "connect", "connect_ex", "accept", "send", "sendall", "sendto", "sendmsg", "sendfile",
    "recv", "recv_into", "recvfrom", "recvfrom_into", "recvmsg", "recvmsg_into",
)  # fmt: skip

# SSLSocket overrides socket.socket's methods in Python (send/sendall go straight to the SSL
# object), so the patched socket.socket methods never see TLS traffic: patch its own.
#: _socket.socket's C methods that accept no keyword arguments.
POSITIONAL_SOCKET_METHODS = frozenset(
    {"connect", "connect_ex", "send", "sendall", "sendto", "sendmsg", "recv", "recvfrom", "recvmsg"}
)

#: How many positional arguments those methods take at most (sendmsg takes four).
MAX_ARGS = {
    "connect": 1, "connect_ex": 1, "send": 2, "sendall": 2, "sendto": 3, "recv": 2,
    "recvfrom": 2, "recvmsg": 3,
}  # fmt: skip

SSL_METHODS = (
    "read", "write", "do_handshake", "unwrap", "connect", "connect_ex", "accept",
    "send", "sendall", "sendfile", "recv", "recv_into", "recvfrom", "recvfrom_into",
)  # fmt: skip

DNS_FUNCTIONS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr")

TARGETS = (
    *(
        Target(
            "socket", f"socket.{name}", f"socket.socket.{name}", blocking_socket, SOCKET_ADVICE,
            positional_only=name in POSITIONAL_SOCKET_METHODS, socket_method=True,
            max_args=MAX_ARGS.get(name),
        )
        for name in SOCKET_METHODS
    ),
    *(
        Target(
            "ssl", f"SSLSocket.{name}", f"ssl.SSLSocket.{name}", blocking_socket, SOCKET_ADVICE,
            socket_method=True,
        )
        for name in SSL_METHODS
    ),
    *(
        Target("socket", name, f"socket.{name}", resolves_name, DNS_ADVICE)
        for name in DNS_FUNCTIONS
    ),
    Target("socket", "getnameinfo", "socket.getnameinfo", always, DNS_ADVICE),
    Target("socket", "getfqdn", "socket.getfqdn", always, DNS_ADVICE),
    Target("socket", "create_connection", "socket.create_connection", always, SOCKET_ADVICE),
    Target(
        "http.client", "HTTPConnection.request", "http.client.HTTPConnection.request",
        always, HTTP_ADVICE,
    ),
    Target(
        "http.client", "HTTPConnection.endheaders", "http.client.HTTPConnection.request",
        always, HTTP_ADVICE,
    ),
    Target(
        "http.client", "HTTPConnection.getresponse", "http.client.HTTPConnection.getresponse",
        always, HTTP_ADVICE,
    ),
    Target(
        "http.client", "HTTPConnection.connect", "http.client.HTTPConnection.connect",
        always, HTTP_ADVICE,
    ),
    *(
        Target(
            "http.client", f"HTTPResponse.{name}", "http.client.HTTPResponse.read",
            always, HTTP_ADVICE,
        )
        for name in ("read", "readinto", "read1", "readline", "peek")
    ),
    Target("urllib.request", "urlopen", "urllib.request.urlopen", always, HTTP_ADVICE),
    Target(
        "urllib.request", "OpenerDirector.open", "urllib.request.urlopen", always, HTTP_ADVICE
    ),
)  # fmt: skip
