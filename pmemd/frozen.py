"""``@frozen``: frozen value types that are cheap to define.

A ``@frozen`` class is a dataclass to everything that reads one (``dataclasses.fields``,
``replace``, ``asdict``, ``is_dataclass``; mypy, through ``dataclass_transform``) and behaves
as ``@dataclass(frozen=True)`` does: keyword (and, unless ``kw_only``, positional) construction
with defaults and ``default_factory``, equality and hashing by field values within one class,
a ``Name(field=value, ...)`` repr, ``FrozenInstanceError`` on assignment.

The difference is where its methods come from. ``@dataclass`` writes the source of
``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__`` and ``__delattr__`` for
each class and compiles it with ``exec``: about 1.4 ms per class on Python 3.11, and pmemd
defines some sixty value types at import, which made class creation a quarter of the start-up
of every command and of the daemon's way to READY. Here the methods are the same six functions
for every class, reading a per-class table of fields; only construction pays a little
(a loop instead of straight-line code), and pmemd builds few values per pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["frozen"]

T = TypeVar("T", bound=type)
_MISSING = dataclasses.MISSING


@overload
def frozen(cls: T, /) -> T: ...
@overload
def frozen(*, kw_only: bool = False) -> Callable[[T], T]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def frozen(cls: T | None = None, /, *, kw_only: bool = False) -> T | Callable[[T], T]:
    """Make ``cls`` a frozen dataclass whose methods are shared (see the module's doc)."""

    def wrap(c: T) -> T:
        if c.__doc__ is None:
            c.__doc__ = c.__name__  # dataclass would build one with inspect.signature
        dataclasses.dataclass(c, init=False, repr=False, eq=False, kw_only=kw_only)  # sets fields, returns c
        fields = dataclasses.fields(c)
        init = [f for f in fields if f.init]
        positional = [f for f in init if not f.kw_only]
        c.__frozen_init__ = tuple((f.name, f.default, f.default_factory)  # type: ignore[attr-defined]
                                 for f in (*positional, *(f for f in init if f.kw_only)))
        c.__frozen_positional__ = len(positional)  # type: ignore[attr-defined]
        c.__frozen_compare__ = tuple(f.name for f in fields if f.compare)  # type: ignore[attr-defined]
        c.__frozen_repr__ = tuple(f.name for f in fields if f.repr)  # type: ignore[attr-defined]
        own = {name for name in _METHODS if name in c.__dict__}
        if c.__dict__.get("__hash__", _MISSING) is None and "__eq__" in own:
            own.discard("__hash__")  # the None Python puts there for a class that defines __eq__
        for name, method in _METHODS.items():
            if name not in own:  # what the class defines itself stays, as with @dataclass
                setattr(c, name, method)
        return c

    return wrap if cls is None else wrap(cls)


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    if len(args) > cls.__frozen_positional__:
        raise TypeError(f"{cls.__qualname__}() takes {cls.__frozen_positional__} positional arguments "
                        f"but {len(args)} were given")
    for i, (name, default, factory) in enumerate(cls.__frozen_init__):
        if i < len(args):
            if name in kwargs:
                raise TypeError(f"{cls.__qualname__}() got multiple values for argument {name!r}")
            v = args[i]
        elif name in kwargs:
            v = kwargs.pop(name)
        elif default is not _MISSING:
            v = default
        elif factory is not _MISSING:
            v = factory()
        else:
            raise TypeError(f"{cls.__qualname__}() missing required argument: {name!r}")
        object.__setattr__(self, name, v)
    if kwargs:
        raise TypeError(f"{cls.__qualname__}() got an unexpected keyword argument {next(iter(kwargs))!r}")
    post = getattr(self, "__post_init__", None)
    if post is not None:
        post()


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in type(self).__frozen_compare__)


def _eq(self: Any, other: object) -> object:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _repr(self: Any) -> str:
    cls = type(self)
    return f"{cls.__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in cls.__frozen_repr__)})"


def _setattr(self: Any, name: str, _value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


_METHODS: dict[str, Callable[..., Any]] = {
    "__init__": _init, "__eq__": _eq, "__hash__": _hash, "__repr__": _repr,
    "__setattr__": _setattr, "__delattr__": _delattr,
}
