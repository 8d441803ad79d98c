"""The wrapper every patched call goes through: ask, decide, hand to an action.

Off the loop the wrapper answers one question (``_get_running_loop()``, or trio's run context)
and calls through. A wrapper left in place after the last guard stopped (a mock that was started
while we were active puts it back when it stops) is inert: with no guard it calls through before
any predicate runs. On the loop: the target's predicate (can this call block at all?), then the
policy's decision (where was it made: user code, machinery, an allowed module, out of scope?),
then ``actions.act`` by the innermost guard's mode. Data flows one way from here: nothing in
``actions`` or below calls back into this module.
"""

from __future__ import annotations

import sys
import time
from asyncio import _get_running_loop
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .actions import act, act_again, fold, log_failure, note_trivial
from .config import Mode
from .loop import trio_state
from .policy import Site, locate
from .repeats import FOLD_EVERY, SeenSite
from .state import exempt, reentrant, state

if TYPE_CHECKING:
    from .targets import Target

__all__ = ["checked_call", "make_handler"]

Handler = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]

# Reading an Enum member through its class costs ~100 ns on Python 3.11; the hot path uses this.
_OFF, _WARN, _LOG, _RAISE = Mode.OFF, Mode.WARN, Mode.LOG, Mode.RAISE
_BUILTIN = type(len)
_perf_counter = time.perf_counter
_getframe = sys._getframe
_reentrant, _exempt = reentrant.get, exempt.get


def make_handler(target: Target, loop_checked: bool = False) -> Handler:
    """Build the wrapt wrapper for one target: ``(wrapped, instance, args, kwargs)``.

    On the loop, a call the predicate clears (a non-blocking socket, a set event) goes straight
    through before any guard is consulted: that is the path asyncio's own transports take.
    A predicate that fails is run again by checked_call, which reports the failure.
    ``loop_checked``: wrapt only calls it with an asyncio loop running (its ``enabled`` is
    ``_get_running_loop``), so it need not ask again.
    """
    predicate = target.predicate
    call = target.call
    #: This handler's counting sites: the caller's f_lasti -> SeenSite (see checked_call).
    sites: dict[int, SeenSite] = {}

    def handler(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        __tracebackhide__ = True  # pytest: the traceback ends at the user's call
        if not loop_checked and _get_running_loop() is None:
            run_context = trio_state.run_context
            if run_context is None or "runner" not in run_context.__dict__:
                return wrapped(*args, **kwargs)
        guards = state.guards
        if not guards:  # left behind after the last guard stopped: inert
            return wrapped(*args, **kwargs)
        if predicate is not None:
            try:
                blocks = predicate(instance, args, kwargs)
            except Exception:
                blocks = True
            if not blocks:  # the call stays outside the try: its errors are the caller's
                return wrapped(*args, **kwargs)
        # A repeat at a counting site, from the very call instruction seen counting before
        # (core/repeats.py; checked_call fills ``sites``, by the caller's f_lasti, for the one
        # guard active): the counter bump without checked_call's frame, without building a
        # key, without the caller's line number (decoding a line table).
        if sites and len(guards) == 1 and not state.observers:
            caller = _getframe(1)
            seen = sites.get(caller.f_lasti)
            if (
                seen is not None
                and seen.code is caller.f_code
                and seen.owner is guards[0]
                and not _reentrant()
                and not _exempt()
            ):
                state.checked_calls += 1
                start = _perf_counter()
                try:
                    return wrapped(*args, **kwargs)
                finally:
                    end = _perf_counter()
                    pending = seen.pending
                    pending.append(end - start)
                    if len(pending) >= FOLD_EVERY or end >= seen.next_log:
                        fold(seen, call, end)
        return checked_call(target, wrapped, instance, args, kwargs, sites=sites)

    return handler


def checked_call(
    target: Target,
    wrapped: Any,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    depth: int = 2,
    sites: dict[int, SeenSite] | None = None,
) -> Any:
    """A patched call made on a loop thread: decide, then act by the innermost guard's mode.

    ``depth``: how far up the user's frame is (2: the caller of the wrapper that called this;
    3 for the fixed-slot methods' shared tail, one frame deeper). ``sites``: the calling wrapt
    handler's table of counting sites, filled here for a warn- or log-mode guard with no allow
    rules once a site counts (the handler then takes its repeats by itself)."""
    __tracebackhide__ = True
    guards = state.guards
    if not guards or reentrant.get() or exempt.get():
        return wrapped(*args, **kwargs)
    guard = guards[-1]
    if guard.mode is _OFF:
        return wrapped(*args, **kwargs)
    state.checked_calls += 1  # not atomic across threads: a count for the summary, not a ledger
    site: Site | None = None
    seen: SeenSite | None = None
    try:
        predicate = target.predicate
        blocking = predicate is None or predicate(instance, args, kwargs)
        if blocking:
            if guard._seen and not guard.allow and guard.scope is None:
                # Called straight from a user frame this guard has reported at (warn, log):
                # locate() would pick that very frame, so the counted path needs no walk.
                caller = sys._getframe(depth)
                seen = guard._seen.get((target.call, id(caller.f_code), caller.f_lineno))
            if seen is None or not seen.user:
                seen = None
                site = locate(sys._getframe(1), guard.allow, guard.scope, target.call,
                              guard.default_allow)  # fmt: skip
    except Exception as exc:  # a bug in a predicate never reaches the user's program
        log_failure(target.call, exc)
        blocking = False
    if not blocking:
        return wrapped(*args, **kwargs)
    if seen is not None:
        mode = guard.mode  # guard.effective_mode(), inlined
        if mode is _RAISE and guard.in_startup:
            mode = _WARN
        if mode is _WARN or mode is _LOG:
            if (
                seen.counting
                and type(wrapped) is _BUILTIN
                and len(guards) == 1
                and not state.observers
            ):  # act_again's counter bump, inlined: ~150 ns less
                if sites is not None and not guard.allow and guard.mode is mode:
                    guard._count_fast(sites, caller.f_lasti, seen)
                start = _perf_counter()
                try:
                    return wrapped(*args, **kwargs)
                finally:
                    end = _perf_counter()
                    pending = seen.pending
                    pending.append(end - start)
                    if len(pending) >= FOLD_EVERY or end >= seen.next_log:
                        fold(seen, target.call, end)
            return act_again(seen, target, mode, wrapped, instance, args, kwargs)
        site = locate(sys._getframe(1), guard.allow, guard.scope, target.call, guard.default_allow)
    if site is None or site.trivial is not None:
        # the machinery, an allow rule, out of scope, or known-trivial: calls made inside are too
        if site is not None:
            note_trivial(target, site)
        token = reentrant.set(True)
        try:
            return wrapped(*args, **kwargs)
        finally:
            reentrant.reset(token)
    return act(guard, target, site, wrapped, instance, args, kwargs)
