"""Values are recorded eagerly as JSON, with cycles and oversize values cut, never raising."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from decimal import Decimal

import numpy as np
import pandas as pd
import pydantic
from hypothesis import given, settings
from hypothesis import strategies as st

import assay
from assay.tracing.serialize import CYCLE_MARKER, dumps


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: list


class Message(pydantic.BaseModel):
    role: str
    content: str


def test_common_types_become_natural_json():
    value = {
        "model": Message(role="user", content="hi"),
        "dc": Point(1, [2]),
        "enum": Colour.RED,
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "day": dt.date(2026, 1, 2),
        "id": uuid.UUID(int=1),
        "dec": Decimal("1.5"),
        "set": {3},
        "tuple": (1, 2),
        "bytes": b"abc",
        "nan": float("nan"),
    }
    data = json.loads(dumps(value, 10_000))
    assert data["model"] == {"role": "user", "content": "hi"}
    assert data["dc"] == {"x": 1, "y": [2]}
    assert data["enum"] == "red"
    assert data["when"] == "2026-01-02T03:04:05Z"
    assert data["day"] == "2026-01-02"
    assert data["id"] == "00000000-0000-0000-0000-000000000001"
    assert data["set"] == [3]
    assert data["tuple"] == [1, 2]
    assert data["nan"] == "NaN"
    assert isinstance(data["bytes"], str)


def test_numpy_and_pandas_values():
    value = {
        "arr": np.arange(3),
        "f32": np.float32(1.5),
        "i64": np.int64(7),
        "bool": np.bool_(True),
        "frame": pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
        "series": pd.Series([1.0, 2.0], index=["p", "q"]),
        "ts": pd.Timestamp("2026-01-01"),
    }
    data = json.loads(dumps(value, 10_000))
    assert data["arr"] == [0, 1, 2]
    assert data["f32"] == 1.5
    assert data["i64"] == 7
    assert data["bool"] is True
    assert data["frame"] == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert data["series"] == {"p": 1.0, "q": 2.0}
    assert data["ts"].startswith("2026-01-01")


def test_cycles_are_cut_with_a_marker():
    a: list = [1]
    a.append(a)
    d: dict = {"k": 1}
    d["self"] = d
    p = Point(1, [])
    p.y.append(p)
    assert json.loads(dumps(a, 1000)) == [1, CYCLE_MARKER]
    assert json.loads(dumps(d, 1000)) == {"k": 1, "self": CYCLE_MARKER}
    assert json.loads(dumps(p, 1000)) == {"x": 1, "y": [CYCLE_MARKER]}


def test_odd_objects_become_their_repr_and_broken_reprs_are_survived():
    class Plain:
        def __repr__(self):
            return "<Plain>"

    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

    data = json.loads(dumps({"p": Plain(), "b": Broken(), "f": len}, 1000))
    assert data["p"] == "<Plain>"
    assert data["b"] == "<unrepresentable Broken>"
    assert "len" in data["f"]


def test_oversize_values_keep_their_shape_and_show_a_marker():
    value = {"doc": "x" * 50_000, "k": 3, "items": list(range(5_000))}
    text = dumps(value, 2_000)
    assert len(text.encode()) <= 2_000
    data = json.loads(text)
    assert data["k"] == 3
    assert "truncated by assay" in data["doc"]
    assert "truncated by assay" in data["items"][-1]


def test_a_huge_string_is_cut_to_the_limit():
    text = dumps("é" * 100_000, 1_000)
    assert len(text.encode()) <= 1_000
    assert "truncated by assay" in json.loads(text)


nested = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=8), children, max_size=6)
    | st.tuples(children, children)
    | st.sets(st.integers(), max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(value=nested, limit=st.integers(min_value=64, max_value=4_000))
def test_dumps_never_raises_and_always_gives_json_within_the_limit(value, limit):
    text = dumps(value, limit)
    json.loads(text)
    assert len(text.encode()) <= max(limit, 200)


def test_recorded_values_do_not_change_when_the_caller_mutates_them(tracing, fetch):
    @assay.trace
    def f(items):
        items.append("added inside")
        return items

    data = ["original"]
    out = f(data)
    out.append("added after")
    span = fetch().spans[0]
    assert span.inputs == {"items": ["original"]}
    assert span.outputs == ["original", "added inside"]


def test_generator_items_are_recorded_as_yielded(tracing, fetch):
    @assay.trace
    def gen():
        item = {"n": 1}
        yield item
        item["n"] = 2  # mutating after yield must not rewrite the record
        yield item

    list(gen())
    assert fetch().spans[0].outputs == [{"n": 1}, {"n": 2}]


def test_max_value_bytes_applies_to_traced_values(db_uri, fetch):
    assay.configure(store=db_uri, max_value_bytes=500)

    @assay.trace
    def big(text):
        return text * 2

    big("y" * 5_000)
    span = fetch().spans[0]
    assert "truncated by assay" in span.inputs["text"]
    assert "truncated by assay" in span.outputs


def test_unserialisable_and_cyclic_traced_values_do_not_break_the_call(tracing, fetch):
    cyc: dict = {}
    cyc["me"] = cyc

    class Weird:
        def __repr__(self):
            raise ValueError("nope")

    @assay.trace
    def f(a, b):
        return a, b

    assert f(cyc, Weird())[0] is cyc
    span = fetch().spans[0]
    assert span.inputs["a"] == {"me": CYCLE_MARKER}
    assert span.inputs["b"] == "<unrepresentable Weird>"
