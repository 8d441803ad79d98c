"""Per-call overhead of blockbuster_lite, side by side with blockbuster and with no patching.

Three measurements in one run. In each round the three modes of a case (unpatched,
blockbuster, blockbuster_lite) run back to back, in an order that rotates from round to round,
so drift and noisy neighbours hit all three alike:

1. off-loop: patched calls made in a worker thread while an asyncio loop runs in the main
   thread (what every sync FastAPI endpoint pays);
2. on-loop allowed path: calls made on the loop thread that cannot block (non-blocking socket
   send+recv as asyncio transports do, an uncontended lock);
3. activation + deactivation.

Objects whose class is swapped while active (locks, sqlite3 connections, queues and events,
which own locks) are created inside each round, under the mode being measured.

Figures are medians over many short rounds; overheads and ratios are medians of the per-round
paired differences and ratios. The goals of issue 3 are checked in the last columns (off-loop:
overhead at most half of blockbuster's, and at most 1.25x the unpatched cost; on-loop: no slower
than blockbuster). Results go to stdout and to ``results.md`` next to this file.

    python benchmarks/bench_overhead.py [--seconds 45] [--output benchmarks/results.md]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import queue
import select
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import _summary
from blockbuster import BlockBuster, blockbuster_ctx

import blockbuster_lite

MODES = ("unpatched", "blockbuster", "blockbuster_lite")
#: Time one measurement (one case, one mode, one round) should take.
TARGET_NS = 1_500_000
MIN_NUMBER, MAX_NUMBER = 500, 200_000


def mode_context(mode: str) -> AbstractContextManager[Any]:
    if mode == "unpatched":
        return nullcontext()
    if mode == "blockbuster":
        return blockbuster_ctx()
    # raise mode: the strictest, and off the loop the mode makes no difference
    return blockbuster_lite.intercept("raise")


@dataclass
class Case:
    name: str
    stmt: str
    #: Builds the objects ``stmt`` uses; called under the measured mode. Returns (namespace, cleanup).
    setup: Callable[[Resources], tuple[dict[str, Any], Callable[[], None]]]
    #: Does blockbuster check this call (or a call made inside it)?
    blockbuster_checks: str = "yes"
    #: How many calls one run of ``stmt`` makes, when its figures are per call (a loop over a
    #: file's lines is that many ``next()`` calls: the caps are per call, as for every row).
    per: int = 1
    number: int = 0
    samples: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})


@dataclass
class Resources:
    directory: str
    small_file: str
    lines_file: str


#: A name bound before any activation (the detection issue's rebinding scan rebinds such names).
_PREBOUND_STAT = os.stat


def _nothing() -> None:
    return None


def _setup_plain(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    return {"time": time, "os": os, "path": resources.small_file}, _nothing


def _setup_listdir(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    return {"os": os, "path": resources.directory}, _nothing


def _setup_open(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    return {"path": resources.small_file}, _nothing


def _setup_open_file(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    """A file opened under the measured mode (while active: C layers over a checked raw file)."""
    lines = os.path.join(resources.directory, "lines.txt")
    if not os.path.exists(lines):
        with open(lines, "w") as out:
            out.write("a line of text\n" * 100)
    small, text = open(resources.small_file, "rb"), open(lines)  # noqa: SIM115

    def close() -> None:
        small.close()
        text.close()

    return {"f": small, "t": text}, close


def _socketpair(blocking: bool) -> tuple[dict[str, Any], Callable[[], None]]:
    a, b = socket.socketpair()
    a.setblocking(blocking)
    b.setblocking(blocking)

    def close() -> None:
        a.close()
        b.close()

    return {"a": a, "b": b}, close


def _setup_blocking_socket(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    return _socketpair(True)


def _setup_nonblocking_socket(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    return _socketpair(False)


def _setup_sqlite(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    connection = sqlite3.connect(":memory:")
    cursor = connection.cursor()
    return {"cur": cursor}, connection.close


def _setup_sqlite_connection(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    connection = sqlite3.connect(":memory:")
    return {"con": connection}, connection.close


def _setup_file(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    file = open(resources.lines_file, "rb")  # noqa: SIM115 - closed by the cleanup
    return {"f": file}, file.close


def _setup_select(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    a, b = socket.socketpair()
    b.send(b"x")

    def close() -> None:
        a.close()
        b.close()

    return {"select": select.select, "r": [a]}, close


def _setup_simple_queue(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    return {"q": queue.SimpleQueue()}, _nothing


def _setup_prebound(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    # a name bound before activation, as `from os import stat` in a module imported earlier
    return {"stat": _PREBOUND_STAT, "path": resources.small_file}, _nothing


def _setup_lock(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    return {"lock": threading.Lock()}, _nothing


def _setup_queue(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    return {"q": queue.Queue()}, _nothing


def _setup_event(resources: Resources) -> tuple[dict[str, Any], Callable[[], None]]:
    event = threading.Event()
    event.set()
    return {"ev": event}, _nothing


def off_loop_cases() -> list[Case]:
    return [
        Case("time.sleep(0)", "time.sleep(0)", _setup_plain),
        Case("os.stat(file)", "os.stat(path)", _setup_plain),
        Case("os.listdir(dir of 3)", "os.listdir(path)", _setup_listdir),
        Case(
            "open(rb) + read + close",
            "f = open(path, 'rb'); f.read(); f.close()",
            _setup_open,
            "read only",
        ),
        Case("f.read() of a small file", "f.seek(0); f.read()", _setup_open_file),
        Case(
            "readline iteration, per line (100-line text file)",
            "t.seek(0)\nfor _ in t: pass",
            _setup_open_file,
            per=100,
        ),
        Case("blocking socket send+recv", "a.send(b'x'); b.recv(16)", _setup_blocking_socket),
        Case("sqlite3 cursor.execute('select 1')", "cur.execute('select 1')", _setup_sqlite),
        Case(
            "sqlite3 Connection.execute('select 1')",
            "con.execute('select 1')",
            _setup_sqlite_connection,
        ),
        Case("file read(100) + seek(0)", "f.read(100); f.seek(0)", _setup_file, "read only"),
        Case(
            "readline iteration, per line (10-line binary file)",
            "f.seek(0)\nfor _ in f: pass",
            _setup_file,
            "no",
            per=10,
        ),
        Case("select.select(ready, 0)", "select([r[0]], [], [], 0)", _setup_select, "no"),
        Case("SimpleQueue.put+get", "q.put(1); q.get()", _setup_simple_queue, "no"),
        Case("pre-bound stat (from os import stat)", "stat(path)", _setup_prebound),
        Case("Lock.acquire()+release()", "lock.acquire(); lock.release()", _setup_lock),
        Case("with Lock", "with lock: pass", _setup_lock, "no"),
        Case("Queue.put+get", "q.put(1); q.get()", _setup_queue, "inner locks"),
        Case("Event.wait() (set)", "ev.wait()", _setup_event, "no"),
    ]


def on_loop_cases() -> list[Case]:
    return [
        Case(
            "non-blocking socket send+recv",
            "a.send(b'x'); b.recv(16)",
            _setup_nonblocking_socket,
        ),
        Case(
            "Lock.acquire()+release() (uncontended)", "lock.acquire(); lock.release()", _setup_lock
        ),
        Case("with Lock (uncontended)", "with lock: pass", _setup_lock, "no"),
    ]


def _time(stmt: str, namespace: dict[str, Any], number: int) -> float:
    """ns per execution of ``stmt`` (timeit inlines it in a loop and disables gc)."""
    timer = timeit.Timer(stmt, globals=namespace, timer=time.perf_counter_ns)
    return float(timer.timeit(number)) / number


def calibrate(cases: list[Case], resources: Resources) -> None:
    for case in cases:
        namespace, cleanup = case.setup(resources)
        try:
            _time(case.stmt, namespace, 200)  # warm up
            per_call = min(_time(case.stmt, namespace, 2000) for _ in range(3))
        finally:
            cleanup()
        case.number = int(min(MAX_NUMBER, max(MIN_NUMBER, TARGET_NS / per_call)))


def run_round(cases: list[Case], resources: Resources, round_index: int) -> None:
    # The three modes of one case run back to back (activating around each), so the paired
    # differences see the same machine state; the order rotates from round to round.
    shift = round_index % len(MODES)
    for case in cases:
        for mode in MODES[shift:] + MODES[:shift]:
            with mode_context(mode):
                namespace, cleanup = case.setup(resources)
                try:
                    elapsed = _time(case.stmt, namespace, case.number)
                    case.samples[mode].append(elapsed / case.per)
                finally:
                    cleanup()


def run_rounds(cases: list[Case], resources: Resources, seconds: float, min_rounds: int) -> int:
    calibrate(cases, resources)
    deadline = time.monotonic() + seconds
    rounds = 0
    while rounds < min_rounds or time.monotonic() < deadline:
        run_round(cases, resources, rounds)
        rounds += 1
    return rounds


async def measure_off_loop(
    cases: list[Case], resources: Resources, seconds: float, min_rounds: int
) -> int:
    # The loop thread sits in its selector awaiting the worker, as a server's does between
    # requests; a ticking loop would only add GIL hand-over noise to every mode alike.
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, run_rounds, cases, resources, seconds, min_rounds)


async def measure_on_loop(
    cases: list[Case], resources: Resources, seconds: float, min_rounds: int
) -> int:
    calibrate(cases, resources)
    deadline = time.monotonic() + seconds
    rounds = 0
    while rounds < min_rounds or time.monotonic() < deadline:
        run_round(cases, resources, rounds)
        rounds += 1
        await asyncio.sleep(0)
    return rounds


def measure_activation(seconds: float, min_rounds: int) -> tuple[dict[str, list[float]], int]:
    samples: dict[str, list[float]] = {
        "blockbuster_lite: with intercept()": [],
        "blockbuster: activate()+deactivate()": [],
        "blockbuster: with blockbuster_ctx()": [],
    }
    prebuilt = BlockBuster()

    def ours() -> None:
        with blockbuster_lite.intercept("raise"):
            pass

    def theirs_prebuilt() -> None:
        prebuilt.activate()
        prebuilt.deactivate()

    def theirs_ctx() -> None:
        with blockbuster_ctx():
            pass

    runs = list(zip(samples, (ours, theirs_prebuilt, theirs_ctx), strict=True))
    for _, func in runs:
        func()  # warm up (first activation registers import hooks, fills caches)
    deadline = time.monotonic() + seconds
    rounds = 0
    while rounds < min_rounds or time.monotonic() < deadline:
        shift = rounds % len(runs)
        for name, func in runs[shift:] + runs[:shift]:
            start = time.perf_counter_ns()
            func()
            samples[name].append(float(time.perf_counter_ns() - start))
        rounds += 1
    return samples, rounds


# -- reporting -----------------------------------------------------------------------------------


def _paired_overhead(case: Case, mode: str) -> float:
    pairs = zip(case.samples[mode], case.samples["unpatched"], strict=True)
    return statistics.median(patched - plain for patched, plain in pairs)


def _paired_ratio(case: Case, mode: str, base: str = "unpatched") -> float:
    pairs = zip(case.samples[mode], case.samples[base], strict=True)
    return statistics.median(patched / plain for patched, plain in pairs)


def _fmt_ns(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


#: Off the loop: at most 1.25x the unpatched cost, or at most this many ns more.
OFF_LOOP_CAP_NS = 150
#: On the loop, a call that cannot block: lite's overhead at most this share of blockbuster's
#: (the non-blocking socket path asyncio's transports take); other rows: no slower than bb.
ON_LOOP_SHARE = {"non-blocking socket send+recv": 0.5}


def off_loop_table(cases: list[Case]) -> list[str]:
    lines = [
        "| call | unpatched ns | blockbuster ns | lite ns | bb overhead ns | lite overhead ns "
        "| bb / unpatched | lite / unpatched | lite ovh / bb ovh | bb checks it "
        f"| ≤ ½ bb ovh | ≤ 1.25x or +{OFF_LOOP_CAP_NS} ns |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|:-:|:-:|",
    ]
    for case in cases:
        med = {mode: statistics.median(case.samples[mode]) for mode in MODES}
        ours = _paired_overhead(case, "blockbuster_lite")
        theirs = _paired_overhead(case, "blockbuster")
        comparable = theirs > 0.05 * med["unpatched"]
        share = f"{ours / theirs:.2f}" if comparable else "n/a"
        half = ("yes" if ours <= 0.5 * theirs else "NO") if comparable else "n/a"
        ratio = _paired_ratio(case, "blockbuster_lite")
        capped = ratio <= 1.25 or ours <= OFF_LOOP_CAP_NS
        lines.append(
            f"| {case.name} | {_fmt_ns(med['unpatched'])} | {_fmt_ns(med['blockbuster'])} "
            f"| {_fmt_ns(med['blockbuster_lite'])} | {_fmt_ns(theirs)} | {_fmt_ns(ours)} "
            f"| {_paired_ratio(case, 'blockbuster'):.2f}x "
            f"| {ratio:.2f}x | {share} | {case.blockbuster_checks} "
            f"| {half} | {'yes' if capped else 'NO'} |"
        )
        _summary.add(
            "off the loop", case.name, f"{_fmt_ns(med['unpatched'])} ns",
            f"+{_fmt_ns(ours)} ns ({ratio:.2f}x)", f"+{_fmt_ns(theirs)} ns",
            f"{ratio:.2f}x / +{_fmt_ns(ours)} ns", f"≤ 1.25x or +{OFF_LOOP_CAP_NS} ns", capped,
        )  # fmt: skip
    return lines


def on_loop_table(cases: list[Case]) -> list[str]:
    lines = [
        "| call | unpatched ns | blockbuster ns | lite ns | lite / blockbuster "
        "| lite ovh / bb ovh | bb checks it | cap | met |",
        "|---|---:|---:|---:|---:|---:|---|---|:-:|",
    ]
    for case in cases:
        med = {mode: statistics.median(case.samples[mode]) for mode in MODES}
        ratio = _paired_ratio(case, "blockbuster_lite", "blockbuster")
        ours = _paired_overhead(case, "blockbuster_lite")
        theirs = _paired_overhead(case, "blockbuster")
        share = ours / theirs if theirs > 0.05 * med["unpatched"] else None
        limit = ON_LOOP_SHARE.get(case.name)
        met: bool | None
        if case.blockbuster_checks != "yes":
            cap, met = "n/a", None
        elif limit is not None:
            cap, met = f"lite ovh ≤ {limit}x bb ovh", share is not None and share <= limit
        else:
            cap, met = "≤ bb", ratio <= 1.0
        verdict = "n/a" if met is None else ("yes" if met else "NO")
        share_text = "n/a" if share is None else f"{share:.2f}"
        lines.append(
            f"| {case.name} | {_fmt_ns(med['unpatched'])} | {_fmt_ns(med['blockbuster'])} "
            f"| {_fmt_ns(med['blockbuster_lite'])} | {ratio:.2f}x | {share_text} "
            f"| {case.blockbuster_checks} | {cap} | {verdict} |"
        )
        _summary.add(
            "on the loop, cannot block", case.name, f"{_fmt_ns(med['unpatched'])} ns",
            f"+{_fmt_ns(ours)} ns", f"+{_fmt_ns(theirs)} ns",
            f"ovh {share_text} of bb" if limit is not None else f"{ratio:.2f}x bb", cap, met,
        )  # fmt: skip
    return lines


def activation_table(samples: dict[str, list[float]]) -> list[str]:
    lines = ["| what | median µs | min µs |", "|---|---:|---:|"]
    for name, values in samples.items():
        lines.append(
            f"| {name} | {statistics.median(values) / 1000:,.0f} | {min(values) / 1000:,.0f} |"
        )
    ours, prebuilt, ctx = (statistics.median(values) for values in samples.values())
    lines += [
        "",
        f"blockbuster_lite / blockbuster: {ours / prebuilt:.2f}x against a pre-built "
        f"`BlockBuster()` (goal ≤ 1: {'yes' if ours <= prebuilt else 'NO'}), {ours / ctx:.2f}x "
        "against `blockbuster_ctx()`, which also builds it (as `intercept()` builds its guard).",
    ]
    _summary.add(
        "activation", "with intercept(): pass (this process's modules)", "",
        f"{ours / 1000:,.0f} µs", f"{ctx / 1000:,.0f} µs (ctx), {prebuilt / 1000:,.0f} µs (pre-built)",
        f"{ours / ctx:.2f}x bb ctx", "n/a (1,500-module row below)", None,
    )  # fmt: skip
    return lines


@contextmanager
def resources() -> Iterator[Resources]:
    with tempfile.TemporaryDirectory(prefix="bbl-bench-") as directory:
        small = os.path.join(directory, "small.txt")
        for name in ("small.txt", "b.txt", "c.txt"):
            with open(os.path.join(directory, name), "wb") as file:
                file.write(b"x" * 100)
        with tempfile.TemporaryDirectory(prefix="bbl-bench-lines-") as other:
            lines = os.path.join(other, "lines")
            with open(lines, "wb") as file:
                file.write(b"a line of text\n" * 10)
            yield Resources(directory, small, lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("BENCH_SECONDS", "45")),
        help="total time budget for the rounds (default 45, env BENCH_SECONDS)",
    )
    parser.add_argument("--output", default=str(Path(__file__).with_name("results.md")))
    args = parser.parse_args(argv)
    budget = args.seconds
    min_rounds = 7

    started = time.monotonic()
    gc.collect()
    with resources() as res:
        activation, activation_rounds = measure_activation(0.1 * budget, 20)
        off = off_loop_cases()
        off_rounds = asyncio.run(measure_off_loop(off, res, 0.65 * budget, min_rounds))
        on = on_loop_cases()
        on_rounds = asyncio.run(measure_on_loop(on, res, 0.25 * budget, min_rounds))
    elapsed = time.monotonic() - started

    report = [
        "# blockbuster_lite overhead benchmark",
        "",
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end; "
        f"blockbuster {version('blockbuster')}, blockbuster_lite {blockbuster_lite.__version__}, "
        f"wrapt {version('wrapt')}. Run took {elapsed:.0f} s. "
        "ns per call: median of rounds; overheads and ratios: medians of per-round paired "
        "differences and ratios (the three modes of a case run back to back in each round).",
        "",
        f"## Off-loop: worker thread while an asyncio loop runs ({off_rounds} rounds)",
        "",
        *off_loop_table(off),
        "",
        "Objects are created under the measured mode (locks, sqlite3 connections, queues and events "
        "are blockbuster_lite's checked kinds). `bb checks it`: whether blockbuster checks this call "
        "(`no`: it adds nothing here, so there is no overhead to compare with).",
        "",
        f"## On-loop allowed path: calls on the loop thread that cannot block ({on_rounds} rounds)",
        "",
        *on_loop_table(on),
        "",
        f"## Activation + deactivation ({activation_rounds} rounds)",
        "",
        *activation_table(activation),
        "",
    ]
    text = "\n".join(report)
    print(text)
    Path(args.output).write_text(text, encoding="utf-8")
    print(
        f"(written to {args.output}; blockbuster_lite from {blockbuster_lite.__file__})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
