"""Activation time with a big application imported (FastAPI, SQLAlchemy, pydantic, httpx).

Activation patches the catalogue and rebinds names bound before activation in every imported
module (``from time import sleep`` and friends, see ``core/rebind.py``). This measures, in one
process with 1,500+ modules imported:

1. the first activation (every module scanned) and its deactivation;
2. later activations (modules scanned before and unchanged are skipped);
3. the same without the rebinding scan (patching alone), for the cost of the scan itself;
4. the audit-hook alternative: the per-event cost an always-on ``sys.addaudithook`` adds to
   ``open`` + ``os.stat`` (events it watches) and to ``sys._getframe`` (an event it ignores:
   every audit event anywhere in the process pays the hook).

Goal: activation under 50 ms. Results go to stdout and ``results_activation.md``.

    python benchmarks/bench_activation.py [--rounds 20] [--output benchmarks/results_activation.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import timeit


def _import_the_application() -> None:
    import fastapi
    import fastapi.testclient
    import httpx
    import pydantic
    import sqlalchemy
    import sqlalchemy.ext.asyncio
    import sqlalchemy.orm

    for name in ("sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.sqlite", "uvicorn",
                 "starlette.templating", "jinja2", "anyio", "trio", "email.mime.text",
                 "multiprocessing", "concurrent.futures", "xml.etree.ElementTree", "json",
                 "http.server", "logging.handlers", "sqlite3", "pydantic.v1"):  # fmt: skip
        with contextlib.suppress(ImportError):
            __import__(name)
    # every submodule of the four packages, as a large application ends up importing
    import pkgutil
    import warnings

    # and the rest of such an application's stack: server, clients, drivers, the standard library
    extra = ("starlette", "uvicorn", "anyio", "httpcore", "h11", "trio", "psycopg", "redis",
             "requests", "urllib3", "pydantic_core", "email", "xml", "http", "urllib", "json",
             "logging", "concurrent", "asyncio", "multiprocessing", "unittest", "sqlite3",
             "importlib", "encodings", "ctypes", "html", "wsgiref", "zoneinfo", "dbm", "curses",
             "idna", "certifi", "charset_normalizer", "click", "attr", "greenlet", "outcome")  # fmt: skip
    packages = [fastapi, sqlalchemy, pydantic, httpx]
    for name in extra:
        try:
            packages.append(__import__(name))
        except Exception:
            continue
    for package in packages:
        if not hasattr(package, "__path__"):
            continue
        prefix = package.__name__ + "."
        for info in pkgutil.walk_packages(package.__path__, prefix, onerror=lambda name: None):
            skip = (".tests", "testing", "mypy", "__main__", "idlelib", "turtledemo", "_test",
                    "test_", ".test")  # fmt: skip
            if any(part in info.name for part in skip):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    __import__(info.name)
            except Exception:
                pass


def _ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms (min {min(samples) * 1000:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--output", default=os.path.join(os.path.dirname(__file__), "results_activation.md")
    )
    options = parser.parse_args()
    _import_the_application()
    import blockbuster_lite as bl
    from blockbuster_lite.core import rebind

    modules = len(sys.modules)
    scanned = sum(1 for name in sys.modules if not rebind.skipped(name))

    def cycle() -> tuple[float, float]:
        started = time.perf_counter()
        bl.activate("log")
        activated = time.perf_counter()
        bl.deactivate()
        return activated - started, time.perf_counter() - activated

    real_bind = rebind.rebinder.bind
    rebind.rebinder.bind = lambda pairs: None  # type: ignore[method-assign]
    try:
        build_on, build_off = cycle()  # builds the replacements once (no rebinding)
    finally:
        rebind.rebinder.bind = real_bind  # type: ignore[method-assign]
    first_on, first_off = cycle()
    later = [cycle() for _ in range(options.rounds)]

    rebind.rebinder.bind = lambda pairs: None  # type: ignore[method-assign]
    try:
        bare = [cycle() for _ in range(options.rounds)]
    finally:
        rebind.rebinder.bind = real_bind  # type: ignore[method-assign]

    rebind.rebinder._clean.clear()  # every module scanned again: a cold activation
    cold = []
    for _ in range(options.rounds):
        rebind.rebinder._clean.clear()
        cold.append(cycle())

    # the audit-hook alternative, measured in a child-free way: a hook cannot be removed, so
    # this comes last; each figure is per call.
    with tempfile.NamedTemporaryFile() as file:
        path = file.name

        def open_stat() -> None:
            with open(path, "rb"):
                pass
            os.stat(path)

        number = 20000
        without_open = min(timeit.repeat(open_stat, number=number, repeat=5)) / number
        without_len = min(timeit.repeat("_getframe()", setup="from sys import _getframe", number=number * 50, repeat=5)) / (number * 50)
        watched = {"open", "os.listdir", "os.scandir", "socket.connect", "socket.getaddrinfo",
                   "subprocess.Popen", "os.system"}  # fmt: skip

        def hook(event: str, args: tuple[object, ...]) -> None:
            if event in watched:
                sys._getframe(1)  # what a check would start with

        sys.addaudithook(hook)
        with_open = min(timeit.repeat(open_stat, number=number, repeat=5)) / number
        with_len = min(timeit.repeat("_getframe()", setup="from sys import _getframe", number=number * 50, repeat=5)) / (number * 50)

    lines = [
        "# Activation time",
        "",
        f"Python {sys.version.split()[0]}, {modules} modules imported, {scanned} outside the "
        "standard library and this package (the ones scanned).",
        "",
        "| measurement | activate | deactivate |",
        "|---|---|---|",
        f"| very first activation (builds the wrappers; no rebinding) | {build_on * 1000:.1f} ms | "
        f"{build_off * 1000:.1f} ms |",
        f"| first rebinding activation (every module scanned) | {first_on * 1000:.1f} ms | "
        f"{first_off * 1000:.1f} ms |",
        f"| cold activation, median of {options.rounds} | {_ms([a for a, _ in cold])} | "
        f"{_ms([b for _, b in cold])} |",
        f"| later activations (unchanged modules skipped) | {_ms([a for a, _ in later])} | "
        f"{_ms([b for _, b in later])} |",
        f"| patching alone, no rebinding | {_ms([a for a, _ in bare])} | "
        f"{_ms([b for _, b in bare])} |",
        "",
        "Audit-hook alternative (a hook that only tests the event name; cannot be removed):",
        "",
        "| call | without hook | with hook |",
        "|---|---|---|",
        f"| open + os.stat of a file | {without_open * 1e6:.2f} us | {with_open * 1e6:.2f} us |",
        f"| sys._getframe() (an event the hook ignores) | {without_len * 1e9:.1f} ns | {with_len * 1e9:.1f} ns |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with open(options.output, "w") as out:
        out.write(text)


if __name__ == "__main__":
    main()
