"""The per-call decision about *where* a call came from: user code, a library, machinery.

The decision walks the caller's frames, but every frame is classified once per code object and
cached, so a call site seen before costs one dictionary lookup per frame and never re-reads
filenames or module names.

The cache is keyed by the code object's identity, not its value: code objects compare equal
across files when their name, bytecode and constants match, and each file must keep its own
verdict (its filename, its module's allow rules and scope). Each entry holds the code object
itself, so its id cannot be reused by another object while the entry lives. The cache is bounded
(``CODE_CACHE_SIZE`` entries; when full the older half is dropped), so a program that keeps
creating code (``exec``, templates compiled per request) cannot grow it without end.
"""

from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import NamedTuple

from .config import AllowRule

__all__ = ["KNOWN_TRIVIAL", "CodeInfo", "KnownTrivial", "Site", "code_info", "in_packages", "locate"]


# --- frame classification -------------------------------------------------------------------

USER, LIBRARY, STDLIB, INTERNAL = 0, 1, 2, 3

# the package root (this file is in core/): every module of blockbuster_lite is INTERNAL
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_STDLIB_DIRS = tuple(
    {
        os.path.realpath(p) + os.sep
        for p in (sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib"))
        if p
    }
    | {os.path.abspath(p) + os.sep for p in (sysconfig.get_path("stdlib"),) if p}
)

# The framework's own machinery: a blocking call reached through one of these, before any user
# frame, is not the user's doing. Each entry is (module, qualified function or None for all).
# Machinery is an operation the runtime must do and the user cannot avoid, not a whole package:
# the import system loading a module is exempt, ``importlib.metadata`` scanning ``sys.path``,
# ``importlib.resources``/``pkgutil.get_data`` reading files and mimetypes loading its tables
# are I/O like any other, and pydantic's calls into them are reported.
MACHINERY: tuple[tuple[str, str | None], ...] = (
    ("importlib._bootstrap", None),  # the import system loading a module reads files
    ("importlib._bootstrap_external", None),
    ("importlib", "import_module"),
    ("importlib", "reload"),
    ("importlib", "invalidate_caches"),
    ("zipimport", None),
    ("linecache", None),  # traceback rendering reads source lines
    ("traceback", None),
    ("tokenize", None),
    ("inspect", "getsourcelines"),
    ("inspect", "getsourcefile"),
    ("inspect", "getfile"),
    ("inspect", "findsource"),
    ("inspect", "getmodule"),
    ("logging", None),  # handlers writing to streams and files
    ("warnings", None),
    ("pdb", None),  # the debugger
    ("bdb", None),
    ("pydevd", None),
    ("debugpy", None),
    ("_pytest", None),  # pytest and coverage internals
    ("pytest", None),
    ("pluggy", None),
    ("coverage", None),
    ("threading", "Thread.start"),  # waits for the new thread to signal it started
    # executor bookkeeping: starting a worker thread (a user's shutdown(wait=True) is reported)
    ("concurrent.futures.thread", "ThreadPoolExecutor._adjust_thread_count"),
    ("concurrent.futures.thread", "ThreadPoolExecutor.submit"),
    # a few bytes into the process pool's self-pipe, drained by its manager thread
    ("concurrent.futures.process", "_ThreadWakeup.wakeup"),
    # redis.asyncio looks its own version up (importlib.metadata) for every new connection: real
    # I/O, but no user can avoid it and it would flag every redis.asyncio program; kept exempt
    # until a curated default-allow list exists for such known library calls
    ("redis.utils", "get_lib_version"),
    # reading a Connection: checked as Connection.recv/poll when it would wait (catalogue/waits)
    ("multiprocessing.connection", "Connection._recv"),
    ("asyncio.base_events", None),  # the loop's own selector, executor and self-pipe
    ("asyncio.selector_events", None),
    ("asyncio.unix_events", None),
    ("asyncio.events", None),
    ("asyncio.runners", None),
    ("selectors", None),
    # anyio's pytest plugin runs trio as a guest of a plain host loop on the test thread; between
    # guest ticks (trio's run context still set) that loop waits on a queue.Queue for work
    ("anyio._backends._trio", "TestRunner._call_in_runner_task"),
    ("anyio._backends._trio", "TestRunner.__exit__"),
    # Starlette's TestClient hands the app the request body it reads from the test's own
    # request (an upload file the test opened): in a server that body comes off the socket
    ("starlette.testclient", "_TestClientTransport.handle_request.<locals>.receive"),
    ("fastapi.dependencies.utils", None),  # first-request endpoint introspection
    ("fastapi.routing", "APIRoute.__init__"),
    ("typing", None),
    ("uvicorn.config", None),
    ("gunicorn", None),  # the arbiter's control-socket loop, the worker heartbeat (os.utime)
    ("sysconfig", None),
    ("site", None),
    ("ssl", "create_default_context"),
    ("ssl", "SSLContext.load_verify_locations"),
    ("certifi", None),
)

# Frames that run the loop's callbacks and tasks. The search for a call's site stops at the first
# one: the frames above it started the loop, they did not make the call. (Without this, a task or
# callback with no user frame would always reach the loop's modules and be exempt as machinery.)
LOOP_DRIVERS: frozenset[tuple[str, str]] = frozenset(
    {
        ("asyncio.events", "Handle._run"),
        ("asyncio.base_events", "BaseEventLoop._run_once"),
        ("asyncio.base_events", "BaseEventLoop.run_forever"),
        ("asyncio.base_events", "BaseEventLoop.run_until_complete"),
        ("asyncio.runners", "Runner.run"),  # uvloop: the loop itself has no Python frames
        ("asyncio.runners", "run"),
        ("trio._core._run", "unrolled_run"),
    }
)



@dataclass(frozen=True)
class KnownTrivial:
    """Library calls known to be short that users cannot change: debug-logged, never reported.

    A blocking call matches when one of ``calls`` is made (directly or through the stdlib, e.g.
    ``pathlib``) from ``function`` of ``module``, with no user frame in between. The table is on
    by default; ``default_allow=False`` / ``BLOCKBUSTER_LITE_DEFAULT_ALLOW=0`` checks them too.
    """

    module: str
    functions: tuple[str, ...]
    calls: frozenset[str]
    reason: str


_STATS = frozenset({"os.stat", "os.lstat", "os.access"})

#: Add an entry only for a call measured on a real application (and say how short it was).
KNOWN_TRIVIAL: tuple[KnownTrivial, ...] = (
    KnownTrivial(
        "asyncpg.connect_utils",
        ("_read_password_file", "_read_password_from_pgpass"),
        _STATS | {"open", "file.read"},
        "asyncpg looks up ~/.pgpass on every connect without a password: a stat (and a read of "
        "a small file if it exists), ~10 us; measured with asyncpg 0.32",
    ),
    KnownTrivial(
        "asyncpg.connect_utils",
        ("_dot_postgresql_path", "_parse_connect_dsn_and_args"),
        _STATS,
        "asyncpg resolves ~/.postgresql/* client certificate paths and ~/.pg_service.conf on "
        "every connect: a few stats, ~10 us; measured with asyncpg 0.32",
    ),
)

_TRIVIAL_BY_CODE: dict[tuple[str, str], tuple[frozenset[str], str]] = {
    (entry.module, function): (entry.calls, entry.reason)
    for entry in KNOWN_TRIVIAL
    for function in entry.functions
}

_MACHINERY_MODULES: dict[str, tuple[str | None, ...]] = {}
for _module, _function in MACHINERY:
    _MACHINERY_MODULES.setdefault(_module, ())
    _MACHINERY_MODULES[_module] += (_function,)


@dataclass(frozen=True)
class CodeInfo:
    """What we know about one code object, computed once."""

    kind: int
    module: str
    filename: str
    qualname: str
    machinery: bool
    loop_driver: bool = False
    #: (calls, reason) when this code is a KNOWN_TRIVIAL library function
    trivial: tuple[frozenset[str], str] | None = None


#: Most code objects the decision cache keeps; the older half goes when it is full.
CODE_CACHE_SIZE = 4096

#: ``id(code) -> (code, info)``: the strong reference keeps the id from being reused.
_code_cache: dict[int, tuple[CodeType, CodeInfo]] = {}


def _is_machinery(module: str, qualname: str) -> bool:
    name = module
    while name:
        functions = _MACHINERY_MODULES.get(name)
        if functions is not None and (None in functions or qualname in functions):
            return True
        name = name.rpartition(".")[0]
    return False


def _classify(code: CodeType, module: str) -> CodeInfo:
    filename = code.co_filename
    qualname: str = getattr(code, "co_qualname", code.co_name)
    if filename.startswith(_PACKAGE_DIR) or module.startswith("blockbuster_lite"):
        kind = INTERNAL
    elif "site-packages" in filename or "dist-packages" in filename:
        kind = LIBRARY
    elif filename.startswith("<frozen ") or filename.startswith(_STDLIB_DIRS):
        kind = STDLIB
    else:
        kind = USER
    info = CodeInfo(
        kind,
        module,
        filename,
        qualname,
        _is_machinery(module, qualname),
        (module, qualname) in LOOP_DRIVERS,
        _TRIVIAL_BY_CODE.get((module, qualname)) if kind == LIBRARY else None,
    )
    cache = _code_cache
    if len(cache) >= CODE_CACHE_SIZE:
        newer = list(cache.items())[len(cache) // 2 :]
        cache.clear()
        cache.update(newer)
    cache[id(code)] = (code, info)
    return info


def code_info(frame: FrameType) -> CodeInfo:
    code = frame.f_code
    entry = _code_cache.get(id(code))
    if entry is not None and entry[0] is code:
        return entry[1]
    return _classify(code, frame.f_globals.get("__name__") or "")


class Site(NamedTuple):
    """The frame a blocking call is attributed to (a tuple: built on every checked call)."""

    frame: FrameType
    info: CodeInfo
    #: the innermost library frame between the call and ``frame`` (or ``frame`` itself when no
    #: user frame is on the stack), not counting the patched call's own library (the user's
    #: ``r.set()`` goes through redis' frames to ``redis.Redis.execute_command``); None when
    #: user code made the call directly
    library: Site | None = None
    #: the KNOWN_TRIVIAL reason when a known-trivial library call (only with default_allow)
    trivial: str | None = None


def locate(
    frame: FrameType | None,
    allow: tuple[AllowRule, ...],
    scope: tuple[str, ...] | None,
    call: str = "",
    default_allow: bool = True,
) -> Site | None:
    """Find the user frame for a call whose caller is ``frame``; None if the call is exempt.

    Exempt means: reached through the framework's machinery before any user frame, allowed by a
    rule on any frame of the stack, or (with a scope) made with no frame of the scoped packages
    anywhere on its stack (a user's sync handler that FastAPI's router calls is in
    ``scope=["fastapi"]``). Frames are classified once per code object; the walk runs only for
    calls that would really block. The returned site also names the innermost library frame,
    and (``default_allow``) whether the call ``call`` is a KNOWN_TRIVIAL one: the caller then
    lets it through.
    """
    trivial: str | None = None
    first_library: Site | None = None
    inner_library: Site | None = None  # the first one not of the patched call's own package
    first_other: Site | None = None
    site: Site | None = None
    in_scope = scope is None
    while frame is not None:
        info = code_info(frame)
        if info.kind != INTERNAL:
            if site is None:
                if info.loop_driver:  # no user frame: report the library (or the callback)
                    if first_library is None and first_other is None:
                        first_other = Site(frame, info)
                    break
                if info.machinery:
                    return None
                if info.kind == USER:
                    site = Site(frame, info)
                elif info.kind == LIBRARY:
                    if first_library is None:
                        first_library = Site(frame, info)
                    if inner_library is None and not _own_package(info.module, call):
                        inner_library = Site(frame, info)
                    known = info.trivial
                    if known is not None and default_allow and trivial is None and call in known[0]:
                        trivial = known[1]
                elif first_other is None:
                    first_other = Site(frame, info)
            if not in_scope and in_packages(info.module, scope):
                in_scope = True
            if allow and any(r.matches(info.module, info.filename, info.qualname) for r in allow):
                return None
            if site is not None and in_scope and not allow:
                break
        frame = frame.f_back
    if not in_scope:
        return None
    found = site or first_library or first_other
    if found is None or (inner_library is None and trivial is None):
        return found
    return Site(found.frame, found.info, inner_library, trivial)


def _own_package(module: str, call: str) -> bool:
    """A frame of the library whose API is the patched call (``redis.commands.core`` around
    ``redis.Redis.execute_command``): calling that API is the user's doing, not the library's."""
    package = module.partition(".")[0]
    return bool(package) and call.partition(".")[0] == package


def in_packages(module: str, packages: tuple[str, ...] | None) -> bool:
    """``module`` belongs to a package of the scope and to none it excludes (``-pkg`` entries,
    blockbuster's ``excluded_modules``: a test runner inside the scoped package)."""
    if not packages:
        return False
    hit = False
    for package in packages:
        if package[0] == "-":
            package = package[1:]
            if module == package or module.startswith(package + "."):
                return False
        elif not hit and (module == package or module.startswith(package + ".")):
            hit = True
    return hit
