"""The problem and the cure in one command: ``python -m examples.demo`` (or ``scripts/demo``).

A real uvicorn serves ``examples/demo_app.py``, whose ``async def`` endpoint calls
``time.sleep(0.5)``. Twenty clients call it at once, against one server per mode: no sanitizer,
``BLOCKBUSTER_LITE_MODE=warn``, ``=raise`` and, when this version has it, ``=offload``.
Each server is a subprocess on a free 127.0.0.1 port; stdout gets the report, stderr a progress
line while something takes longer than a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
APP = "examples.demo_app:app"
ENDPOINT = "/report/{n}"
CLIENTS = 20
SLEEP_S = 0.5
START_TIMEOUT_S = 30.0
_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class Server:
    """``uvicorn examples.demo_app:app`` in a subprocess, with the sanitizer mode in its env."""

    def __init__(self, mode: str | None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKBUSTER_LITE_")}
        if mode is not None:
            env["BLOCKBUSTER_LITE_MODE"] = mode
        env["PYTHONUNBUFFERED"] = "1"
        command = [sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", "0"]
        self.process = subprocess.Popen(
            [*command, "--no-access-log"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            found = _RUNNING.search(line)
            if found:
                self.port = int(found.group(1))
                self._ready.set()
        self._ready.set()  # exited: wake the waiter

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def url(self) -> str:
        if self.port is None:
            tail = "\n".join(self.lines[-15:])
            raise SystemExit(f"demo: the server did not start:\n{tail}")
        return f"http://127.0.0.1:{self.port}"

    async def log_lines(self, predicate: Callable[[str], bool], count: int) -> list[str]:
        """The log lines that match, waiting up to 2 s for ``count`` of them (logs lag replies)."""
        deadline = time.perf_counter() + 2.0
        while True:
            found = [line for line in self.lines if predicate(line)]
            if len(found) >= count or time.perf_counter() > deadline:
                return found
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Run:
    statuses: Counter[int]
    wall_s: float
    latencies_s: list[float]
    first_error: dict[str, object] | None

    def summary(self) -> str:
        codes = ", ".join(f"{count} x {code}" for code, count in sorted(self.statuses.items()))
        ordered = sorted(self.latencies_s)
        p99 = ordered[math.ceil(0.99 * len(ordered)) - 1]
        return (
            f"{len(ordered)} requests -> {codes}   wall {self.wall_s:.2f} s   "
            f"p50 {statistics.median(ordered):.2f} s   p99 {p99:.2f} s"
        )


@contextlib.asynccontextmanager
async def progress(label: Callable[[], str]) -> AsyncIterator[None]:
    """A progress line on stderr once a wait passes one second (animated on a terminal)."""

    async def show() -> None:
        await asyncio.sleep(1.0)
        if not sys.stderr.isatty():
            print(f"   ... {label()}", file=sys.stderr, flush=True)
            return
        for frame in itertools.cycle("|/-\\"):
            sys.stderr.write(f"\r   {frame} {label()}\033[K")
            sys.stderr.flush()
            await asyncio.sleep(0.1)

    task = asyncio.create_task(show())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


async def wait_ready(servers: list[Server]) -> None:
    start = time.perf_counter()

    def label() -> str:
        up = sum(server.port is not None for server in servers)
        return f"starting servers: {up}/{len(servers)} up, {time.perf_counter() - start:.1f} s"

    async with progress(label):
        deadline = start + START_TIMEOUT_S
        while not all(server.ready for server in servers) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)


async def hammer(server: Server) -> Run:
    """CLIENTS concurrent GETs of the blocking endpoint."""
    done: list[float] = []
    first_error: dict[str, object] | None = None
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:

        async def one(n: int) -> int:
            nonlocal first_error
            sent = time.perf_counter()
            response = await client.get(ENDPOINT.format(n=n))
            done.append(time.perf_counter() - sent)
            if response.status_code == 500 and first_error is None:
                first_error = response.json()
            return response.status_code

        start = time.perf_counter()

        def label() -> str:
            elapsed = time.perf_counter() - start
            return f"{len(done)}/{CLIENTS} responses, {elapsed:.1f} s"

        async with progress(label):
            statuses = await asyncio.gather(*(one(n) for n in range(CLIENTS)))
        wall = time.perf_counter() - start
    return Run(Counter(statuses), wall, done, first_error)


def offload_available() -> str | None:
    """None when ``mode="offload"`` works in this version, else the reason it does not."""
    from blockbuster_lite import ConfigError, Guard

    try:
        Guard("offload", source="the demo")
    except ConfigError as exc:
        return str(exc)
    return None


def wrapped(text: str, indent: str = "     ") -> str:
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent)


async def main() -> int:
    print(
        f"blockbuster_lite demo: GET {ENDPOINT} is `async def` but calls time.sleep({SLEEP_S});\n"
        f"{CLIENTS} clients request it at the same time.\n"
    )
    no_offload = offload_available()
    modes: list[str | None] = [None, "warn", "raise"] + ([] if no_offload else ["offload"])
    servers = {mode: Server(mode) for mode in modes}
    try:
        await wait_ready(list(servers.values()))
        await section_plain(servers[None])
        await section_warn(servers["warn"])
        await section_raise(servers["raise"])
        if no_offload is None:
            await section_offload(servers["offload"])
        else:
            print("4. offload: the cure")
            print("   offload mode is coming in a later version of blockbuster_lite.")
    finally:
        for server in servers.values():
            server.stop()
    return 0


async def section_plain(server: Server) -> None:
    print("1. no sanitizer")
    run = await hammer(server)
    print(f"   {run.summary()}")
    print(
        f"   One blocked loop serves them one at a time: the last client waited {run.wall_s:.0f} s."
    )
    print()


async def section_warn(server: Server) -> None:
    print("2. BLOCKBUSTER_LITE_MODE=warn   (the program is unchanged; the culprit is named)")
    run = await hammer(server)
    print(f"   {run.summary()}")
    marker = "BlockingCallWarning: "
    lines = await server.log_lines(lambda line: marker in line, 1)
    warnings = [line.split(marker, 1)[1] for line in lines]
    if warnings:
        print("   server log, once per call site:")
        print(wrapped(f"BlockingCallWarning: {warnings[0]}"))
    else:
        print("   no warning in the server log: is the start-up hook installed (pip install -e .)?")
    async with httpx.AsyncClient(base_url=server.url) as client:
        per_route = (await client.get("/_blockbuster")).json()
    for route, calls in per_route.items():
        counts = ", ".join(f"{call} x {count}" for call, count in calls.items())
        print(f"   per route (middleware counts): {route}: {counts}")
    print()


async def section_raise(server: Server) -> None:
    print("3. BLOCKBUSTER_LITE_MODE=raise   (staging: each offending request fails loudly)")
    run = await hammer(server)
    print(f"   {run.summary()}   (the call never ran)")
    if run.first_error is not None:
        shown = {k: run.first_error[k] for k in ("error", "call", "site", "function", "route")}
        print("   body of a 500:")
        print(wrapped(json.dumps(shown)))
    errors = await server.log_lines(lambda line: line.endswith("[response 500]"), run.statuses[500])
    if errors:
        print(f"   server log: {len(errors)} errors from blockbuster_lite.asgi, the first:")
        print(wrapped(errors[0]))
    print()


async def section_offload(server: Server) -> None:
    print("4. offload: the cure   (BLOCKBUSTER_LITE_MODE=offload)")
    run = await hammer(server)
    print(f"   {run.summary()}")
    print("   Each blocking call ran in a worker thread; the loop kept serving the others.")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
