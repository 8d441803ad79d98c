"""Wrappers and checked objects that copy and pickle like the objects they stand for.

Code that never heard of the sanitizer pickles functions to send them to a process pool, copies
objects that happen to hold a lock, and prints what it holds. Everything we put in place of an
original behaves as the original would:

* ``Wrapper`` (a ``wrapt.FunctionWrapper``) pickles by reference, to the receiver's object at the
  original's name: ``pickle.loads(pickle.dumps(time.sleep))`` is the receiver's ``time.sleep``,
  patched or not. While the name is bound to the wrapper the pickle is byte for byte the
  original's; otherwise it is ``pkgutil.resolve_name("time:sleep")``, which needs nothing of ours
  on the receiving side. ``copy.copy`` and ``copy.deepcopy`` return the wrapper itself, as they
  return a function; ``repr`` is the original's. A bound method pickles as
  ``getattr(instance, name)``, like a bound method.
* While patched, an original built-in function captured before activation (``partial(time.sleep,
  1)`` built at import time) still pickles: pickle would look it up by name and find our wrapper
  there, so ``shadow`` registers a ``copyreg`` reducer that refers to the name instead
  (``pkgutil.resolve_name``); ``unshadow`` removes it when the last guard stops. Python-function
  originals cannot be helped this way (pickle never asks copyreg about functions).
* The checked subclasses of C types (sqlite3's and psycopg2's connections and cursors, built by
  ``checked_class``) pickle by reference to the class they stand for, and their instances reduce
  as instances of it: ``reduce_as`` swaps the class back in, and a refusal keeps the original's
  exception and message (``TypeError: cannot pickle 'sqlite3.Connection' object``).
"""

from __future__ import annotations

import copy
import copyreg
import pkgutil
import sys
import types
from collections.abc import Iterable
from typing import Any, SupportsIndex

import wrapt

_HEAPTYPE = 1 << 9

__all__ = (
    "BoundWrapper",
    "CheckedClass",
    "Wrapper",
    "checked_class",
    "lookup",
    "reduce_as",
    "reduce_by_name",
    "shadow",
    "type_name",
    "unshadow",
)


def lookup(module: str, qualname: str) -> Any:
    """The object at ``module.qualname`` in an already imported module; LookupError if none."""
    value: Any = sys.modules.get(module)
    if value is None:
        raise LookupError(module)
    try:
        for part in qualname.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise LookupError(f"{module}:{qualname}") from None
    return value


def reduce_by_name(obj: Any, module: str, qualname: str) -> str | tuple[Any, ...]:
    """Pickle ``obj`` as a reference to ``module.qualname`` (see the module docstring)."""
    try:
        bound_here = getattr(obj, "__module__", None) == module and lookup(module, qualname) is obj
    except LookupError:
        bound_here = False
    if bound_here:  # pickle's own global reference, exactly what the original pickles to
        return qualname
    return pkgutil.resolve_name, (f"{module}:{qualname}",)


def _name_of(obj: Any) -> tuple[str, str] | None:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        return module, qualname
    return None


class BoundWrapper(wrapt.BoundFunctionWrapper[Any, Any]):
    """A ``Wrapper`` bound to an instance: pickles and copies like a bound method."""

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        instance = self._self_instance
        if instance is None:  # looked up on the class: the function itself
            return self._self_parent.__reduce_ex__(protocol)
        return getattr, (instance, self.__wrapped__.__name__)

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        instance = self._self_instance
        if instance is None or isinstance(self.__wrapped__, types.BuiltinMethodType):
            return self  # copy treats built-in methods as immutable
        return getattr(copy.deepcopy(instance, memo), self.__wrapped__.__name__)


class Wrapper(wrapt.FunctionWrapper[Any, Any]):
    """The wrapper of a patched function: transparent to pickle and copy.

    ``location`` is ``(module, dotted path)`` where we install it, the reference used when the
    original's own name does not lead back to the original (or to us).
    """

    __bound_function_wrapper__ = BoundWrapper

    def __init__(
        self,
        wrapped: Any,
        wrapper: Any,
        enabled: Any = None,
        location: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(wrapped, wrapper, enabled)
        self._self_location = location

    def _reference(self) -> tuple[str, str] | None:
        """The name to pickle by: one bound to us if any (the original's own name first, whose
        pickle is then byte for byte the original's), else the original's, else our location."""
        original = self.__wrapped__
        names = [name for name in (_name_of(original), self._self_location) if name is not None]
        for wanted in (self, original):
            for name in names:
                try:
                    if lookup(*name) is wanted:
                        return name
                except LookupError:
                    pass
        return names[-1] if names else None

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        reference = self._reference()
        if reference is None:  # nothing to refer to: refuse as the original does
            return self.__wrapped__.__reduce_ex__(protocol)
        return reduce_by_name(self, *reference)

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


_BUILTIN = types.BuiltinFunctionType
#: Original built-ins whose name holds our wrapper while patched, by id.
_shadowed: dict[int, Any] = {}
_previous_reducer: Any = None


def _reduce_builtin(function: Any) -> str | tuple[Any, ...]:
    if _shadowed.get(id(function)) is function:
        name = _name_of(function)
        if name is not None:
            try:
                found = lookup(*name)
            except LookupError:
                found = function
            if found is not function:
                return pkgutil.resolve_name, (f"{name[0]}:{name[1]}",)
    previous = _previous_reducer
    return previous(function) if previous is not None else function.__reduce__()  # type: ignore[no-any-return]


def shadow(originals: Iterable[Any]) -> None:
    """Let these originals pickle by name while our wrappers hold their names."""
    global _previous_reducer
    for original in originals:
        if isinstance(original, _BUILTIN):
            _shadowed[id(original)] = original
    current = copyreg.dispatch_table.get(_BUILTIN)
    if current is not _reduce_builtin:
        _previous_reducer = current
        copyreg.dispatch_table[_BUILTIN] = _reduce_builtin


def unshadow() -> None:
    """Undo ``shadow`` (the last guard stopped)."""
    global _previous_reducer
    _shadowed.clear()
    if copyreg.dispatch_table.get(_BUILTIN) is _reduce_builtin:
        if _previous_reducer is None:
            del copyreg.dispatch_table[_BUILTIN]
        else:
            copyreg.dispatch_table[_BUILTIN] = _previous_reducer
        _previous_reducer = None


class CheckedClass(type):
    """The metaclass of ``checked_class``'s classes: they pickle as the class they stand for."""

    __stands_for__: type


def _reduce_checked_class(cls: CheckedClass) -> str | tuple[Any, ...]:
    original = cls.__stands_for__
    return reduce_by_name(cls, original.__module__, original.__qualname__)


copyreg.pickle(CheckedClass, _reduce_checked_class)


def checked_class(
    name: str, bases: tuple[type, ...], namespace: dict[str, Any], stands_for: type
) -> type:
    """``type(name, bases, namespace)`` for a checked subclass standing for ``stands_for``.

    ``pickle.loads(pickle.dumps(type(conn)))`` is then the receiver's ``stands_for``; a base with
    a metaclass of its own keeps it (and pickles as a checked class would not).
    """
    if not all(type(base) in (type, CheckedClass) for base in bases):
        return type(name, bases, namespace)
    cls = CheckedClass(name, bases, namespace)
    cls.__stands_for__ = stands_for
    return cls


def type_name(cls: type, c_types: tuple[type, ...]) -> str:
    """The name CPython's messages give ``cls``: dotted for the library's C types."""
    if cls in c_types and cls.__module__ != "builtins":
        return f"{cls.__module__}.{cls.__qualname__}"
    return cls.__name__


def reduce_as(
    obj: Any, protocol: SupportsIndex, cls: type, original: type, original_name: str
) -> Any:
    """``obj.__reduce_ex__(protocol)`` as if ``obj`` (of our subclass ``cls``) were ``original``.

    The original class's own ``__reduce__``/``__getstate__`` run as usual; the class in the result
    is swapped back to ``original``, and a refusal names ``original_name`` as CPython would.
    """
    if protocol.__index__() < 2 and getattr(type(obj), "__reduce__", None) is object.__reduce__:
        # copyreg._reduce_ex, which names obj.__class__: refuse where it refuses the original
        base = next((b for b in original.__mro__ if not b.__flags__ & _HEAPTYPE), object)
        if base is original:
            raise TypeError(f"cannot pickle {original.__name__!r} object")
    try:
        reduced = super(cls, obj).__reduce_ex__(protocol)  # type: ignore[arg-type]
    except TypeError as exc:
        if str(exc) == f"cannot pickle {cls.__name__!r} object":
            raise TypeError(f"cannot pickle {original_name!r} object") from None
        raise
    if isinstance(reduced, tuple) and len(reduced) > 1 and isinstance(reduced[1], tuple):
        arguments = tuple(original if value is cls else value for value in reduced[1])
        reduced = (reduced[0], arguments, *reduced[2:])
    return reduced
