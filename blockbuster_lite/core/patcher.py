"""Targets (what to patch) and the reference-counted, reversible installation of their wrappers.

A target names a module and a dotted attribute path. Installing wraps the original object in a
``wrapt.FunctionWrapper`` (or a target-specific replacement, for C types that cannot be wrapped)
and remembers whether the attribute lived in the owner's own ``__dict__``; uninstalling restores
the exact original object, or deletes the attribute again when it had been inherited. Modules that
are not imported yet are patched when they are imported (wrapt's post-import hooks), never
imported by us.
"""

from __future__ import annotations

import functools
import sys
import threading
import types
from asyncio import _get_running_loop
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import wrapt

from . import loopstart
from .hotpath import make_handler
from .loop import note_trio_imported, on_loop_thread, trio_state
from .methods import make_method
from .rebind import rebinder
from .report import logger
from .targets import Predicate, Target
from .transparent import Wrapper, shadow, unshadow

__all__ = ["Predicate", "Target", "patcher"]

@dataclass
class _Applied:
    target: Target
    owner: Any
    name: str
    had_own: bool
    original: Any
    replacement: Any
    asyncio_only: bool = False  # a wrapt wrapper enabled by asyncio's running loop alone


_MISSING = object()


class ActivationError(RuntimeError):
    """A target could not be patched; everything patched in that attempt was rolled back."""


_PLAIN_METHODS = (types.FunctionType, types.MethodDescriptorType, types.WrapperDescriptorType)


def _build(target: Target, owner: Any, original: Any) -> tuple[Any, bool]:
    """The replacement for ``original``, and whether it checks asyncio loops only.

    Module-level functions become ``wrapt.FunctionWrapper``s whose ``enabled`` is asyncio's C
    ``_get_running_loop``: off the loop wrapt calls the original from C, with no Python frame.
    Once trio is imported they are rebuilt with ``on_loop_thread``, which also sees trio runs.
    Methods on classes become plain functions (see ``make_method``), named after where they are
    installed so that pickle finds them there (``socket.socket.send``).
    """
    if target.replace is not None:  # a Wrapper gated by loop_gate() is rebuilt for trio too
        replacement = target.replace(original)
        gate: Any = None
        if isinstance(replacement, wrapt.FunctionWrapper):
            gate = replacement._self_enabled
        return replacement, gate is _get_running_loop
    if isinstance(owner, type) and isinstance(original, _PLAIN_METHODS):
        method = functools.update_wrapper(make_method(target, original), original)
        method.__module__, method.__qualname__ = target.module, target.path
        return method, False
    if trio_state.run_context is None:
        enabled: Any = _get_running_loop
        asyncio_only = True
    else:
        enabled, asyncio_only = on_loop_thread, False
    location = (target.module, target.path)
    handler = make_handler(target, loop_checked=asyncio_only)
    return Wrapper(original, handler, enabled, location), asyncio_only


def _static_lookup(owner: Any, name: str) -> tuple[bool, Any]:
    own = vars(owner)
    if name in own:
        return True, own[name]
    if isinstance(owner, type):
        for klass in owner.__mro__[1:]:
            if name in vars(klass):
                return False, vars(klass)[name]
    raise AttributeError(name)


def _resolve(module: Any, target: Target, ours: dict[int, _Applied]) -> _Applied | None:
    """Find the target's owner and original, and build its replacement (None: no such name).

    Finding one of our own replacements there (left behind: a mock started while we were active
    put it back after the last guard stopped), we take its original, never wrap it again, and
    reuse it when it still fits.
    """
    *parents, name = target.path.split(".")
    owner = module
    try:
        for part in parents:
            owner = getattr(owner, part)
        had_own, original = _static_lookup(owner, name)
    except AttributeError:
        logger.debug("blockbuster_lite: %s has no %s", target.module, target.path)
        return None
    previous = ours.get(id(original))
    if previous is not None and previous.replacement is original:
        if previous.owner is owner:
            had_own = previous.had_own
        if previous.target is target and not (
            previous.asyncio_only and trio_state.run_context is not None
        ):
            return _Applied(
                target, owner, name, had_own, previous.original, original, previous.asyncio_only
            )
        original = previous.original
    replacement, asyncio_only = _build(target, owner, original)
    return _Applied(target, owner, name, had_own, original, replacement, asyncio_only)


def _unchanged(module: Any, applied: _Applied) -> bool:
    """A replacement built before still fits: same owner, same original, same loop knowledge."""
    if applied.asyncio_only and trio_state.run_context is not None:
        return False
    owner = module
    for part in applied.target.path.split(".")[:-1]:
        owner = getattr(owner, part, None)
    if owner is not applied.owner:
        return False
    current = vars(owner).get(applied.name, _MISSING)
    if current is applied.replacement:  # left behind after the last guard stopped
        return True
    return current is (applied.original if applied.had_own else _MISSING)


class Patcher:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._targets: dict[str, list[Target]] = {}
        self._applied: dict[tuple[str, str], _Applied] = {}
        self._hooked: set[str] = set()
        #: Replacements built before, reused while their original is unchanged (activation is
        #: then a few attribute look-ups and assignments).
        self._built: dict[tuple[str, str], _Applied] = {}
        #: Every replacement ever installed, by id (the entry keeps it alive, so ids stay
        #: unique): to recognise our own wrapper where a mock put it back.
        self._ours: dict[int, _Applied] = {}
        self.refcount = 0

    def register(self, targets: Iterable[Target]) -> None:
        with self._lock:
            for target in targets:
                self._targets.setdefault(target.module, []).append(target)

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def acquire(self) -> None:
        with self._lock:
            if self.refcount == 0:
                self._install_all()
            self.refcount += 1

    def release(self) -> None:
        with self._lock:
            if self.refcount <= 0:
                return
            self.refcount -= 1
            if self.refcount == 0:
                try:
                    rebinder.unbind()
                finally:
                    self._uninstall(list(self._applied.values()))
                    unshadow()
                    loopstart.uninstall()

    def registered(self) -> int:
        """How many targets are known (patched now, or when their module is imported)."""
        with self._lock:
            return sum(len(targets) for targets in self._targets.values())

    def applied(self) -> list[str]:
        return sorted(f"{a.target.module}:{a.target.path}" for a in self._applied.values())

    def _install_all(self) -> None:
        note_trio_imported()
        installed: list[_Applied] = []
        try:
            for module_name, targets in self._targets.items():
                module = sys.modules.get(module_name)
                if module is not None:
                    installed.extend(self._install(module, targets))
        except BaseException:
            self._uninstall(installed)
            unshadow()
            raise
        try:
            rebinder.bind((a.original, a.replacement) for a in installed)
        except Exception:  # never fatal: the patched attributes themselves are in place
            logger.exception("blockbuster_lite: could not rebind names bound before activation")
        loopstart.install()
        for module_name in [*self._targets, "trio"]:
            if module_name not in self._hooked:
                self._hooked.add(module_name)
                wrapt.register_post_import_hook(self._on_import, module_name)

    def _on_import(self, module: Any) -> None:
        if module.__name__ == "trio":
            note_trio_imported()
            self._rebuild_for_trio()
            return
        with self._lock:
            if self.refcount == 0:
                return
            try:
                self._install(module, self._targets.get(module.__name__, []))
            except Exception:
                logger.exception("blockbuster_lite: could not patch %s on import", module.__name__)

    def _rebuild_for_trio(self) -> None:
        """Swap wrappers that only know asyncio loops for ones that also see trio runs."""
        with self._lock:
            self._built = {k: v for k, v in self._built.items() if not v.asyncio_only}
            for key, item in list(self._applied.items()):
                if not item.asyncio_only or vars(item.owner).get(item.name) is not item.replacement:
                    continue
                replacement, asyncio_only = _build(item.target, item.owner, item.original)
                setattr(item.owner, item.name, replacement)
                rebinder.update(item.replacement, replacement, item.original)
                self._applied[key] = self._built[key] = _Applied(
                    item.target, item.owner, item.name, item.had_own, item.original,
                    replacement, asyncio_only,
                )  # fmt: skip
                self._ours.setdefault(id(replacement), self._applied[key])

    def _install(self, module: Any, targets: list[Target]) -> list[_Applied]:
        done: list[_Applied] = []
        try:
            for target in targets:
                key = (target.module, target.path)
                if key in self._applied:
                    continue
                applied = self._built.get(key)
                if applied is None or applied.target is not target or not _unchanged(module, applied):
                    applied = _resolve(module, target, self._ours)
                    if applied is None:
                        continue
                try:
                    setattr(applied.owner, applied.name, applied.replacement)
                except (TypeError, AttributeError) as exc:
                    raise ActivationError(
                        f"could not patch {target.module}.{target.path}: {exc}"
                    ) from exc
                self._applied[key] = self._built[key] = applied
                self._ours.setdefault(id(applied.replacement), applied)
                done.append(applied)
        except BaseException:
            self._uninstall(done)
            raise
        shadow(applied.original for applied in done)
        return done

    def _uninstall(self, applied: list[_Applied]) -> None:
        for item in reversed(applied):
            self._applied.pop((item.target.module, item.target.path), None)
            current = vars(item.owner).get(item.name)
            if current is not item.replacement:
                logger.warning(
                    "blockbuster_lite: %s.%s was replaced by someone else while patched; "
                    "leaving it as it is",
                    item.target.module,
                    item.target.path,
                )
                continue
            if item.had_own:
                setattr(item.owner, item.name, item.original)
            else:
                delattr(item.owner, item.name)


patcher = Patcher()
