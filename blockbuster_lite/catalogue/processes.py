"""Subprocesses and waiting for child processes."""

from __future__ import annotations

import os
from typing import Any

from ..core.targets import Target
from ._predicates import argument, waits

ADVICE = (
    "use await asyncio.create_subprocess_exec() / anyio.run_process(), "
    "or offload with await anyio.to_thread.run_sync(...)"
)


def _wait3_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    options = argument(args, kwargs, 0, "options")
    return not (isinstance(options, int) and options & os.WNOHANG)


def _waitid_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    options = argument(args, kwargs, 2, "options")
    return not (isinstance(options, int) and options & os.WNOHANG)


# Bound at import, before any activation: a predicate must not go through a patched function.
_waitid = getattr(os, "waitid", None)


def _exited(pid: Any) -> bool:
    """True when the child has exited but is not reaped yet, so waiting for it cannot block.

    trio and anyio's trio backend learn that a child exited (pidfd, waitid with WNOWAIT) and
    then reap it with ``Popen.wait()`` on the loop thread; that must not be flagged.
    """
    if _waitid is None or not isinstance(pid, int):
        return False
    try:
        return _waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped: Popen.wait() returns at once
        return True
    except OSError:
        return False


def _waits_for_child(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """waitpid/wait4: not with WNOHANG, nor for a given child that has already exited."""
    options = argument(args, kwargs, 1, "options")
    if isinstance(options, int) and options & os.WNOHANG:
        return False
    pid = argument(args, kwargs, 0, "pid")
    return not (isinstance(pid, int) and pid > 0 and _exited(pid))


def _popen_wait_waits(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return (
        instance.returncode is None
        and waits(argument(args, kwargs, 0, "timeout"))
        and not _exited(instance.pid)
    )


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
