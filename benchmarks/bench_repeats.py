"""A repeated detection at one site, per mode, and activation with 1,500 modules imported.

1. Repeated detection: ``os.stat`` of a small file called on the loop thread from one line, over
   and over, as a hot route that stats a file per request does. Per round and mode, a fresh guard
   is entered and the site warmed past its first report (and past the detections kept in
   ``guard.violations``), then the calls are timed; rounds interleave the modes, and each mode's
   figure is the median of its per-round ratio to the plain call timed in the same round.
   blockbuster (which only raises) is shown against raise mode. Caps: warn and log ≤ 2x plain.
2. Activation: ``with intercept(): pass`` after 1,500 extra modules are imported (the rebinding
   scan visits every module), against blockbuster's activate+deactivate in the same process.
   Cap: ≤ 50 ms.

    python benchmarks/bench_repeats.py [--rounds 15] [--output benchmarks/results_repeats.md]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import statistics
import sys
import tempfile
import time
import timeit
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _summary
from blockbuster import BlockBuster, BlockingError

import blockbuster_lite as bl
from blockbuster_lite import offload
from blockbuster_lite.core.repeats import KEPT_PER_SITE

CALLS = 2000
WARM = KEPT_PER_SITE + 200  # past the first report and the detections each site keeps
MODULES = 1500
REPEAT_CAP = 2.0
ACTIVATION_CAP_MS = 50.0


def _timer(stmt: str, namespace: dict[str, Any]) -> Callable[[int], float]:
    timer = timeit.Timer(stmt, globals=namespace, timer=time.perf_counter_ns)
    return lambda number: float(timer.timeit(number)) / number


async def repeated_detection(path: str, rounds: int) -> dict[str, list[float]]:
    # the same line raises in raise mode: each variant catches, the plain call included
    catching = _timer(
        "try:\n    stat(path)\nexcept E:\n    pass",
        {"stat": os.stat, "path": path, "E": (bl.BlockingCallError, BlockingError)},
    )
    patched = {"stat": None, "path": path, "E": (bl.BlockingCallError, BlockingError)}
    timed = _timer("try:\n    stat(path)\nexcept E:\n    pass", patched)
    modes = ("warn", "log", "raise", "offload", "blockbuster")
    ratios: dict[str, list[float]] = {mode: [] for mode in modes}
    ns: dict[str, list[float]] = {mode: [] for mode in (*modes, "plain")}
    for index in range(rounds):
        order = modes[index % len(modes) :] + modes[: index % len(modes)]
        for mode in order:
            base = catching(CALLS)  # the same statement as the timed one
            if mode == "blockbuster":
                bb = BlockBuster()
                bb.activate()
                try:
                    patched["stat"] = os.stat
                    timed(200)
                    value = timed(CALLS)
                finally:
                    bb.deactivate()
            else:
                with bl.intercept(mode):
                    patched["stat"] = os.stat
                    timed(WARM)
                    value = timed(CALLS)
            ratios[mode].append(value / base)
            ns[mode].append(value)
            ns["plain"].append(base)
    return {**{f"ratio {m}": v for m, v in ratios.items()}, **{f"ns {m}": v for m, v in ns.items()}}


def activation(rounds: int) -> tuple[list[float], list[float], int]:
    """ms per ``with intercept(): pass`` and per blockbuster activate+deactivate, 1,500 modules."""
    with tempfile.TemporaryDirectory(prefix="bbl-bench-modules-") as directory:
        package = Path(directory) / "bbl_bench_many"
        package.mkdir()
        (package / "__init__.py").write_text("")
        for index in range(MODULES):
            (package / f"m{index}.py").write_text(
                f"import os, time\nfrom time import sleep\nVALUE = {index}\n"
                "def f():\n    return os.stat('.')\n"
            )
        sys.path.insert(0, directory)
        try:
            for index in range(MODULES):
                importlib.import_module(f"bbl_bench_many.m{index}")
            ours: list[float] = []
            theirs: list[float] = []
            bb = BlockBuster()
            for index in range(rounds):
                runs = [("ours", ours), ("theirs", theirs)]
                for name, samples in runs[index % 2 :] + runs[: index % 2]:
                    start = time.perf_counter()
                    if name == "ours":
                        with bl.intercept("raise"):
                            pass
                    else:
                        bb.activate()
                        bb.deactivate()
                    samples.append((time.perf_counter() - start) * 1000)
            return ours, theirs, len(sys.modules)
        finally:
            sys.path.remove(directory)
            for name in [n for n in sys.modules if n.startswith("bbl_bench_many")]:
                del sys.modules[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--output", default=str(Path(__file__).with_name("results_repeats.md")))
    args = parser.parse_args()
    logger = logging.getLogger("blockbuster_lite")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    warnings.simplefilter("ignore")
    with tempfile.NamedTemporaryFile() as file:
        path = file.name
        results = asyncio.run(offload.with_portal(repeated_detection)(path, args.rounds))
    ours, theirs, modules = activation(max(args.rounds, 15))

    plain_ns = statistics.median(results["ns plain"])
    lines = [
        "# Repeated detection and activation",
        "",
        _summary.machine(),
        "",
        f"## A repeated detection at one site (`os.stat`, on the loop; {args.rounds} rounds "
        f"x {CALLS} calls, after {WARM} warm-up calls per guard)",
        "",
        "| mode | ns per call | / plain (median of rounds) | cap | met |",
        "|---|---:|---:|---|:-:|",
        f"| plain call | {plain_ns:,.0f} | 1.00x | | |",
    ]
    for mode in ("warn", "log", "raise", "offload", "blockbuster"):
        ratio = statistics.median(results[f"ratio {mode}"])
        value = statistics.median(results[f"ns {mode}"])
        capped = mode in ("warn", "log")
        met = ratio <= REPEAT_CAP if capped else None
        verdict = "n/a" if met is None else ("yes" if met else "NO")
        label = "blockbuster (raises)" if mode == "blockbuster" else f"lite {mode}"
        cap = f"≤ {REPEAT_CAP:.0f}x plain" if capped else ""
        lines.append(f"| {label} | {value:,.0f} | {ratio:.2f}x | {cap} | {verdict} |")
        if mode != "blockbuster":
            bb_ratio = statistics.median(results["ratio blockbuster"])
            _summary.add(
                "repeated detection", f"os.stat at one site, {mode} mode", f"{plain_ns:,.0f} ns",
                f"{value:,.0f} ns ({ratio:.2f}x)",
                f"{bb_ratio:.2f}x (raises)" if mode == "raise" else "n/a",
                f"{ratio:.2f}x plain", cap or "n/a", met,
            )  # fmt: skip
    ours_ms, theirs_ms = statistics.median(ours), statistics.median(theirs)
    lines += [
        "",
        "Every mode is timed against the plain call in the same statement (inside a "
        "`try`/`except`, since raise mode and blockbuster raise). Offload mode: the site "
        "has been measured fast, so it runs inline (no thread hop).",
        "",
        f"## Activation + deactivation with {MODULES:,} extra modules imported "
        f"({modules:,} in sys.modules)",
        "",
        "| what | median ms | min ms |",
        "|---|---:|---:|",
        f"| blockbuster_lite: with intercept() | {ours_ms:.1f} | {min(ours):.1f} |",
        f"| blockbuster: activate()+deactivate() | {theirs_ms:.1f} | {min(theirs):.1f} |",
        "",
        f"Cap ≤ {ACTIVATION_CAP_MS:.0f} ms: {'yes' if ours_ms <= ACTIVATION_CAP_MS else 'NO'}.",
        "",
    ]
    _summary.add(
        "activation", f"with intercept(): pass, {MODULES:,} modules imported", "",
        f"{ours_ms:.1f} ms", f"{theirs_ms:.1f} ms", f"{ours_ms:.1f} ms",
        f"≤ {ACTIVATION_CAP_MS:.0f} ms", ours_ms <= ACTIVATION_CAP_MS,
    )  # fmt: skip
    text = "\n".join(lines)
    print(text)
    Path(args.output).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
