"""Helpers shared by the core and catalogue tests.

Run a callable on each kind of event loop (asyncio, uvloop, anyio on both backends, trio) or off
the loop (no loop, a plain thread, a worker thread of the running loop), collect what a guard saw,
register extra targets for one test, and snapshot every patched name so a test can prove the
originals are back.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest
import trio
import uvloop

import blockbuster_lite as bl
from blockbuster_lite.core import guard as _guard
from blockbuster_lite.core.patcher import _static_lookup, patcher
from blockbuster_lite.core.state import state
from blockbuster_lite.core.targets import Target

T = TypeVar("T")

AsyncFn = Callable[[], Awaitable[Any]]


def _run_uvloop(fn: AsyncFn) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(fn())  # type: ignore[arg-type]


RUNNERS: dict[str, Callable[[AsyncFn], Any]] = {
    "asyncio": lambda fn: asyncio.run(fn()),  # type: ignore[arg-type]
    "uvloop": _run_uvloop,
    "anyio-asyncio": lambda fn: anyio.run(fn, backend="asyncio"),
    "anyio-trio": lambda fn: anyio.run(fn, backend="trio"),
    "trio": lambda fn: trio.run(fn),
}

#: Every kind of loop the sanitizer supports.
LOOPS = tuple(RUNNERS)

#: Ways of running a call on a thread that does not drive a loop.
OFF_LOOP = ("no-loop", "plain-thread", "asyncio.to_thread", "anyio.to_thread", "run_in_executor")


def run_on(loop: str, fn: AsyncFn) -> Any:
    """Run the coroutine function ``fn`` on a fresh loop of kind ``loop``."""
    return RUNNERS[loop](fn)


def call_on(loop: str, call: Callable[[], T]) -> T:
    """Run the sync ``call`` inside a task of a fresh loop of kind ``loop``; return its result."""
    result: list[T] = []

    async def main() -> None:
        result.append(call())

    run_on(loop, main)
    return result[0]


def call_off_loop(where: str, call: Callable[[], Any]) -> Any:
    """Run ``call`` where no loop runs on the calling thread (while a loop may run elsewhere)."""
    if where == "no-loop":
        return call()
    if where == "plain-thread":
        return run_in_plain_thread(call)

    async def main() -> Any:
        if where == "asyncio.to_thread":
            return await asyncio.to_thread(call)
        if where == "anyio.to_thread":
            return await anyio.to_thread.run_sync(call)
        if where == "run_in_executor":
            return await asyncio.get_running_loop().run_in_executor(None, call)
        raise ValueError(where)

    return asyncio.run(main())


def run_in_plain_thread(call: Callable[[], T]) -> T:
    """Run ``call`` in a new thread started (and awaited) from inside a running asyncio loop."""
    outcome: list[Any] = []

    def body() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:
            outcome.append((False, exc))

    async def main() -> None:
        thread = threading.Thread(target=body, name="plain-thread")
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.001)

    asyncio.run(main())
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def calls(guard: bl.Guard) -> list[str]:
    """The ``call`` names a guard recorded, in order."""
    return [violation.call for violation in guard.violations]


def seen_on(loop: str, call: Callable[[], Any], mode: str = "log", **settings: Any) -> list[str]:
    """What a guard in ``mode`` records while ``call`` runs on a loop of kind ``loop``."""
    with bl.intercept(mode, **settings) as guard:
        call_on(loop, call)
    return calls(guard)


def seen_off_loop(where: str, call: Callable[[], Any], mode: str = "raise") -> list[str]:
    with bl.intercept(mode) as guard:
        call_off_loop(where, call)
    return calls(guard)


def raises_on(loop: str, call: Callable[[], Any]) -> bl.BlockingCallError:
    """Run ``call`` on a loop in raise mode; return the BlockingCallError it must raise."""

    def expect_error() -> bl.BlockingCallError:
        try:
            call()
        except bl.BlockingCallError as exc:
            return exc
        raise AssertionError("no BlockingCallError was raised")

    with bl.intercept("raise"):
        return call_on(loop, expect_error)


# -- process state -------------------------------------------------------------------------------

Snapshot = dict[tuple[str, str], tuple[bool, Any]]


def patched_names(targets: Iterable[Target] | None = None) -> Snapshot:
    """For every (registered) target of an imported module: (defined on the owner, object)."""
    snapshot: Snapshot = {}
    if targets is None:
        with patcher.lock:
            targets = [t for group in patcher._targets.values() for t in group]
    for target in targets:
        module = sys.modules.get(target.module)
        if module is None:
            continue
        *parents, name = target.path.split(".")
        owner: Any = module
        try:
            for part in parents:
                owner = getattr(owner, part)
            snapshot[(target.module, target.path)] = _static_lookup(owner, name)
        except AttributeError:
            continue
    return snapshot


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """Names whose object (by identity) or own/inherited status changed."""
    changed = []
    for key, (had_own, obj) in before.items():
        now = after.get(key)
        if now is None or now[0] != had_own or now[1] is not obj:
            changed.append(f"{key[0]}:{key[1]}")
    return changed


def process_state() -> tuple[tuple[bl.Guard, ...], int, bl.Guard | None, Snapshot]:
    return state.guards, patcher.refcount, _guard._process_guard, patched_names()


def restore_process_state(
    before: tuple[tuple[bl.Guard, ...], int, bl.Guard | None, Snapshot],
) -> list[str]:
    """Compare with ``before``; stop guards a test left behind. Returns what was wrong."""
    guards, refcount, process, names = before
    problems = []
    if state.guards != guards:
        problems.append(f"guards left active: {state.guards!r} (was {guards!r})")
        if _guard._process_guard is not process:
            bl.deactivate()
        for guard in state.guards:
            if guard not in guards:
                guard.stop()
    if patcher.refcount != refcount:
        problems.append(f"patch reference count {patcher.refcount} (was {refcount})")
    changed = differences(names, patched_names())
    if changed:
        problems.append(f"patched names not restored: {changed}")
    return problems


@contextmanager
def temporary_targets(*targets: Target) -> Iterator[None]:
    """Register extra targets for the duration of a test (no guard may be active)."""
    assert not state.guards, "register temporary targets before activating"
    patcher.register(targets)
    try:
        yield
    finally:
        with patcher.lock:
            for target in targets:
                group = patcher._targets.get(target.module, [])
                if target in group:
                    group.remove(target)
                if not group:
                    patcher._targets.pop(target.module, None)


def only(names: Iterable[str], call: str) -> list[str]:
    return [name for name in names if name == call]


def write_module(
    directory: Path, name: str, source: str, monkeypatch: pytest.MonkeyPatch
) -> ModuleType:
    """Write ``name``.py (or a package, for a dotted name) under ``directory`` and import it.

    The module counts as the user's code, or as a library's when ``directory`` is under a
    ``site-packages`` folder. ``monkeypatch`` forgets the module and the path afterwards.
    """
    *packages, leaf = name.split(".")
    folder = directory
    for package in packages:
        folder = folder / package
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").touch()
    (folder / f"{leaf}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(directory))
    importlib.invalidate_caches()
    for prefix in (".".join(name.split(".")[: i + 1]) for i in range(len(packages) + 1)):
        monkeypatch.delitem(sys.modules, prefix, raising=False)
    module = importlib.import_module(name)
    for prefix in (".".join(name.split(".")[: i + 1]) for i in range(len(packages) + 1)):
        monkeypatch.setitem(sys.modules, prefix, sys.modules[prefix])
    return module


def check_uninstalled(family: str, call: Callable[[], Any], *modules: str) -> None:
    """The family is patched while a guard is active; afterwards every original is back (``is``)
    and ``call`` on a loop reaches no guard and no observer.

    ``modules`` are imported first so that their targets are really installed.
    """
    from blockbuster_lite.catalogue import FAMILIES

    for module in modules:
        importlib.import_module(module)
    targets = FAMILIES[family]
    before = patched_names(targets)
    with bl.intercept("raise") as guard:
        during = patched_names(targets)
    assert differences(before, during), f"nothing of {family} was patched"
    assert differences(before, patched_names(targets)) == []
    seen: list[bl.Violation] = []
    saved = state.observers
    state.observers = (*saved, seen.append)
    try:
        call_on("asyncio", call)
    finally:
        state.observers = saved
    assert seen == []
    assert guard.violations == []


def marked_line(path: str, marker: str) -> int:
    """The number of the line of ``path`` that ends with the comment ``# marker``."""
    with open(path, encoding="utf-8") as source:
        for number, line in enumerate(source, 1):
            if line.rstrip().endswith(f"# {marker}") and "line_of(" not in line:
                return number
    raise AssertionError(marker)


def raised(call: Callable[[], Any]) -> bl.Violation:
    """Run ``call`` (on the loop, in raise mode); return the violation it was refused with."""
    with pytest.raises(bl.BlockingCallError) as info:
        call()
    return info.value.violation
