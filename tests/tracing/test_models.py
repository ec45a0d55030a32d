"""Trace, TraceInfo, Span: exact round trips and tree helpers."""

from __future__ import annotations

import json

import pytest

import assay
from assay import Span, Trace, TraceInfo


@pytest.fixture
def stored_trace(tracing, fetch) -> Trace:
    @assay.trace(span_type="TOOL")
    def tool(x):
        return {"x": x, "nested": [1, {"a": None}]}

    @assay.trace(span_type="AGENT")
    def agent(q):
        assay.update_current_trace(tags={"t": "1"}, metadata={"m": "2"})
        with assay.start_span("think", attributes={"list": [1, 2], "obj": {"k": "v"}}) as s:
            s.add_event("note", attributes={"n": 1})
        try:
            with assay.start_span("fails"):
                raise ValueError("x")
        except ValueError:
            pass
        return tool(q)

    agent("hello")
    return fetch()


def test_round_trips_are_exact(stored_trace):
    as_dict = stored_trace.to_dict()
    assert Trace.from_dict(as_dict) == stored_trace
    assert Trace.from_dict(as_dict).to_dict() == as_dict
    text = stored_trace.to_json()
    assert Trace.from_json(text) == stored_trace
    assert json.loads(text) == as_dict
    for span in stored_trace.spans:
        assert Span.from_dict(span.to_dict()) == span
    assert TraceInfo.from_json(stored_trace.info.to_json()) == stored_trace.info


def test_tree_helpers(stored_trace):
    root = stored_trace.root_span
    assert root is not None and root.name == "agent"
    assert [s.name for s in stored_trace.children(root)] == ["think", "fails", "tool"]
    assert [(d, s.name) for d, s in stored_trace.walk()] == [
        (0, "agent"), (1, "think"), (1, "fails"), (1, "tool")]
    assert [s.name for s in stored_trace.search_spans(span_type="TOOL")] == ["tool"]
    assert stored_trace.trace_id == stored_trace.info.trace_id
    assert all(s.duration_ms is not None and s.duration_ms >= 0 for s in stored_trace.spans)


def test_trace_info_fields(stored_trace):
    info = stored_trace.info
    assert info.experiment == "test"
    assert info.state == "OK"
    assert info.name == "agent"
    assert info.tags == {"t": "1"}
    assert info.metadata == {"m": "2"}
    assert json.loads(info.request_preview) == {"q": "hello"}
    assert json.loads(info.response_preview)["x"] == "hello"
    assert info.execution_time_ms > 0
    assert info.timestamp_ms == stored_trace.root_span.start_time_ns // 1_000_000


def test_from_dict_validates():
    with pytest.raises(ValueError):
        Span.from_dict({"name": "no ids"})
