"""pallet.records.dataclass behaves as dataclasses.dataclass for the subset it supports: the same
classes defined both ways must construct, compare, hash, print, freeze, copy and introspect alike."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
from typing import ClassVar

import pytest

from pallet import records


def _define(deco, fld):
    @deco(frozen=True)
    class Point:
        x: int
        y: int = 0
        tags: tuple[str, ...] = fld(default_factory=tuple)
        note: str = fld(default="", compare=False, hash=False)
        KIND: ClassVar[str] = "point"

    @deco
    class Box:
        name: str
        items: list[int] = fld(default_factory=list)
        meta: dict[str, str] = fld(default_factory=dict, repr=False)
        seen: int = fld(default=0, init=False)

        def __post_init__(self) -> None:
            self.seen = len(self.items)

    @deco
    class Labeled(Box):
        label: str = "x"

    return Point, Box, Labeled


STD = _define(dataclasses.dataclass, dataclasses.field)
OURS = _define(records.dataclass, records.field)


@pytest.mark.parametrize("impl", [STD, OURS], ids=["dataclasses", "records"])
def test_same_behaviour(impl) -> None:
    Point, Box, Labeled = impl
    p = Point(1, y=2, tags=("a",), note="n")
    assert (p.x, p.y, p.tags, p.note, Point.KIND) == (1, 2, ("a",), "n", "point")
    assert repr(p) == "Point(x=1, y=2, tags=('a',), note='n')".replace("Point", p.__class__.__qualname__)
    assert p == Point(1, 2, ("a",), "other note") and p != Point(2)
    assert hash(p) == hash(Point(1, 2, ("a",)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    assert Point(1).y == 0 and Point.y == 0
    b1, b2 = Box("a"), Box("b", [1, 2])
    assert b1.items == [] and b1.items is not Box("c").items, "factories run per instance"
    assert b2.seen == 2, "__post_init__ ran"
    assert "meta" not in repr(b1)
    with pytest.raises(TypeError):
        hash(b1)
    b1.name = "changed"
    lab = Labeled("n", [1], label="y")
    assert (lab.name, lab.items, lab.label, lab.seen) == ("n", [1], "y", 1)
    assert [f.name for f in dataclasses.fields(lab)] == ["name", "items", "meta", "seen", "label"]
    assert dataclasses.is_dataclass(p)
    assert dataclasses.asdict(b2) == {"name": "b", "items": [1, 2], "meta": {}, "seen": 2}
    assert dataclasses.replace(p, y=9) == Point(1, 9, ("a",))
    assert records.replace(p, y=9) == Point(1, 9, ("a",))
    assert records.replace(lab, label="z").label == "z"
    assert copy.copy(p) == p and copy.deepcopy(b2) == b2
    with pytest.raises(TypeError):
        Point()  # x is required
    with pytest.raises(TypeError):
        Point(1, 2, (), "", "extra")
    with pytest.raises(TypeError):
        Point(1, bogus=1)
    with pytest.raises(TypeError):
        Point(1, x=1)
    assert Point.__match_args__ == ("x", "y", "tags", "note")


def test_pickle_and_class_errors() -> None:
    assert pickle.loads(pickle.dumps(_Pickled(1))) == _Pickled(1)
    with pytest.raises(ValueError, match="mutable default"):
        @records.dataclass
        class Bad:
            items: list[int] = []
    with pytest.raises(TypeError, match="follows default"):
        @records.dataclass
        class Order:
            a: int = 0
            b: int
    with pytest.raises(TypeError):
        records.dataclass(order=True)


@records.dataclass(frozen=True)
class _Pickled:
    v: int


def test_defining_records_imports_no_dataclasses() -> None:
    code = ("import sys; from pallet import records\n"
            "@records.dataclass(frozen=True)\nclass A:\n    x: int = records.field(default=1)\n"
            "a = records.replace(A(), x=2)\n"
            "assert a.x == 2 and 'dataclasses' not in sys.modules and 'typing' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_asdict_matches_dataclasses_without_importing_them() -> None:
    """records.asdict gives dataclasses.asdict's result (deep: nested records in lists, tuples
    and dicts; copies of mutable values) and imports nothing for records."""

    def sample(impl: tuple) -> dict:
        point, box, labeled = impl
        return {"p": point(1, 2, ("a",)), "boxes": [box("in", [1, 2], {"k": "v"}),
                                                    (labeled("out", [3], label="L"),)]}

    std = sample(STD)
    expected = {"p": dataclasses.asdict(std["p"]),
                "boxes": [dataclasses.asdict(std["boxes"][0]), (dataclasses.asdict(std["boxes"][1][0]),)]}
    assert records.asdict(sample(OURS)) == expected
    box = OURS[1]("x", [1])
    d = records.asdict(box)
    d["items"].append(2)
    assert box.items == [1], "a copy, not the record's own list"
    code = ("import sys; from pallet import records\n"
            "@records.dataclass\nclass A:\n    x: list = records.field(default_factory=list)\n"
            "assert records.asdict(A([1])) == {'x': [1]}\n"
            "assert 'dataclasses' not in sys.modules and 'copy' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
