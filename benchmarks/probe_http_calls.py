"""What blockbuster_lite runs per request on a real uvicorn + FastAPI server, counted exactly.

``bench_http.py`` measures throughput and CPU side by side, but on a two-core machine its windows
vary by ±12 % (client, server and thread pool share the cores), so it cannot resolve a 1 %
difference. This probe counts instead of timing: uvicorn runs in a thread of this process with a
profile hook on every thread it starts, and the same requests are made with blockbuster_lite
off and on (``activate("warn")``, as ``BLOCKBUSTER_LITE_MODE=warn``). The difference is every
Python function and C builtin call that having it active adds to a request (a wrapt wrapper whose
``enabled`` check says "off the loop" adds no Python frame and shows as nothing here; its cost is
in ``bench_overhead.py``).

    python benchmarks/probe_http_calls.py [--requests 300] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import collections
import socket
import threading
import time
from typing import Any

from bench_http import make_app  # the very app bench_http.py measures

import blockbuster_lite as bl

Key = tuple[str, str]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--loop", default="uvloop")
    args = parser.parse_args()

    import uvicorn

    counts: dict[str, collections.Counter[Key]] = {"off": collections.Counter(),
                                                   "lite": collections.Counter()}  # fmt: skip
    current: list[str | None] = [None]

    def profile(frame: Any, event: str, arg: Any) -> None:
        arm = current[0]
        if arm is None:
            return
        if event == "call":
            code = frame.f_code
            counts[arm][(code.co_filename.rsplit("/", 2)[-1], code.co_qualname)] += 1
        elif event == "c_call":
            counts[arm][("C", getattr(arg, "__qualname__", repr(arg)))] += 1

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(make_app(), host="127.0.0.1", port=port, log_level="warning",
                            loop=args.loop, access_log=False)  # fmt: skip
    threading.setprofile(profile)  # the server thread and every worker it starts
    threading.Thread(target=uvicorn.Server(config).run, daemon=True).start()
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

    def client(requests: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for index in range(requests):
                path = (b"/items/7", b"/sync/7")[index % 2]
                sock.sendall(b"GET " + path + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                data = b""
                while not data.endswith(b"]}"):
                    data += sock.recv(4096)

    for arm in ("off", "lite", "off", "lite"):  # twice each: both arms see warm caches
        if arm == "lite":
            bl.activate("warn")
        client(args.requests)  # warm-up: worker threads, caches
        current[0] = arm
        client(args.requests)
        current[0] = None
        if arm == "lite":
            bl.deactivate()
    requests = 2 * args.requests
    per_request = {arm: sum(counter.values()) / requests for arm, counter in counts.items()}
    print(f"loop {args.loop}, {requests} requests per arm (async def and def alternately)")
    print(f"calls per request: off {per_request['off']:.2f}, lite {per_request['lite']:.2f}")
    keys = set(counts["off"]) | set(counts["lite"])
    added = sorted(((counts["lite"][k] - counts["off"][k]) / requests, k) for k in keys)
    for difference, (where, name) in added:
        if abs(difference) >= 0.01:
            print(f"  {difference:+.2f}/request  {where}: {name}")


if __name__ == "__main__":
    main()
