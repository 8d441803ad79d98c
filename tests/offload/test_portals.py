"""The portals offload mode gives new tasks: reused greenlets, on greenback's protocol.

Every task runs in a real greenlet and its blocking calls in real worker threads; nothing is
mocked. See blockbuster_lite/offload/greenlets.py for why the greenlets are pooled.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import greenback
import greenlet
import pytest

import blockbuster_lite as bl
from blockbuster_lite import offload
from blockbuster_lite.offload import greenlets

ORIGINAL_SLEEP = time.sleep
tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="unset")


@pytest.fixture(autouse=True)
def _restored() -> Any:
    yield
    assert time.sleep is ORIGINAL_SLEEP


def in_offload_loop(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main`` on a fresh asyncio loop in offload mode; tasks it creates get portals."""

    async def runner() -> Any:
        offload.install_task_factory()
        return await main()

    with bl.intercept("offload"):
        return asyncio.run(runner())


def test_tasks_run_in_pooled_greenlets_and_a_finished_ones_serves_the_next() -> None:
    async def which_greenlet() -> Any:
        time.sleep(0.01)  # offloaded: the task suspends in its greenlet
        return greenlet.getcurrent()

    async def main() -> tuple[Any, Any, Any, int, int]:
        first = await asyncio.create_task(which_greenlet())
        idle_after_first = greenlets.pool_size()
        second = await asyncio.create_task(which_greenlet())
        return first, second, greenlet.getcurrent(), idle_after_first, greenlets.pool_size()

    first, second, main_greenlet, idle_after_first, idle_after_second = in_offload_loop(main)
    assert first is not main_greenlet  # the task's steps ran in a child greenlet
    assert second is first  # ... and the second task's in the same one, taken from the pool
    assert idle_after_first >= 1
    assert idle_after_second == idle_after_first


def test_greenback_sees_the_portal_and_its_await_works_there() -> None:
    def sync_helper() -> int:
        return greenback.await_(asyncio.sleep(0.001, result=7))

    async def task() -> tuple[bool, int, int, bool]:
        has = greenback.has_portal()
        via_greenback = sync_helper()
        await greenback.ensure_portal()  # already has one: a no-op, the portal still works
        via_ours = greenlets.await_(asyncio.sleep(0.001, result=8))
        return has, via_greenback, via_ours, greenback.has_portal()

    async def main() -> Any:
        return await asyncio.create_task(task())

    assert in_offload_loop(main) == (True, 7, 8, True)


def test_return_values_and_exceptions_cross_the_portal_unchanged() -> None:
    error = ValueError("from the task")

    async def returns() -> dict[str, int]:
        await asyncio.sleep(0)
        return {"answer": 42}

    async def raises() -> None:
        await asyncio.sleep(0)
        raise error

    async def stops() -> None:
        raise StopIteration  # a coroutine turns it into RuntimeError, portal or not

    async def main() -> list[Any]:
        return await asyncio.gather(
            asyncio.create_task(returns()),
            asyncio.create_task(raises()),
            asyncio.create_task(stops()),
            return_exceptions=True,
        )

    value, raised, stopped = in_offload_loop(main)
    assert value == {"answer": 42}
    assert raised is error
    assert type(stopped) is RuntimeError and isinstance(stopped.__cause__, StopIteration)


def test_a_task_cancelled_in_an_offloaded_call_leaves_its_greenlet_reusable() -> None:
    async def sleeper() -> None:
        time.sleep(2)  # offloaded; cancelled long before it ends

    async def after() -> str:
        time.sleep(0.01)
        return "ran"

    async def main() -> tuple[bool, float, str]:
        task = asyncio.create_task(sleeper())
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            cancelled = True
        else:
            cancelled = False
        elapsed = time.perf_counter() - start
        return cancelled, elapsed, await asyncio.create_task(after())

    cancelled, elapsed, result = in_offload_loop(main)
    assert cancelled
    assert elapsed < 1.0  # at once, not when the worker's 2 s sleep ends
    assert result == "ran"


class Payload:
    pass


def test_an_idle_greenlet_keeps_nothing_of_the_task_it_ran() -> None:
    refs: list[weakref.ref[Payload]] = []

    async def fails() -> None:
        payload = Payload()  # referenced from the traceback's frame
        refs.append(weakref.ref(payload))
        time.sleep(0.001)
        raise KeyError("done")

    async def main() -> int:
        with pytest.raises(KeyError):
            await asyncio.create_task(fails())
        return greenlets.pool_size()

    idle = in_offload_loop(main)
    gc.collect()
    assert idle >= 1  # the greenlet that ran the task is pooled...
    assert refs[0]() is None  # ... and holds neither the exception nor the task's frames


def test_context_variables_follow_each_task_and_do_not_leak_into_the_next() -> None:
    async def first() -> tuple[str, str]:
        inherited = tag.get()
        tag.set("first")
        time.sleep(0.001)  # offloaded: the worker runs in a copy of the task's context
        return inherited, tag.get()

    async def second() -> str:
        time.sleep(0.001)
        return tag.get()

    async def main() -> tuple[tuple[str, str], str, str]:
        tag.set("parent")
        got_first = await asyncio.create_task(first())
        tag.set("parent again")
        got_second = await asyncio.create_task(second())  # same pooled greenlet
        return got_first, got_second, tag.get()

    assert in_offload_loop(main) == (("parent", "first"), "parent again", "parent again")


def test_each_thread_keeps_its_own_pool() -> None:
    seen: dict[str, Any] = {}

    async def task() -> Any:
        time.sleep(0.001)
        return greenlet.getcurrent()

    async def main() -> Any:
        return await asyncio.create_task(task())

    def other_thread() -> None:
        seen["other"] = in_offload_loop(main)
        seen["other idle"] = greenlets.pool_size()

    here = in_offload_loop(main)
    idle_here = greenlets.pool_size()
    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(30)
    assert seen["other"] is not here
    assert seen["other idle"] >= 1
    assert greenlets.pool_size() == idle_here  # the other thread took nothing from this pool


def test_the_pool_keeps_at_most_pool_max_idle_greenlets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(greenlets, "POOL_MAX", 3)

    async def task() -> None:
        time.sleep(0.01)

    async def main() -> int:
        await asyncio.gather(*(asyncio.create_task(task()) for _ in range(10)))
        return greenlets.pool_size()

    def fresh_thread() -> None:  # an empty pool to start from
        seen.append(in_offload_loop(main))

    seen: list[int] = []
    thread = threading.Thread(target=fresh_thread)
    thread.start()
    thread.join(30)
    assert seen == [3]


def test_a_nested_greenlet_can_wait_through_the_portal() -> None:
    """As SQLAlchemy's async bridge does: sync code in a greenlet of its own awaits."""

    def in_nested_greenlet() -> int:
        first = greenback.await_(asyncio.sleep(0.001, result=1))
        return first + greenlets.await_(asyncio.sleep(0.001, result=2))

    async def task() -> tuple[int, bool]:
        nested = greenlet.greenlet(in_nested_greenlet)
        result = nested.switch()
        return result, nested.dead

    async def main() -> Any:
        return await asyncio.create_task(task())

    assert in_offload_loop(main) == (3, True)


def test_greenbacks_internals_not_as_expected_select_its_own_portals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    impl = sys.modules["greenback._impl"]
    assert greenlets._task_portals() is impl.task_portals  # type: ignore[attr-defined]
    monkeypatch.delattr(impl, "trampoline")
    assert greenlets._task_portals() is None
    monkeypatch.undo()
    monkeypatch.setattr(impl, "task_portals", [])
    assert greenlets._task_portals() is None


def test_greenbacks_own_portal_offloads_as_the_pooled_one_does() -> None:
    async def task() -> tuple[str, bool]:
        time.sleep(0.01)
        return "offloaded", greenback.has_portal()

    async def main() -> tuple[str, bool]:
        return await greenlets._greenback_portal(task())

    with bl.intercept("offload") as guard:
        assert asyncio.run(main()) == ("offloaded", True)
    assert guard.violations[-1].action is bl.Mode.OFFLOAD
