"""Subprocesses and waiting for child processes."""

from __future__ import annotations

import os
from typing import Any

from .._patching import Target
from ._predicates import argument, waits

ADVICE = (
    "use await asyncio.create_subprocess_exec() / anyio.run_process(), "
    "or offload with await anyio.to_thread.run_sync(...)"
)


def _waits_for_child(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    options = argument(args, kwargs, 1, "options")
    return not (isinstance(options, int) and options & os.WNOHANG)


def _wait3_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    options = argument(args, kwargs, 0, "options")
    return not (isinstance(options, int) and options & os.WNOHANG)


def _waitid_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    options = argument(args, kwargs, 2, "options")
    return not (isinstance(options, int) and options & os.WNOHANG)


def _popen_wait_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return instance.returncode is None and waits(argument(args, kwargs, 0, "timeout"))


def _popen_communicate_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return waits(argument(args, kwargs, 1, "timeout"))


TARGETS = (
    *(
        Target("subprocess", name, f"subprocess.{name}", None, ADVICE)
        for name in ("run", "call", "check_call", "check_output", "getoutput", "getstatusoutput")
    ),
    Target("subprocess", "Popen.wait", "subprocess.Popen.wait", _popen_wait_waits, ADVICE),
    Target(
        "subprocess",
        "Popen.communicate",
        "subprocess.Popen.communicate",
        _popen_communicate_waits,
        ADVICE,
    ),
    Target("os", "system", "os.system", None, ADVICE),
    Target("os", "popen", "os.popen", None, ADVICE),
    Target("os", "wait", "os.wait", None, ADVICE),
    Target("os", "waitpid", "os.waitpid", _waits_for_child, ADVICE),
    Target("os", "wait3", "os.wait3", _wait3_waits, ADVICE),
    Target("os", "wait4", "os.wait4", _waits_for_child, ADVICE),
    Target("os", "waitid", "os.waitid", _waitid_waits, ADVICE),
)
