"""``python -m blockbuster_lite [options] -- COMMAND ...``: run COMMAND with the sanitizer on.

The runner validates its options, sets the ``BLOCKBUSTER_LITE_*`` variables and replaces itself
with COMMAND (``os.execvp``); the start-up hook then activates the sanitizer in COMMAND's
interpreter and in every worker process it starts. COMMAND may be a program on PATH
(``uvicorn app:app``, ``gunicorn ...``), a Python script (``app.py``) or ``-m module``; the last
two run with this interpreter. Options not given keep the variables' current values.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import site
import sys
import sysconfig
from collections.abc import Callable, Sequence
from typing import NoReturn

from ..core.config import (
    ENV_ALLOW,
    ENV_MODE,
    ENV_SCOPE,
    ENV_WATCHDOG_MS,
    ConfigError,
    Mode,
    parse_allow,
    parse_mode,
    parse_scope,
    parse_watchdog_ms,
)
from ..core.guard import require_offload
from .startup import ENV_STRICT_STARTUP, ENV_SUMMARY

HOOK_FILE = "blockbuster_lite.pth"


def _checked(parse: Callable[[str, str], object], option: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            parse(value, option)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value.strip()

    return check


def _parse_mode(value: str, source: str) -> Mode:
    mode = parse_mode(value, source)
    if mode is Mode.OFFLOAD:
        require_offload(source)
    return mode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m blockbuster_lite",
        description="Run COMMAND with blockbuster_lite active in it and in its worker processes.",
        epilog="example: python -m blockbuster_lite --mode warn --summary -- uvicorn app:app",
    )
    modes = ", ".join(mode.value for mode in Mode)
    parser.add_argument("--mode", default="warn", type=_checked(_parse_mode, "--mode"),
                        help=f"{modes} (default: warn)")  # fmt: skip
    parser.add_argument("--allow", action="append", default=[], metavar="RULE",
                        type=_checked(parse_allow, "--allow"),
                        help="allow rule(s), comma-separated: module, path/file.py, "
                             "path/file.py:function; repeatable")  # fmt: skip
    parser.add_argument("--scope", metavar="PACKAGES", type=_checked(parse_scope, "--scope"),
                        help="comma-separated packages: only calls made from them are checked")  # fmt: skip
    parser.add_argument("--watchdog-ms", metavar="N",
                        type=_checked(parse_watchdog_ms, "--watchdog-ms"),
                        help="also report event-loop stalls longer than N milliseconds")  # fmt: skip
    parser.add_argument("--strict-startup", action="store_true",
                        help="raise mode raises during server start-up too (no start-up grace)")  # fmt: skip
    parser.add_argument("--summary", action="store_true",
                        help="print each blocking call site with count and time at exit "
                             "(the default; kept for scripts)")  # fmt: skip
    parser.add_argument("--no-summary", action="store_true",
                        help="no exit summary (BLOCKBUSTER_LITE_SUMMARY=0)")  # fmt: skip
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    return parser


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The variables the options ask for."""
    env = {ENV_MODE: args.mode}
    if args.allow:
        env[ENV_ALLOW] = ",".join(args.allow)
    if args.scope is not None:
        env[ENV_SCOPE] = args.scope
    if args.watchdog_ms is not None:
        env[ENV_WATCHDOG_MS] = args.watchdog_ms
    if args.strict_startup:
        env[ENV_STRICT_STARTUP] = "1"
    if args.summary:
        env[ENV_SUMMARY] = "1"
    if args.no_summary:
        env[ENV_SUMMARY] = "0"
    return env


_BARE_PYTHON = re.compile(r"python(3(\.\d+)?)?")


def command_line(command: Sequence[str]) -> list[str]:
    """COMMAND as execvp wants it: scripts and ``-m module`` run with this interpreter.

    So does a bare ``python``/``python3``/``python3.N``: without an activated virtualenv the
    one on PATH is often another interpreter, without blockbuster_lite, and the program would
    run unchecked without a word. A path (``/usr/bin/python3``) is run as given.
    """
    if command[0] == "-m" or (command[0].endswith(".py") and os.path.isfile(command[0])):
        return [sys.executable, *command]
    if _BARE_PYTHON.fullmatch(command[0]):
        return [sys.executable, *command[1:]]
    own = environment_script(command[0])
    if own is not None:
        return [own, *command[1:]]
    return list(command)


def script_directories() -> list[str]:
    """Where this interpreter's environment installs console scripts (``bin/``, ``Scripts\\``)."""
    directories = [os.path.dirname(sys.executable), sysconfig.get_path("scripts")]
    return list(dict.fromkeys(d for d in directories if d))


def environment_script(name: str) -> str | None:
    """``name``'s console script in this environment, when PATH does not find it (a virtualenv
    that is not activated: ``.venv/bin/python -m blockbuster_lite -- uvicorn app:app``)."""
    if os.sep in name or (os.altsep and os.altsep in name) or shutil.which(name) is not None:
        return None
    for directory in script_directories():
        found = shutil.which(name, path=directory)
        if found is not None:
            return found
    return None


def hook_installed() -> bool:
    directories = [*site.getsitepackages(), site.getusersitepackages()]
    return any(os.path.isfile(os.path.join(d, HOOK_FILE)) for d in directories)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("no COMMAND given (python -m blockbuster_lite [options] -- COMMAND ...)")
    if not hook_installed():
        print(
            f"blockbuster_lite: warning: {HOOK_FILE} is not in this interpreter's site-packages; "
            "reinstall blockbuster_lite or the sanitizer will not start in COMMAND",
            file=sys.stderr,
        )
    os.environ.update(environment(args))
    line = command_line(command)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(line[0], line)
    except OSError as exc:
        print(f"blockbuster_lite: cannot run {line[0]!r}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(127) from None


if __name__ == "__main__":
    main()
