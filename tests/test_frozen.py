"""``pmemd.frozen``: a ``@frozen`` class behaves as its ``@dataclass(frozen=True)`` twin."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any, ClassVar

import pytest

from pmemd.frozen import frozen


@frozen
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class PointDC:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = field(default_factory=dict, compare=False, repr=False)


@frozen(kw_only=True)
class Base:
    kind: ClassVar[str] = "base"
    summary: str

    @property
    def label(self) -> str:
        return f"{self.kind}: {self.summary}"


@frozen(kw_only=True)
class Child(Base):
    kind = "child"
    ns: str
    size: int = 1


@frozen
class Checked:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("n < 0")


@frozen
class OwnEq:
    a: int
    b: int

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OwnEq) and self.a == other.a

    def __hash__(self) -> int:
        return hash(self.a)


def test_a_frozen_class_is_a_dataclass_with_the_same_fields() -> None:
    assert is_dataclass(Point)
    assert [(f.name, f.default, f.compare) for f in fields(Point)] == \
           [(f.name, f.default, f.compare) for f in fields(PointDC)]


@pytest.mark.parametrize("args, kwargs", [((1,), {}), ((1, 2), {}), ((), {"x": 1, "tags": ("a",)}),
                                          ((1,), {"y": 5, "extra": {"k": 1}})])
def test_construction_equality_hash_repr_and_asdict_match_the_dataclass(args: tuple[Any, ...],
                                                                         kwargs: dict[str, Any]) -> None:
    ours, theirs = Point(*args, **kwargs), PointDC(*args, **kwargs)
    assert repr(ours) == repr(theirs).replace("PointDC", "Point")
    assert asdict(ours) == asdict(theirs)
    assert ours == Point(*args, **kwargs) and hash(ours) == hash(Point(*args, **kwargs))
    assert hash(ours) == hash(theirs)  # both hash the tuple of the compared fields
    assert ours != theirs  # type: ignore[comparison-overlap]  # equality stays within one class
    assert replace(ours, y=9) == Point(ours.x, 9, ours.tags) and replace(ours, y=9).extra is ours.extra


def test_compare_false_fields_take_no_part_in_equality() -> None:
    assert Point(1, extra={"a": 1}) == Point(1, extra={"b": 2})
    assert Point(1) != Point(2) and Point(1, tags=("a",)) != Point(1)


def test_default_factories_give_each_instance_its_own_value() -> None:
    a, b = Point(1), Point(2)
    assert a.extra == {} and a.extra is not b.extra


@pytest.mark.parametrize("cls, args, kwargs, message", [
    (Point, (), {}, "missing required argument: 'x'"),
    (Point, (1, 2, (), {}, 5), {}, "takes 4 positional arguments but 5 were given"),
    (Point, (1,), {"x": 2}, "got multiple values for argument 'x'"),
    (Point, (1,), {"z": 2}, "unexpected keyword argument 'z'"),
    (Child, ("s", "n"), {}, "takes 0 positional arguments but 2 were given"),
    (Child, (), {"summary": "s"}, "missing required argument: 'ns'"),
])
def test_bad_construction_raises_type_error_like_the_generated_init(cls: Any, args: tuple[Any, ...],
                                                                    kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        cls(*args, **kwargs)


def test_assignment_and_deletion_raise_frozen_instance_error() -> None:
    p = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.x
    with pytest.raises(dataclasses.FrozenInstanceError):
        object.__getattribute__(p, "__setattr__")("new", 1)


def test_inheritance_keyword_only_fields_and_class_variables() -> None:
    c = Child(summary="s", ns="fast")
    assert [f.name for f in fields(Child)] == ["summary", "ns", "size"]  # ClassVar is not a field
    assert (c.kind, c.label, c.size) == ("child", "child: s", 1)
    assert repr(c) == "Child(summary='s', ns='fast', size=1)"
    assert c != Base(summary="s") and Base(summary="s") == Base(summary="s")
    assert replace(c, size=3).size == 3 and asdict(c) == {"summary": "s", "ns": "fast", "size": 1}


def test_post_init_runs_after_the_fields_are_set() -> None:
    assert Checked(1).n == 1
    with pytest.raises(ValueError, match="n < 0"):
        Checked(-1)


def test_a_class_s_own_eq_and_hash_are_kept() -> None:
    assert OwnEq(1, 2) == OwnEq(1, 3) and hash(OwnEq(1, 2)) == hash(1)


def test_copies_are_equal() -> None:
    c = Child(summary="s", ns="fast", size=2)
    assert copy.copy(c) == c and copy.deepcopy(c) == c
