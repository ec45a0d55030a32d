"""assay.testing: in-memory capture with deterministic ids and clock."""

from __future__ import annotations

import assay
from assay.testing import FakeClock, SequentialIdGenerator, capture_traces


@assay.trace
def inner(x):
    return x * 2


@assay.trace(span_type="AGENT")
def outer(x):
    return inner(x) + 1


def test_capture_traces_is_deterministic():
    runs = []
    for _ in range(2):
        with capture_traces() as captured:
            outer(1)
            outer(2)
            runs.append(([s.to_dict() for s in captured.spans],
                         [t.to_dict() for t in captured.traces()]))
    assert runs[0] == runs[1]
    spans, traces = runs[0]
    assert [s["name"] for s in spans] == ["inner", "outer", "inner", "outer"]
    assert spans[1]["trace_id"] == "0" * 31 + "1"
    assert [t["info"]["name"] for t in traces] == ["outer", "outer"]
    assert traces[0]["info"]["execution_time_ms"] == 3.0


def test_capture_ends_with_the_block():
    with capture_traces() as captured:
        outer(1)
    assert len(captured.exporter.spans) == 2
    assert assay.flush()


def test_fake_clock_and_ids():
    clock = FakeClock(start_ns=10, step_ns=5)
    assert [clock(), clock(), clock()] == [10, 15, 20]
    ids = SequentialIdGenerator()
    assert [ids.generate_trace_id(), ids.generate_trace_id(), ids.generate_span_id()] == [1, 2, 1]
