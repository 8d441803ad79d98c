"""Guards: intercept / activate / deactivate / activate_from_env / allow_blocking, and patching.

Patching is process-wide and reference-counted; guards nest and the innermost decides; the last
guard to end puts every original object back (``is`` identity).
"""

from __future__ import annotations

import asyncio
import copyreg
import os
import socket
import sqlite3
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from helpers import (
    call_on,
    calls,
    differences,
    patched_names,
    run_on,
    temporary_targets,
    write_module,
)

import blockbuster_lite as bl
from blockbuster_lite.core.config import (
    ENV_ALLOW,
    ENV_MODE,
    ENV_SCOPE,
    ENV_WATCHDOG_MS,
    settings_from_env,
)
from blockbuster_lite.core.guard import process_guard
from blockbuster_lite.core.patcher import ActivationError, patcher
from blockbuster_lite.core.state import exempt, state
from blockbuster_lite.core.targets import Target


def sleep_briefly() -> None:
    time.sleep(0.0001)


def sleep_on_loop() -> None:
    """time.sleep inside a task of a fresh asyncio loop."""
    call_on("asyncio", sleep_briefly)


def modes_seen() -> list[str]:
    return [guard.mode.value for guard in state.guards]


# -- intercept --------------------------------------------------------------------------------


def test_raise_mode_stops_the_call_before_it_runs(tmp_path: Path) -> None:
    target = tmp_path / "never-created"

    async def main() -> None:
        with pytest.raises(bl.BlockingCallError):
            os.mkdir(target)

    with bl.intercept("raise") as guard:
        asyncio.run(main())
    assert not target.exists()
    assert calls(guard) == ["os.mkdir"]
    assert guard.violations[0].duration_s is None


def test_swallowed_error_is_still_recorded() -> None:
    async def main() -> None:
        try:
            time.sleep(0.0001)
        except bl.BlockingCallError:
            return  # the application hides the problem; the guard must not
        raise AssertionError("not raised")

    with bl.intercept("raise") as guard:
        asyncio.run(main())
    assert calls(guard) == ["time.sleep"]


def test_intercept_default_mode_is_raise_and_activate_default_is_warn() -> None:
    assert bl.intercept().mode is bl.Mode.RAISE
    guard = bl.activate()
    try:
        assert guard.mode is bl.Mode.WARN
    finally:
        bl.deactivate()


def test_intercept_does_nothing_until_entered() -> None:
    original = time.sleep
    guard = bl.intercept("raise")
    assert time.sleep is original
    assert not guard.active
    sleep_on_loop()
    assert guard.violations == []


def test_async_context_manager() -> None:
    async def main() -> list[str]:
        async with bl.intercept("raise") as guard:
            with pytest.raises(bl.BlockingCallError):
                time.sleep(0.0001)
        time.sleep(0)  # the guard has ended: nothing to check
        return calls(guard)

    assert asyncio.run(main()) == ["time.sleep"]
    assert state.guards == ()


def test_decorator_on_a_sync_function_installs_for_each_call() -> None:
    original = time.sleep
    inside: list[tuple[list[str], bool]] = []

    @bl.intercept("raise")
    def scenario() -> None:
        inside.append((modes_seen(), time.sleep is original))

        async def main() -> None:
            with pytest.raises(bl.BlockingCallError):
                time.sleep(0.0001)

        asyncio.run(main())

    scenario()
    assert time.sleep is original
    scenario()
    assert inside == [(["raise"], False), (["raise"], False)]
    assert state.guards == ()


def test_decorator_on_an_async_function() -> None:
    original = time.sleep

    @bl.intercept("raise")
    async def main() -> str:
        assert modes_seen() == ["raise"]
        with pytest.raises(bl.BlockingCallError):
            time.sleep(0.0001)
        return "done"

    assert time.sleep is original
    assert asyncio.run(main()) == "done"
    assert time.sleep is original
    assert main.__name__ == "main"


def test_decorated_function_gets_a_fresh_guard_per_call() -> None:
    seen: list[bl.Guard] = []
    decorator = bl.intercept("log", allow=["some.module"])

    @decorator
    def scenario() -> None:
        seen.append(state.guards[-1])

    scenario()
    scenario()
    assert len({id(guard) for guard in seen}) == 2
    assert decorator not in seen
    assert all(guard.mode is bl.Mode.LOG for guard in seen)
    assert all([rule.text for rule in guard.allow] == ["some.module"] for guard in seen)


def test_a_guard_is_entered_once() -> None:
    guard = bl.intercept("raise")
    with guard, pytest.raises(RuntimeError, match="already active"):
        guard.start()
    assert not guard.active
    guard.stop()  # stopping an ended guard is a no-op
    assert state.guards == ()


def test_guard_reports_whether_it_is_active() -> None:
    guard = bl.intercept("warn")
    assert "inactive" in repr(guard)
    with guard:
        assert guard.active
        assert "active" in repr(guard) and "warn" in repr(guard)
    assert not guard.active


# -- nesting and reference counting -----------------------------------------------------------


def test_innermost_guard_decides_and_every_guard_records() -> None:
    with bl.intercept("raise") as outer:
        with bl.intercept("log") as inner:
            sleep_on_loop()  # log: runs, no error
        with pytest.raises(bl.BlockingCallError):
            sleep_on_loop()
    assert calls(inner) == ["time.sleep"]
    assert calls(outer) == ["time.sleep", "time.sleep"]
    assert [v.action for v in outer.violations] == [bl.Mode.LOG, bl.Mode.RAISE]


def test_inner_off_guard_silences_an_outer_raise_guard() -> None:
    with bl.intercept("raise") as outer, bl.intercept("off") as inner:
        sleep_on_loop()
    assert outer.violations == inner.violations == []


def test_nested_guards_share_one_installation() -> None:
    original = time.sleep
    with bl.intercept("raise"):
        wrapped = time.sleep
        assert patcher.refcount == 1
        with bl.intercept("warn"):
            assert patcher.refcount == 2
            assert time.sleep is wrapped  # not wrapped twice
            assert time.sleep.__wrapped__ is original  # type: ignore[attr-defined]
        assert time.sleep is wrapped
    assert patcher.refcount == 0
    assert time.sleep is original


def test_guards_may_end_out_of_order() -> None:
    original = time.sleep
    first = bl.intercept("raise").start()
    second = bl.intercept("log").start()
    first.stop()
    assert time.sleep is not original
    assert modes_seen() == ["log"]
    sleep_on_loop()  # the remaining guard (log) decides
    assert calls(second) == ["time.sleep"]
    assert first.violations == []
    second.stop()
    assert time.sleep is original


def test_every_original_object_is_back_after_the_last_guard() -> None:
    before = patched_names()
    originals = {
        "time.sleep": time.sleep,
        "socket.sendfile": vars(socket.socket)["sendfile"],
        "threading.Lock": threading.Lock,
        "sqlite3.connect": sqlite3.connect,
        "os.stat": os.stat,
        "open": open,
    }
    with bl.intercept("raise"), bl.intercept("warn"):
        during = patched_names()
        assert "recv" in vars(socket.socket)
        assert len(differences(before, during)) > 50
    assert differences(before, patched_names()) == []
    assert time.sleep is originals["time.sleep"]
    assert vars(socket.socket)["sendfile"] is originals["socket.sendfile"]
    assert "recv" not in vars(socket.socket)  # inherited from _socket.socket: removed again
    assert threading.Lock is originals["threading.Lock"]
    assert sqlite3.connect is originals["sqlite3.connect"]
    assert os.stat is originals["os.stat"]
    assert open is originals["open"]


def test_concurrent_activation_from_many_threads_is_safe() -> None:
    original = time.sleep
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def churn() -> None:
        try:
            start.wait()
            for _ in range(40):
                with bl.intercept("log"):
                    if time.sleep is original:
                        raise AssertionError("time.sleep unpatched inside a guard")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert patcher.refcount == 0
    assert state.guards == ()
    assert time.sleep is original


def test_a_long_guard_stays_installed_while_other_threads_churn() -> None:
    original = time.sleep
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(40):
                with bl.intercept("warn"):
                    pass
        except BaseException as exc:
            errors.append(exc)

    with bl.intercept("raise") as outer:
        threads = [threading.Thread(target=churn) for _ in range(4)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            assert time.sleep is not original
            time.sleep(0.001)  # no loop on this thread: never flagged
        for thread in threads:
            thread.join()
        assert modes_seen() == ["raise"]
        with pytest.raises(bl.BlockingCallError):
            sleep_on_loop()
    assert errors == []
    assert calls(outer) == ["time.sleep"]
    assert time.sleep is original


def test_violations_from_many_loop_threads_are_all_recorded() -> None:
    def worker() -> None:
        async def main() -> None:
            for _ in range(25):
                time.sleep(0.0001)

        asyncio.run(main())

    with bl.intercept("log") as guard:
        threads = [threading.Thread(target=worker, name=f"loop-{i}") for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(guard.violations) == 100
    assert {v.thread_name for v in guard.violations} == {f"loop-{i}" for i in range(4)}


# -- installation: rollback, inherited names, late imports ------------------------------------


def test_a_target_that_cannot_be_installed_rolls_everything_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = types.ModuleType("bbl_test_immutable")
    module.owner = int  # type: ignore[attr-defined]  # a built-in type: setattr raises TypeError
    monkeypatch.setitem(sys.modules, module.__name__, module)
    before = patched_names()
    original = time.sleep
    guard = bl.intercept("raise")
    broken = Target(module.__name__, "owner.bit_length", "int.bit_length")
    with temporary_targets(broken), pytest.raises(ActivationError, match="bit_length"):
        guard.start()
    assert not guard.active
    assert state.guards == ()
    assert patcher.refcount == 0
    assert patcher.applied() == []
    assert time.sleep is original
    assert differences(before, patched_names()) == []
    assert types.BuiltinFunctionType not in copyreg.dispatch_table  # no pickling hook left either
    with bl.intercept("raise"):  # and the next activation works
        assert time.sleep is not original


def test_an_inherited_attribute_is_removed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("bbl_test_inherited")

    class Base:
        def fetch(self) -> str:
            return "fetched"

    class Child(Base):
        pass

    module.Child = Child  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    with temporary_targets(Target(module.__name__, "Child.fetch", "Child.fetch")):
        with bl.intercept("log") as guard:
            assert "fetch" in vars(Child)
            assert call_on("asyncio", lambda: Child().fetch()) == "fetched"
        assert "fetch" not in vars(Child)
        assert Child.fetch is Base.fetch
    assert calls(guard) == ["Child.fetch"]


def test_a_name_replaced_by_someone_else_is_left_alone() -> None:
    original = time.sleep

    def replacement(seconds: object) -> None:
        pass

    with bl.intercept("raise"):
        time.sleep = replacement
    try:
        assert time.sleep is replacement
    finally:
        time.sleep = original
    assert patcher.applied() == []


def test_a_module_imported_while_active_is_patched_then_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "bbl_late_module"
    (tmp_path / f"{name}.py").write_text("def wait():\n    return 'waited'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    with temporary_targets(Target(name, "wait", f"{name}.wait")):
        with bl.intercept("raise") as guard:
            import bbl_late_module  # type: ignore[import-not-found]  # while active

            monkeypatch.setitem(sys.modules, name, bbl_late_module)
            assert hasattr(bbl_late_module.wait, "__wrapped__")

            async def main() -> None:
                with pytest.raises(bl.BlockingCallError):
                    bbl_late_module.wait()

            asyncio.run(main())
        assert not hasattr(bbl_late_module.wait, "__wrapped__")
        assert bbl_late_module.wait() == "waited"
    assert calls(guard) == [f"{name}.wait"]


def test_a_module_imported_after_the_guard_ended_is_not_patched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "bbl_later_module"
    with temporary_targets(Target(name, "wait", f"{name}.wait")):
        with bl.intercept("raise"):
            pass
        module = write_module(tmp_path, name, "def wait():\n    return 'waited'\n", monkeypatch)
        assert not hasattr(module.wait, "__wrapped__")
        assert call_on("asyncio", module.wait) == "waited"


# -- activate / deactivate ---------------------------------------------------------------------


def test_activate_is_idempotent() -> None:
    original = time.sleep
    first = bl.activate("raise")
    try:
        second = bl.activate("raise")
        assert second is first
        assert patcher.refcount == 1
        assert process_guard() is first
    finally:
        bl.deactivate()
    assert time.sleep is original
    assert process_guard() is None
    bl.deactivate()  # nothing active: a no-op


def test_activate_again_with_other_settings_reconfigures_in_place() -> None:
    guard = bl.activate("warn")
    try:
        again = bl.activate("raise", allow=["somewhere.py"], scope=["mypkg"])
        assert again is guard
        assert guard.mode is bl.Mode.RAISE
        assert [rule.text for rule in guard.allow] == ["somewhere.py"]
        assert guard.scope == ("mypkg",)
        assert patcher.refcount == 1
    finally:
        bl.deactivate()


def test_intercept_inside_activate_wins_and_deactivate_keeps_its_patches() -> None:
    original = time.sleep
    process = bl.activate("log")
    try:
        with bl.intercept("raise") as inner:
            with pytest.raises(bl.BlockingCallError):
                sleep_on_loop()
            bl.deactivate()
            assert time.sleep is not original  # the intercept() still needs them
            with pytest.raises(bl.BlockingCallError):
                sleep_on_loop()
        assert time.sleep is original
    finally:
        bl.deactivate()
    assert calls(inner) == ["time.sleep", "time.sleep"]
    assert calls(process) == ["time.sleep"]


def test_process_guard_catches_calls_on_loops_started_later() -> None:
    bl.activate("log")
    try:
        sleep_on_loop()
        guard = process_guard()
        assert guard is not None
        assert calls(guard) == ["time.sleep"]
    finally:
        bl.deactivate()


# -- activate_from_env -------------------------------------------------------------------------


def test_activate_from_env_unset_or_off_activates_nothing() -> None:
    assert bl.activate_from_env({}) is None
    assert bl.activate_from_env({ENV_MODE: "off"}) is None
    assert bl.activate_from_env({ENV_MODE: "  "}) is None
    assert state.guards == ()


def test_activate_from_env_reads_every_variable() -> None:
    environ = {
        ENV_MODE: " RAISE ",
        ENV_ALLOW: "pkg.module, app/legacy.py, app/routes.py:health",
        ENV_SCOPE: "app,lib.sub",
    }
    guard = bl.activate_from_env(environ)
    try:
        assert guard is not None
        assert guard.active and process_guard() is guard
        assert guard.mode is bl.Mode.RAISE
        assert [rule.text for rule in guard.allow] == [
            "pkg.module",
            "app/legacy.py",
            "app/routes.py:health",
        ]
        assert guard.scope == ("app", "lib.sub")
    finally:
        bl.deactivate()


def test_activate_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MODE, "log")
    monkeypatch.delenv(ENV_ALLOW, raising=False)
    monkeypatch.delenv(ENV_SCOPE, raising=False)
    monkeypatch.delenv(ENV_WATCHDOG_MS, raising=False)
    guard = bl.activate_from_env()
    try:
        assert guard is not None and guard.mode is bl.Mode.LOG
        sleep_on_loop()
        assert calls(guard) == ["time.sleep"]
    finally:
        bl.deactivate()


def test_watchdog_milliseconds_from_env_become_seconds() -> None:
    settings = settings_from_env({ENV_MODE: "warn", ENV_WATCHDOG_MS: "250"})
    assert settings is not None
    assert settings["watchdog"] == pytest.approx(0.25)
    settings = settings_from_env({ENV_MODE: "warn", ENV_WATCHDOG_MS: ""})
    assert settings is not None and settings["watchdog"] is None


@pytest.mark.parametrize(
    ("environ", "value", "source"),
    [
        ({ENV_MODE: "strcit"}, "'strcit'", ENV_MODE),
        ({ENV_MODE: "warn", ENV_ALLOW: "app/data.txt"}, "'app/data.txt'", ENV_ALLOW),
        ({ENV_MODE: "warn", ENV_ALLOW: "not a module"}, "'not a module'", ENV_ALLOW),
        ({ENV_MODE: "warn", ENV_SCOPE: "my-app"}, "'my-app'", ENV_SCOPE),
        ({ENV_MODE: "warn", ENV_WATCHDOG_MS: "soon"}, "'soon'", ENV_WATCHDOG_MS),
        ({ENV_MODE: "warn", ENV_WATCHDOG_MS: "-5"}, "'-5'", ENV_WATCHDOG_MS),
    ],
)
def test_a_bad_environment_value_is_named_with_its_variable(
    environ: dict[str, str], value: str, source: str
) -> None:
    with pytest.raises(bl.ConfigError) as excinfo:
        bl.activate_from_env(environ)
    assert value in str(excinfo.value)
    assert source in str(excinfo.value)
    assert state.guards == ()


def test_the_documented_mode_error_message() -> None:
    with pytest.raises(ValueError, match="invalid mode 'strcit' from BLOCKBUSTER_LITE_MODE"):
        bl.activate_from_env({ENV_MODE: "strcit"})


# -- allow_blocking ----------------------------------------------------------------------------


def test_allow_blocking_as_a_context_manager() -> None:
    async def main() -> None:
        with bl.allow_blocking():
            time.sleep(0.0001)
            with bl.allow_blocking():  # nests
                time.sleep(0.0001)
            time.sleep(0.0001)
        assert exempt.get() is False
        with pytest.raises(bl.BlockingCallError):
            time.sleep(0.0001)

    with bl.intercept("raise") as guard:
        asyncio.run(main())
    assert calls(guard) == ["time.sleep"]


@pytest.mark.parametrize("form", ["bare", "called"])
def test_allow_blocking_as_a_decorator_of_sync_functions(form: str) -> None:
    def nap() -> str:
        time.sleep(0.0001)
        return "rested"

    allowed = bl.allow_blocking(nap) if form == "bare" else bl.allow_blocking()(nap)
    assert allowed.__name__ == "nap"
    with bl.intercept("raise") as guard:
        assert call_on("asyncio", allowed) == "rested"
        with pytest.raises(bl.BlockingCallError):
            call_on("asyncio", nap)
    assert calls(guard) == ["time.sleep"]


def test_allow_blocking_as_a_decorator_of_async_functions() -> None:
    @bl.allow_blocking
    async def legacy() -> str:
        await asyncio.sleep(0)
        time.sleep(0.0001)  # after an await: still exempt
        return "ok"

    async def main() -> str:
        result = await legacy()
        with pytest.raises(bl.BlockingCallError):
            time.sleep(0.0001)
        return str(result)

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == "ok"
    assert calls(guard) == ["time.sleep"]


def test_allow_blocking_covers_only_the_current_task() -> None:
    exempt_inside = asyncio.Event()
    checked_done = asyncio.Event()

    async def exempted() -> None:
        with bl.allow_blocking():
            exempt_inside.set()
            await checked_done.wait()  # the other task runs while this one is exempt
            time.sleep(0.0001)

    async def checked() -> None:
        await exempt_inside.wait()
        try:
            time.sleep(0.0001)
        finally:
            checked_done.set()

    async def main() -> list[BaseException | None]:
        return list(await asyncio.gather(exempted(), checked(), return_exceptions=True))

    with bl.intercept("raise") as guard:
        outcomes = asyncio.run(main())
    assert outcomes[0] is None
    assert isinstance(outcomes[1], bl.BlockingCallError)
    assert len(guard.violations) == 1
    assert guard.violations[0].function.endswith("checked")


def test_allow_blocking_covers_only_the_current_thread() -> None:
    errors: list[BaseException] = []

    def other_loop_thread() -> None:
        try:
            sleep_on_loop()
        except BaseException as exc:
            errors.append(exc)

    with bl.intercept("raise") as guard, bl.allow_blocking():
        sleep_on_loop()  # the new loop copies this thread's context: exempt
        thread = threading.Thread(target=other_loop_thread)
        thread.start()
        thread.join()
    assert [type(exc) for exc in errors] == [bl.BlockingCallError]
    assert len(guard.violations) == 1


def test_allow_blocking_on_trio() -> None:
    async def main() -> None:
        with bl.allow_blocking():
            time.sleep(0.0001)
        with pytest.raises(bl.BlockingCallError):
            time.sleep(0.0001)

    with bl.intercept("raise") as guard:
        run_on("trio", main)
    assert calls(guard) == ["time.sleep"]


def test_in_startup_turns_raise_into_warn() -> None:
    with bl.intercept("raise") as guard:
        guard.in_startup = True
        with pytest.warns(bl.BlockingCallWarning):
            sleep_on_loop()
        guard.in_startup = False
        with pytest.raises(bl.BlockingCallError):
            sleep_on_loop()
    assert [v.action for v in guard.violations] == [bl.Mode.WARN, bl.Mode.RAISE]


def test_guard_clear_forgets_violations_and_reported_sites() -> None:
    with bl.intercept("warn") as guard:
        with pytest.warns(bl.BlockingCallWarning):
            sleep_on_loop()
        guard.clear()
        assert guard.violations == []
        with pytest.warns(bl.BlockingCallWarning):  # the site is reported again
            sleep_on_loop()
    assert len(guard.violations) == 1
