"""FastAPI on uvicorn: throughput and server CPU per request, unpatched vs patched, A/B in one server.

One uvicorn server process (``--loop auto --http auto``: uvloop and httptools when installed)
serves a FastAPI app with an ``async def`` endpoint and a plain ``def`` one (run in anyio's thread
pool, so the off-loop checks of locks and queues are paid too). Between measurement windows the
server switches arm in place, on its loop: ``unpatched``, ``blockbuster_lite`` (``activate("warn")``,
what ``BLOCKBUSTER_LITE_MODE=warn uvicorn app:app`` does) or ``blockbuster`` (``activate()``). The
arms run back to back in each round, in an order that rotates, so drift hits all alike; this
process is the load generator (keep-alive HTTP/1.1 connections on 127.0.0.1, requests alternating
between the two endpoints). Per window: requests completed, and the server's CPU time (from
``/proc``) per request. Figures are medians over rounds of the per-round ratios to the unpatched
window of the same round (with the interquartile range). Caps: throughput ≥ 0.99x, CPU per request
≤ 1.01x. A ``placebo`` arm (nothing active, switched to like the others) shows the A/B's own noise
floor; after every switch the server collects garbage, for every arm alike.

    python benchmarks/bench_http.py [--rounds 40] [--window 0.6] [--output benchmarks/results_http.md]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _summary

#: ``placebo`` is unpatched again, switched to like the others: how far an arm with nothing
#: active lands from 1.000x in this run is the A/B's own noise floor.
ARMS = ("unpatched", "placebo", "blockbuster_lite", "blockbuster")
CONNECTIONS = 16
PATHS = (b"/items/7", b"/sync/7")
THROUGHPUT_CAP = 0.99
CPU_CAP = 1.01


# --- the server ---------------------------------------------------------------------------------


def make_app() -> Any:
    from fastapi import FastAPI

    import blockbuster_lite as bl

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": "widget", "tags": ["a", "b"]}

    @app.get("/sync/{item_id}")
    def sync_item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": "widget", "tags": ["a", "b"]}

    state: dict[str, Any] = {"arm": "unpatched", "bb": None}

    def switch(arm: str) -> None:
        if state["arm"] == "blockbuster_lite":
            bl.deactivate()
        elif state["arm"] == "blockbuster":
            state["bb"].deactivate()
        if arm == "blockbuster_lite":
            bl.activate("warn")
        elif arm == "blockbuster":
            from blockbuster import BlockBuster

            state["bb"] = BlockBuster()
            state["bb"].activate()
        state["arm"] = arm
        # Every arm alike: collect the garbage the switch made (an activation's rebinding scan,
        # a deactivation), so a full collection it would trigger later is not charged to the
        # window that follows. An application activates once, at start-up.
        gc.collect()

    async def control(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/__arm/"):
            switch(scope["path"].rsplit("/", 1)[1])
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"2")]})  # fmt: skip
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await app(scope, receive, send)

    return control


def serve(port: int) -> None:
    import logging

    import uvicorn

    logging.getLogger("blockbuster_lite").setLevel(logging.ERROR)
    uvicorn.run(make_app(), host="127.0.0.1", port=port, log_level="error", access_log=False)


# --- the load generator -----------------------------------------------------------------------


def _request(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: bytes) -> bytes:
    writer.write(_request(path))
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return await reader.readexactly(length)


async def _connection(port: int, deadline: float, counts: list[int], index: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while time.perf_counter() < deadline:
            await _get(reader, writer, PATHS[(done + index) % 2])
            done += 1
    finally:
        writer.close()
        counts.append(done)


async def _window(port: int, seconds: float) -> int:
    counts: list[int] = []
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_connection(port, deadline, counts, i) for i in range(CONNECTIONS)))
    return sum(counts)


async def _control(port: int, arm: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _get(reader, writer, f"/__arm/{arm}".encode())
    finally:
        writer.close()


def _cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid``, in ns resolution (``/proc/<pid>/task/*/schedstat``);
    ``/proc/<pid>/stat`` counts 10 ms ticks, ±2 % of a 0.6 s window."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


async def measure(port: int, pid: int, rounds: int, window: float) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {f"{kind} {arm}": [] for kind in ("rps", "cpu") for arm in ARMS}
    for arm in ARMS:  # warm every arm once (first requests, imports, activation caches)
        await _control(port, arm)
        await _window(port, 0.3)
    for index in range(rounds):
        shift = index % len(ARMS)
        for arm in ARMS[shift:] + ARMS[:shift]:
            await _control(port, arm)
            await _window(port, 0.2)
            cpu = _cpu_seconds(pid)
            start = time.perf_counter()
            done = await _window(port, window)
            elapsed = time.perf_counter() - start
            results[f"rps {arm}"].append(done / elapsed)
            results[f"cpu {arm}"].append((_cpu_seconds(pid) - cpu) / done)
    await _control(port, "unpatched")
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return q1, statistics.median(values), q3


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--window", type=float, default=0.6)
    parser.add_argument("--output", default=str(Path(__file__).with_name("results_http.md")))
    args = parser.parse_args()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKBUSTER_LITE_")}
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
    try:
        _wait_for(port, process)
        results = asyncio.run(measure(port, process.pid, args.rounds, args.window))
    finally:
        process.terminate()
        process.wait(10)

    lines = [
        "# FastAPI on uvicorn: unpatched vs patched, A/B in one server",
        "",
        _summary.machine(),
        "",
        f"{args.rounds} rounds x {args.window} s per arm, {CONNECTIONS} keep-alive connections, "
        "requests alternating between an `async def` and a `def` endpoint.",
        "",
        "| arm | requests/s | / unpatched (IQR) | server CPU µs/request | / unpatched (IQR) |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm in ARMS:
        rps = statistics.median(results[f"rps {arm}"])
        cpu = statistics.median(results[f"cpu {arm}"])
        rps_ratio = _quartiles(
            [a / b for a, b in zip(results[f"rps {arm}"], results["rps unpatched"], strict=True)]
        )
        cpu_ratio = _quartiles(
            [a / b for a, b in zip(results[f"cpu {arm}"], results["cpu unpatched"], strict=True)]
        )
        lines.append(
            f"| {arm} | {rps:,.0f} | {rps_ratio[1]:.3f}x ({rps_ratio[0]:.3f}-{rps_ratio[2]:.3f}) "
            f"| {cpu * 1e6:.0f} | {cpu_ratio[1]:.3f}x ({cpu_ratio[0]:.3f}-{cpu_ratio[2]:.3f}) |"
        )
        if arm == "blockbuster_lite":
            ours_rps, ours_cpu = rps_ratio[1], cpu_ratio[1]
        if arm == "blockbuster":
            bb_rps, bb_cpu = rps_ratio[1], cpu_ratio[1]
        if arm == "placebo":
            placebo_rps, placebo_cpu = rps_ratio[1], cpu_ratio[1]
    lines += [
        "",
        f"Noise floor: the placebo arm (nothing active) lands at {placebo_rps:.3f}x throughput "
        f"and {placebo_cpu:.3f}x CPU; `probe_http_calls.py` counts what lite adds per request "
        "exactly.",
        "",
        f"Caps for blockbuster_lite: throughput ≥ {THROUGHPUT_CAP}x: "
        f"{'yes' if ours_rps >= THROUGHPUT_CAP else 'NO'}; CPU per request ≤ {CPU_CAP}x: "
        f"{'yes' if ours_cpu <= CPU_CAP else 'NO'}.",
        "",
    ]
    unpatched_rps = statistics.median(results["rps unpatched"])
    _summary.add(
        "HTTP A/B", "FastAPI on uvicorn, throughput", f"{unpatched_rps:,.0f} req/s",
        f"{ours_rps:.3f}x", f"{bb_rps:.3f}x", f"{ours_rps:.3f}x", f"≥ {THROUGHPUT_CAP}x",
        ours_rps >= THROUGHPUT_CAP,
    )  # fmt: skip
    unpatched_cpu = statistics.median(results["cpu unpatched"])
    _summary.add(
        "HTTP A/B", "FastAPI on uvicorn, server CPU per request", f"{unpatched_cpu * 1e6:.0f} µs",
        f"{ours_cpu:.3f}x", f"{bb_cpu:.3f}x", f"{ours_cpu:.3f}x", f"≤ {CPU_CAP}x",
        ours_cpu <= CPU_CAP,
    )  # fmt: skip
    text = "\n".join(lines)
    print(text)
    Path(args.output).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
