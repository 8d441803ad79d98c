"""Offload mode: the cost of one offloaded call, and a frozen FastAPI endpoint rescued.

1. Overhead: a patched call (``os.stat`` of a file) made in a task, 2,000 times in a row: directly
   (no sanitizer), offloaded by offload mode, and by hand with ``await anyio.to_thread.run_sync``
   (the fix a person would write), on asyncio, uvloop and trio. Medians over interleaved rounds.
2. Rescue: a real uvicorn on 127.0.0.1, in its own process, FastAPI ``async def`` endpoints that
   block: ``time.sleep(0.5)``, a whole-file read of a 64 MiB file, an HTTP call (requests) to a
   local server that answers in 0.5 s. Twenty concurrent requests each (httpx.AsyncClient);
   wall-clock time, and the worst lag a probe task on the server's loop saw (it sleeps 5 ms at a
   time). Without the sanitizer only on asyncio+h11 (the blocking runs take 10 s each; uvloop
   blocks the same way); offload mode on asyncio+h11 and uvloop+httptools.

    python benchmarks/bench_offload.py [--rounds 5] [--calls 400] [--output benchmarks/results_offload.md]

Takes about 40 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

REQUESTS = 20
BIG_FILE_MB = 64

# --- 1. overhead ------------------------------------------------------------------------------


async def _time_calls(call: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


async def _time_awaits(call: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - start) / calls


async def overhead_rounds(path: str, rounds: int, calls: int) -> dict[str, float]:
    import anyio.to_thread

    import blockbuster_lite as bl

    samples: dict[str, list[float]] = {"direct": [], "offloaded": [], "to_thread": []}
    for _ in range(rounds):
        samples["direct"].append(await _time_calls(lambda: os.stat(path), calls))
        samples["to_thread"].append(
            await _time_awaits(lambda: anyio.to_thread.run_sync(os.stat, path), calls)
        )
        async with bl.intercept("offload") as guard:
            samples["offloaded"].append(await _time_calls(lambda: os.stat(path), calls))
        assert guard.violations and guard.violations[-1].action is bl.Mode.OFFLOAD
    return {name: statistics.median(values) for name, values in samples.items()}


def measure_overhead(rounds: int, calls: int) -> list[tuple[str, dict[str, float]]]:
    import trio
    import uvloop

    with tempfile.NamedTemporaryFile() as target:
        path = target.name
        return [
            ("asyncio", asyncio.run(overhead_rounds(path, rounds, calls))),
            ("uvloop", uvloop.run(overhead_rounds(path, rounds, calls))),
            ("trio", trio.run(overhead_rounds, path, rounds, calls)),
        ]


# --- 1b. loop lag of a burst ---------------------------------------------------------------

BURST = 1000
LAG_CAP = 2.0


async def _probe(state: dict[str, float]) -> None:
    loop = asyncio.get_running_loop()
    while not state["done"]:
        start = loop.time()
        await asyncio.sleep(0.002)
        state["lag"] = max(state["lag"], loop.time() - start - 0.002)


async def _burst(one: Callable[[], Any]) -> tuple[float, float, float]:
    """(worst loop lag s, loop-thread CPU s per call, wall s) of BURST concurrent ``one()``."""
    state = {"done": 0.0, "lag": 0.0}
    probe = asyncio.create_task(_probe(state))
    await asyncio.sleep(0.01)
    cpu, start = time.thread_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(BURST)))
    wall, cpu = time.perf_counter() - start, (time.thread_time() - cpu) / BURST
    state["done"] = 1.0
    await probe
    return state["lag"], cpu, wall


async def lag_rounds(rounds: int) -> dict[str, list[tuple[float, float, float]]]:
    import anyio.to_thread

    import blockbuster_lite as bl

    async def by_hand() -> None:
        await anyio.to_thread.run_sync(time.sleep, 0.05)

    async def offloaded() -> None:
        time.sleep(0.05)

    await _burst(by_hand)  # warm: anyio's worker threads
    async with bl.intercept("offload"):
        await _burst(offloaded)  # warm: the offload pool's threads
    samples: dict[str, list[tuple[float, float, float]]] = {"by hand": [], "offload": []}
    for index in range(rounds):
        for kind in ("by hand", "offload")[:: 1 if index % 2 else -1]:
            if kind == "by hand":
                samples[kind].append(await _burst(by_hand))
            else:
                async with bl.intercept("offload"):
                    samples[kind].append(await _burst(offloaded))
    return samples


# --- 2. the rescue: the server process --------------------------------------------------------


def make_app(mode: str) -> Any:
    import requests
    from fastapi import FastAPI

    from blockbuster_lite.asgi import BlockBusterMiddleware

    big_file = os.environ["BENCH_BIG_FILE"]
    slow_url = os.environ["BENCH_SLOW_URL"]
    state = {"max_lag": 0.0}

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.005)
            state["max_lag"] = max(state["max_lag"], loop.time() - start - 0.005)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(probe())
        yield
        task.cancel()

    app = FastAPI(lifespan=lifespan)
    if mode == "offload":
        app.add_middleware(BlockBusterMiddleware, mode="offload")

    @app.get("/sleep")
    async def sleep() -> dict[str, bool]:
        time.sleep(0.5)
        return {"ok": True}

    @app.get("/file")
    async def read_file() -> dict[str, int]:
        with open(big_file, "rb") as f:
            return {"size": len(f.read())}

    @app.get("/http")
    async def call_slow_server() -> dict[str, str]:
        return {"body": requests.get(slow_url, timeout=30).text}

    @app.get("/lag")
    async def lag() -> dict[str, float]:
        value, state["max_lag"] = state["max_lag"], 0.0
        return {"max_lag": value}

    return app


def serve(mode: str, loop: str, http_impl: str, port: int) -> None:
    import uvicorn

    logging.getLogger("blockbuster_lite").setLevel(logging.ERROR)  # one line per site is noise here
    uvicorn.run(
        make_app(mode),
        host="127.0.0.1",
        port=port,
        loop=loop,
        http=http_impl,
        log_level="warning",
        access_log=False,
    )


# --- 2. the rescue: the client ----------------------------------------------------------------


class SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(0.5)
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"slow")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class SlowServer(http.server.ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server_process(mode: str, loop: str, http_impl: str, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", mode, loop, http_impl, str(port)]
    process = subprocess.Popen(command, env={**os.environ, **env})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(30)


async def burst(base: str, path: str) -> tuple[float, float]:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=60, trust_env=False) as client:
        await client.get(path)  # warm up (first request: routing caches, the portal factory)
        await client.get("/lag")
        start = time.perf_counter()
        responses = await asyncio.gather(*(client.get(path) for _ in range(REQUESTS)))
        wall = time.perf_counter() - start
        lag = float((await client.get("/lag")).json()["max_lag"])
    assert all(r.status_code == 200 for r in responses), [r.status_code for r in responses]
    return wall, lag


def measure_rescue() -> list[tuple[str, str, str, float, float]]:
    rows: list[tuple[str, str, str, float, float]] = []
    slow = SlowServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.bin"
        big.write_bytes(b"x" * (BIG_FILE_MB * 1024 * 1024))
        env = {
            "BENCH_BIG_FILE": str(big),
            "BENCH_SLOW_URL": f"http://127.0.0.1:{slow.server_address[1]}/",
        }
        env.pop("BLOCKBUSTER_LITE_MODE", None)
        runs = [
            ("none", "asyncio", "h11"),
            ("offload", "asyncio", "h11"),
            ("offload", "uvloop", "httptools"),
        ]
        for mode, loop, http_impl in runs:
            with server_process(mode, loop, http_impl, env) as base:
                for path in ("/sleep", "/file", "/http"):
                    wall, lag = asyncio.run(burst(base, path))
                    rows.append((mode, f"{loop}+{http_impl}", path, wall, lag))
                    print(f"  {mode:8} {loop}+{http_impl:10} {path:6} wall {wall:6.2f} s  "
                          f"worst loop lag {lag * 1000:7.1f} ms", flush=True)  # fmt: skip
    slow.shutdown()
    slow.server_close()
    return rows


# --- report -----------------------------------------------------------------------------------


def lag_report(samples: dict[str, list[tuple[float, float, float]]]) -> list[str]:
    hand, ours = samples["by hand"], samples["offload"]
    lag_ratio = statistics.median(o[0] / h[0] for o, h in zip(ours, hand, strict=True))
    cpu_ratio = statistics.median(o[1] / h[1] for o, h in zip(ours, hand, strict=True))
    lines = [
        f"## {BURST:,} concurrent `time.sleep(0.05)` calls in tasks (asyncio; "
        f"{len(hand)} interleaved rounds)",
        "",
        "| how | worst loop lag | loop-thread CPU per call | wall |",
        "|---|---:|---:|---:|",
    ]
    for name, values in (("by hand: `await anyio.to_thread.run_sync`", hand),
                         ("offload mode", ours)):  # fmt: skip
        lines.append(
            f"| {name} | {statistics.median(v[0] for v in values) * 1000:.1f} ms "
            f"| {statistics.median(v[1] for v in values) * 1e6:.0f} us "
            f"| {statistics.median(v[2] for v in values):.2f} s |"
        )
    met = lag_ratio <= LAG_CAP
    lines += [
        "",
        f"Offload / by hand, median of per-round ratios: loop lag {lag_ratio:.2f}x, loop CPU per "
        f"call {cpu_ratio:.2f}x (cap: lag ≤ {LAG_CAP:.0f}x: {'yes' if met else 'NO'}).",
        "",
    ]
    import _summary

    _summary.add(
        "offload", f"{BURST:,} concurrent time.sleep(0.05), worst loop lag",
        f"{statistics.median(v[0] for v in hand) * 1000:.1f} ms by hand",
        f"{statistics.median(v[0] for v in ours) * 1000:.1f} ms", "n/a",
        f"{lag_ratio:.2f}x by hand", f"≤ {LAG_CAP:.0f}x by hand", met,
    )  # fmt: skip
    _summary.add(
        "offload", f"{BURST:,} concurrent time.sleep(0.05), loop CPU per call",
        f"{statistics.median(v[1] for v in hand) * 1e6:.0f} us by hand",
        f"{statistics.median(v[1] for v in ours) * 1e6:.0f} us", "n/a",
        f"{cpu_ratio:.2f}x by hand", "n/a", None,
    )  # fmt: skip
    return lines


def report(
    overhead: list[tuple[str, dict[str, float]]],
    rescue: list[tuple[str, str, str, float, float]],
    rounds: int,
    calls: int,
    lag: list[str],
) -> str:
    what = {
        "/sleep": "time.sleep(0.5)",
        "/file": f"open().read() of {BIG_FILE_MB} MiB",
        "/http": "requests.get, 0.5 s server",
    }
    lines = [
        "# Offload mode",
        "",
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; `python benchmarks/bench_offload.py`.",
        "",
        f"## One offloaded call (`os.stat` of a file; median of {rounds} rounds x {calls} calls)",
        "",
        "| loop | direct | offload mode | overhead | by hand: `await anyio.to_thread.run_sync` |",
        "|---|---:|---:|---:|---:|",
    ]
    # (lines for each loop are appended below; the note follows the table)
    for loop, times in overhead:
        direct, offloaded, by_hand = times["direct"], times["offloaded"], times["to_thread"]
        lines.append(
            f"| {loop} | {direct * 1e6:.1f} us | {offloaded * 1e6:.1f} us | "
            f"{(offloaded - direct) * 1e6:.1f} us | {by_hand * 1e6:.1f} us |"
        )
    lines += [
        "",
        "Offload mode is adaptive: `os.stat` is measured far below a thread hop, so after its "
        "first 8 calls at the site it runs inline; the figure is mostly that inline path.",
        "",
        *lag,
    ]
    lines += [
        "",
        f"## {REQUESTS} concurrent requests to a blocking `async def` FastAPI endpoint "
        "(uvicorn, 127.0.0.1)",
        "",
        "| sanitizer | server | endpoint blocks in | wall | worst loop lag |",
        "|---|---|---|---:|---:|",
    ]
    for mode, server, path, wall, lag in rescue:
        sanitizer = "offload mode" if mode == "offload" else "none"
        lines.append(
            f"| {sanitizer} | {server} | {what[path]} | {wall:.2f} s | {lag * 1000:.1f} ms |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _, _, mode, loop, http_impl, port = sys.argv
        serve(mode, loop, http_impl, int(port))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("results_offload.md")
    )
    args = parser.parse_args()
    logging.getLogger("blockbuster_lite").setLevel(logging.ERROR)
    started = time.perf_counter()
    print("one offloaded call ...", flush=True)
    overhead = measure_overhead(args.rounds, args.calls)
    print(f"{BURST} concurrent offloaded sleeps ...", flush=True)
    lag = lag_report(asyncio.run(lag_rounds(max(args.rounds, 5))))
    print(f"{REQUESTS} concurrent requests ...", flush=True)
    rescue = measure_rescue()
    text = report(overhead, rescue, args.rounds, args.calls, lag)
    print()
    print(text)
    args.output.write_text(text)
    print(f"written to {args.output} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
