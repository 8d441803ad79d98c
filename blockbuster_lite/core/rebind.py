"""Rebinding names bound before activation, the way freezegun rebinds ``datetime``.

``from time import sleep`` (or ``_sleep = time.sleep``, ``open_ = builtins.open``, a class
attribute ``sleeper = staticmethod(time.sleep)``) copies the original object into another
namespace before ``activate()`` runs, so patching ``time.sleep`` never reaches it. On the first
activation we walk ``sys.modules`` once, and in every module's globals and the ``__dict__`` of the
classes it defines we swap each value that *is* a patched original for its replacement. Objects
that exist already and whose methods cannot be wrapped (a module-level ``threading.Lock``, an
open file) are swapped for a checked proxy around the same object, by the proxy factories the
catalogue registers. Every swap is recorded and undone exactly on the last deactivate, and only
where the name still holds what we put there: a user's later assignment is never clobbered.

What is skipped: this package, wrapt, pytest and debugger internals, and the standard library
entirely (its modules hold the originals themselves, compare them by identity, and run the event
loop; none of them is user code). Modules imported while active bind the replacement by themselves, since their
``from time import sleep`` runs after patching; on the last deactivate those are scanned once,
so that they get the originals back.

Speed: the test for a namespace is two C-level set operations over its values (``id`` against
the originals, ``type`` against the proxied types); only a namespace that hits is walked in
Python. Modules scanned before whose ``__dict__`` has not changed size are skipped.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter, methodcaller
from types import ModuleType
from typing import Any

from .report import logger

__all__ = ["ProxyFactory", "Rebinder", "register_proxy"]

#: ``(obj) -> proxy or None``: a checked stand-in sharing ``obj``'s state (None: leave it).
ProxyFactory = Callable[[Any], Any]

#: Top-level packages never rebound inside: this package, wrapt, the standard library, and the
#: test and debugging machinery whose calls are exempt anyway (core/policy.py's MACHINERY).
_MACHINERY_PACKAGES = (
    "_pytest", "pytest", "pluggy", "coverage", "pydevd", "_pydevd_bundle", "_pydev_bundle",
    "debugpy",
)  # fmt: skip
_SKIPPED_PACKAGES = frozenset(
    {"blockbuster_lite", "wrapt", "__mp_main__", *_MACHINERY_PACKAGES, *sys.stdlib_module_names}
)

#: (module, type name) -> proxy factory, filled by the catalogue; resolved at each activation
#: from the modules imported then (a type of a module never imported has no instances).
_PROXY_TABLE: dict[tuple[str, str], ProxyFactory] = {}
_PROXIES: dict[type, ProxyFactory] = {}


def register_proxy(module: str, name: str, factory: ProxyFactory) -> None:
    """Swap globals and class attributes holding a ``module.name`` instance for ``factory(obj)``."""
    _PROXY_TABLE[(module, name)] = factory


def _resolve_proxies() -> None:
    _PROXIES.clear()
    for (module_name, name), factory in _PROXY_TABLE.items():
        module = sys.modules.get(module_name)
        kind = getattr(module, name, None)
        kind = getattr(kind, "__wrapped__", kind)  # a type patched by a factory
        if isinstance(kind, type):
            _PROXIES[kind] = factory


def skipped(module_name: str) -> bool:
    return module_name.partition(".")[0] in _SKIPPED_PACKAGES


@dataclass
class _Swap:
    holder: Any  # a module's __dict__, or a class
    name: str
    old: Any
    new: Any

    def current(self) -> Any:
        if isinstance(self.holder, dict):
            return self.holder.get(self.name, _ABSENT)
        return vars(self.holder).get(self.name, _ABSENT)

    def put(self, value: Any) -> None:
        if isinstance(self.holder, dict):
            self.holder[self.name] = value
        else:
            setattr(self.holder, self.name, value)


_ABSENT = object()
# isinstance(obj, type), isinstance(obj, staticmethod) and obj.__func__, all called from C
_is_class = type.__instancecheck__.__get__(type)
_is_static = type.__instancecheck__.__get__(staticmethod)
_func_of = attrgetter("__func__")
_values_of = methodcaller("values")


@dataclass
class Rebinder:
    swaps: list[_Swap] = field(default_factory=list)
    #: module name -> (the module, its __dict__'s size) when last scanned without a hit
    _clean: dict[str, tuple[weakref.ref[ModuleType], int]] = field(default_factory=dict)
    #: modules present when the rebinding was done (the ones scanned, or known clean)
    _present: set[str] = field(default_factory=set)
    _originals: dict[int, Any] = field(default_factory=dict)  # id(replacement) -> original
    active: bool = False
    _ids: frozenset[int] = frozenset()  # the keys of the table being scanned for
    _kinds: frozenset[type] = frozenset()  # the types proxied (empty when restoring)

    def bind(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        """Swap every original in ``pairs`` (original, replacement) for its replacement."""
        table: dict[int, Any] = {}
        self._originals = {}
        for original, replacement in pairs:
            table.setdefault(id(original), replacement)
            self._originals[id(replacement)] = original
        self.active = True
        _resolve_proxies()
        self._ids, self._kinds = frozenset(table), frozenset(_PROXIES)
        modules = list(sys.modules.items())
        self._present = {name for name, _ in modules}
        for name, module in modules:
            if skipped(name) or type(module) is not ModuleType:
                continue
            self._scan(name, module, table, record=True)

    def update(self, old: Any, new: Any, original: Any) -> None:
        """A replacement was rebuilt (trio was imported): rebound names get the new one."""
        self._originals.pop(id(old), None)
        self._originals[id(new)] = original
        for swap in self.swaps:
            if swap.new is old and swap.current() is old:
                swap.put(new)
                swap.new = new

    def unbind(self) -> None:
        """Undo every recorded swap still in place; give modules imported since the originals."""
        for swap in reversed(self.swaps):
            try:
                if swap.current() is swap.new:
                    swap.put(swap.old)
            except Exception:  # a class that refuses assignment now: leave it
                logger.debug("blockbuster_lite: could not restore %s", swap.name, exc_info=True)
        self.swaps.clear()
        originals, self._originals = self._originals, {}
        if originals:
            self._ids, self._kinds = frozenset(originals), frozenset()
            for name, module in list(sys.modules.items()):
                if name in self._present or skipped(name) or type(module) is not ModuleType:
                    continue
                self._scan(name, module, originals, record=False)
                # its swaps now point back to the originals; a later activation rescans it
                self._clean.pop(name, None)
        self.active = False

    # -- scanning ---------------------------------------------------------------------------

    def _scan(self, name: str, module: ModuleType, table: dict[int, Any], record: bool) -> None:
        namespace = module.__dict__
        known = self._clean.get(name)
        if record and known is not None and known[0]() is module and known[1] == len(namespace):
            return
        try:
            hit = self._scan_namespace(namespace, table, record)
            classes = [c for c in filter(_is_class, list(namespace.values())) if c.__module__ == name]
            if classes and self._classes_hit(classes):
                for cls in classes:
                    hit = self._scan_class(cls, table, record) or hit
        except Exception:  # a strange namespace must never break activation
            logger.debug("blockbuster_lite: could not scan %s", name, exc_info=True)
            return
        if record:
            if hit:
                self._clean.pop(name, None)
            else:
                self._clean[name] = (weakref.ref(module), len(namespace))

    def _scan_namespace(self, namespace: dict[str, Any], table: dict[int, Any], record: bool) -> bool:
        values = namespace.values()
        by_id = not self._ids.isdisjoint(map(id, values))
        by_type = record and not self._kinds.isdisjoint(map(type, values))
        if not (by_id or by_type):
            return False
        for attr, value in list(namespace.items()):
            new = self._replacement(value, table, record)
            if new is not None:
                namespace[attr] = new
                if record:
                    self.swaps.append(_Swap(namespace, attr, value, new))
        return True

    def _classes_hit(self, classes: list[type]) -> bool:
        """Whether any of ``classes`` holds an original (maybe as a staticmethod) or a proxied type."""
        ids = self._ids
        namespaces = list(map(vars, classes))
        if not ids.isdisjoint(map(id, chain.from_iterable(map(_values_of, namespaces)))):
            return True
        statics = filter(_is_static, chain.from_iterable(map(_values_of, namespaces)))
        if not ids.isdisjoint(map(id, map(_func_of, statics))):
            return True
        kinds = self._kinds
        return bool(kinds) and not kinds.isdisjoint(
            map(type, chain.from_iterable(map(_values_of, namespaces)))
        )

    def _scan_class(self, cls: type, table: dict[int, Any], record: bool) -> bool:
        namespace = cls.__dict__
        values = namespace.values()
        ids = self._ids
        plain = not ids.isdisjoint(map(id, values)) or (
            record and not self._kinds.isdisjoint(map(type, values))
        )
        static = not ids.isdisjoint(map(id, map(_func_of, filter(_is_static, values))))
        if not (plain or static):
            return False
        hit = False
        for attr, value in list(namespace.items()):
            if static and type(value) is staticmethod:
                inner = table.get(id(value.__func__))
                new = None if inner is None else staticmethod(inner)
            elif plain:
                new = self._replacement(value, table, record)
            else:
                continue
            if new is None:
                continue
            try:
                setattr(cls, attr, new)
            except (TypeError, AttributeError):
                continue
            hit = True
            if record:
                self.swaps.append(_Swap(cls, attr, value, new))
        return hit

    @staticmethod
    def _replacement(value: Any, table: dict[int, Any], record: bool) -> Any:
        new = table.get(id(value))
        if new is not None or not record:
            return new
        factory = _PROXIES.get(type(value))
        if factory is None:
            return None
        try:
            return factory(value)
        except Exception:
            logger.debug("blockbuster_lite: no proxy for %r", value, exc_info=True)
            return None


rebinder = Rebinder()
