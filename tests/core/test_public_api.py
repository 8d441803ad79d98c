"""The public API is a contract (DESIGN.md): exactly these names, with these shapes."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import blockbuster_lite as bl

DOCUMENTED = {
    "BlockingCallError",
    "BlockingCallWarning",
    "Mode",
    "Violation",
    "activate",
    "activate_from_env",
    "allow_blocking",
    "deactivate",
    "intercept",
}


def test_every_documented_name_is_exported() -> None:
    assert set(bl.__all__) >= DOCUMENTED
    for name in bl.__all__:
        assert getattr(bl, name) is not None, name


def test_all_lists_no_private_names_and_no_duplicates() -> None:
    assert len(set(bl.__all__)) == len(bl.__all__)
    assert all(not name.startswith("_") for name in bl.__all__)


def test_exceptions_and_warnings() -> None:
    assert issubclass(bl.BlockingCallError, RuntimeError)
    assert issubclass(bl.BlockingCallWarning, RuntimeWarning)
    assert issubclass(bl.ConfigError, ValueError)


def test_mode_values() -> None:
    assert {mode.name: mode.value for mode in bl.Mode} == {
        "OFF": "off",
        "LOG": "log",
        "WARN": "warn",
        "RAISE": "raise",
        "OFFLOAD": "offload",
    }
    assert issubclass(bl.Mode, str)


def test_violation_is_a_frozen_dataclass_with_the_documented_fields() -> None:
    assert dataclasses.is_dataclass(bl.Violation)
    fields = {field.name for field in dataclasses.fields(bl.Violation)}
    documented = {
        "call",
        "filename",
        "lineno",
        "function",
        "stack",
        "action",
        "thread_name",
        "task_name",
        "duration_s",
        "context",
    }
    assert documented <= fields
    violation = bl.Violation("time.sleep", "app.py", 3, "handler")
    with pytest.raises(dataclasses.FrozenInstanceError):
        violation.call = "other"  # type: ignore[misc]
    assert violation.duration_s is None
    assert violation.context == {}


def test_signatures_take_settings_as_keywords() -> None:
    for function in (bl.intercept, bl.activate):
        parameters = inspect.signature(function).parameters
        assert next(iter(parameters)) == "mode"
        for name in ("allow", "scope", "watchdog"):
            assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, (function, name)
    assert inspect.signature(bl.intercept).parameters["mode"].default == "raise"
    assert inspect.signature(bl.activate).parameters["mode"].default == "warn"


def test_intercept_returns_a_guard_usable_every_documented_way() -> None:
    guard = bl.intercept()
    assert isinstance(guard, bl.Guard)
    for method in ("__enter__", "__exit__", "__aenter__", "__aexit__", "__call__"):
        assert callable(getattr(guard, method))
    assert guard.violations == []


def test_asgi_middleware_is_importable() -> None:
    from blockbuster_lite.asgi import BlockBusterMiddleware

    assert callable(BlockBusterMiddleware)


def test_violation_equality_ignores_stack_and_context() -> None:
    first = bl.Violation("time.sleep", "app.py", 3, "handler", stack=("a",), context={"x": 1})
    second = bl.Violation("time.sleep", "app.py", 3, "handler", stack=("b",))
    assert first == second
    assert hash(first) == hash(second)
