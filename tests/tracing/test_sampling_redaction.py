"""Head sampling, disabled tracing and redaction."""

from __future__ import annotations

import logging

import pytest

import assay
import assay.exporters
from assay.tracing import continue_trace


@assay.trace
def leaf(i):
    return i


@assay.trace
def root(i):
    leaf(i)
    leaf(i + 1)
    return i


def _stored(store_uri: str) -> list[assay.Trace]:
    assert assay.flush()
    out, token = [], None
    while True:
        page = assay.search_traces(return_type="list", max_results=500, page_token=token)
        out.extend(page)
        token = page.next_page_token
        if token is None:
            return out


def test_sampling_keeps_whole_traces_at_about_the_ratio(db_uri):
    assay.configure(store=db_uri, sampling_ratio=0.5)
    for i in range(300):
        root(i)
    traces = _stored(db_uri)
    assert 90 <= len(traces) <= 210
    assert all(len(t.spans) == 3 for t in traces)


def test_sampling_ratio_zero_stores_nothing_and_still_runs_the_code(db_uri):
    assay.configure(store=db_uri, sampling_ratio=0.0)
    assert [root(i) for i in range(5)] == list(range(5))
    with assay.start_span("manual") as span:
        span.set_inputs({"a": 1})
        assert not span.is_recording()
    assert _stored(db_uri) == []


def test_an_unsampled_remote_parent_is_respected(tracing):
    parent = "00-" + "a" * 32 + "-" + "b" * 16 + "-00"
    with continue_trace({"traceparent": parent}):
        root(1)
    assert _stored(tracing) == []


def test_disabled_tracing_is_a_plain_call(db_uri):
    assay.configure(store=db_uri, enabled=False)
    assert root(3) == 3
    with assay.start_span("x") as span:
        span.set_inputs({"a": 1})
        span.set_outputs(2)
        span.set_attribute("k", "v")
        span.add_event("e")
        assert assay.get_current_span() is None
    assay.update_current_trace(tags={"a": "b"})
    assert assay.flush()
    assert assay.search_traces(return_type="list") == []
    assert assay.exporters.stats() == []


def test_disabled_by_environment(db_uri, monkeypatch):
    monkeypatch.setenv("ASSAY_STORE", db_uri)
    monkeypatch.setenv("ASSAY_TRACING_ENABLED", "false")
    assert root(1) == 1
    assert assay.search_traces(return_type="list") == []


def test_disabled_generators_and_coroutines_still_work(db_uri):
    import asyncio

    assay.configure(store=db_uri, enabled=False)

    @assay.trace
    def gen():
        got = yield 1
        yield got

    @assay.trace
    async def coro():
        return 5

    @assay.trace
    async def agen():
        yield 1
        yield 2

    g = gen()
    assert next(g) == 1
    assert g.send("x") == "x"

    async def main():
        return await coro(), [x async for x in agen()]

    assert asyncio.run(main()) == (5, [1, 2])


def test_redact_rewrites_inputs_outputs_and_attributes(db_uri, fetch):
    def redact(span: assay.Span) -> assay.Span | None:
        if isinstance(span.inputs, dict) and "password" in span.inputs:
            span.inputs = {**span.inputs, "password": "***"}
        span.attributes = {k: v for k, v in span.attributes.items() if k != "ssn"}
        if span.outputs == "secret-token":
            span.outputs = "[redacted]"
        return span

    assay.configure(store=db_uri, redact=redact)

    @assay.trace(attributes={"ssn": "123", "keep": 1})
    def login(user, password):
        return "secret-token"

    login("ana", "hunter2")
    span = fetch().spans[0]
    assert span.inputs == {"user": "ana", "password": "***"}
    assert span.outputs == "[redacted]"
    assert span.attributes == {"keep": 1}
    assert span.span_type == "UNKNOWN"


def test_redact_returning_none_drops_the_span_and_is_counted(db_uri, fetch):
    assay.configure(store=db_uri, redact=lambda s: None if s.name == "leaf" else s)
    root(1)
    trace = fetch()
    assert [s.name for s in trace.spans] == ["root"]
    assert assay.exporters.stats()[0]["redacted"] == 2


def test_a_redactor_that_raises_drops_the_span_and_logs(db_uri, fetch, caplog):
    def bad(span):
        if span.name == "leaf":
            raise RuntimeError("redactor bug")
        return span

    assay.configure(store=db_uri, redact=bad)
    with caplog.at_level(logging.ERROR, logger="assay"):
        assert root(1) == 1
    trace = fetch()
    assert [s.name for s in trace.spans] == ["root"]
    assert assay.exporters.stats()[0]["redact_errors"] == 2
    assert "redactor bug" in caplog.text


def test_redact_must_be_callable():
    with pytest.raises(assay.ConfigurationError, match="redact"):
        assay.configure(store="memory://", redact="nope")  # type: ignore[arg-type]
