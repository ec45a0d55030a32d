"""start_span, live spans, trace-level updates and OpenTelemetry interop."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import assay


def test_start_span_records_everything_set_on_the_live_span(tracing, fetch):
    with assay.start_span("call_llm", span_type="LLM", attributes={"model": "m1"}) as span:
        assert isinstance(span, assay.LiveSpan)
        assert assay.get_current_span() is span
        span.set_inputs({"prompt": "hi"})
        span.set_outputs({"text": "hello"})
        span.set_attribute("temperature", 0.2)
        span.set_attributes({"tokens": 12, "tags": ["a", "b"], "meta": {"x": None}})
        span.add_event("retry", attributes={"attempt": 2, "detail": {"code": 429}})
    assert assay.get_current_span() is None
    (stored,) = fetch(span.trace_id).spans
    assert stored.span_id == span.span_id
    assert stored.name == "call_llm"
    assert stored.span_type == "LLM"
    assert stored.inputs == {"prompt": "hi"}
    assert stored.outputs == {"text": "hello"}
    assert stored.attributes == {"model": "m1", "temperature": 0.2, "tokens": 12,
                                 "tags": ["a", "b"], "meta": {"x": None}}
    (event,) = stored.events
    assert event.name == "retry"
    assert event.attributes["attempt"] == 2
    assert stored.start_time_ns <= event.timestamp_ns <= stored.end_time_ns


def test_start_span_inputs_argument_and_nesting(tracing, fetch):
    with assay.start_span("outer", inputs={"q": 1}) as outer, \
            assay.start_span("inner") as inner:
        assert inner.trace_id == outer.trace_id
    trace = fetch(outer.trace_id)
    by_name = {s.name: s for s in trace.spans}
    assert by_name["outer"].inputs == {"q": 1}
    assert by_name["inner"].parent_id == outer.span_id
    assert trace.info.name == "outer"


def test_start_span_exception_marks_error_and_propagates(tracing, fetch):
    with pytest.raises(ZeroDivisionError), assay.start_span("div") as span:
        1 / 0  # noqa: B018
    stored = fetch(span.trace_id).spans[0]
    assert stored.status == "ERROR"
    assert stored.status_message.startswith("ZeroDivisionError")


def test_set_status_explicitly(tracing, fetch):
    with assay.start_span("check") as span:
        span.set_status("ERROR", "guardrail tripped")
    stored = fetch(span.trace_id)
    assert stored.spans[0].status == "ERROR"
    assert stored.spans[0].status_message == "guardrail tripped"
    assert stored.info.state == "ERROR"
    with assay.start_span("check") as span, pytest.raises(ValueError, match="unknown span status"):
        span.set_status("MAYBE")


def test_record_exception_on_live_span_without_raising(tracing, fetch):
    with assay.start_span("handled") as span:
        try:
            raise KeyError("k")
        except KeyError as exc:
            span.record_exception(exc)
    stored = fetch(span.trace_id).spans[0]
    assert stored.status == "OK"
    assert stored.events[0].name == "exception"
    assert stored.events[0].attributes["exception.type"] == "KeyError"


def test_set_span_type_later(tracing, fetch):
    with assay.start_span("x") as span:
        span.set_span_type(assay.SpanType.TOOL)
    assert fetch(span.trace_id).spans[0].span_type == "TOOL"


def test_start_span_rejects_empty_name():
    with pytest.raises(TypeError):
        assay.start_span("")


def test_update_current_trace_tags_metadata_name_session_user(tracing, fetch):
    @assay.trace
    def inner():
        assay.update_current_trace(tags={"route": "chat", "n": 2}, metadata={"v": "1"},
                                   session_id="s-1", user="ana")
        assay.update_current_trace(tags={"route": "chat2"}, name="renamed")

    @assay.trace
    def handler():
        inner()

    handler()
    info = fetch().info
    assert info.tags == {"route": "chat2", "n": "2"}
    assert info.metadata == {"v": "1", "session_id": "s-1", "user": "ana"}
    assert info.name == "renamed"


def test_update_current_trace_without_a_trace_warns_and_does_nothing(tracing, caplog):
    with caplog.at_level(logging.WARNING, logger="assay"):
        assay.update_current_trace(tags={"a": "b"})
    assert "no trace running" in caplog.text


def test_get_last_trace_id_per_thread_and_after_asyncio_run(tracing):
    @assay.trace
    def f():
        return assay.get_current_span().trace_id

    @assay.trace
    async def g():
        return assay.get_current_span().trace_id

    tid = f()
    assert assay.get_last_trace_id() == tid
    atid = asyncio.run(g())
    assert assay.get_last_trace_id() == atid

    seen = {}

    def other_thread():
        seen["before"] = assay.get_last_trace_id()
        seen["own"] = f()
        seen["after"] = assay.get_last_trace_id()

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert seen["before"] is None
    assert seen["after"] == seen["own"]
    assert assay.get_last_trace_id() == atid


def test_get_last_trace_id_inside_tasks_is_per_task(tracing):
    @assay.trace
    async def traced(i):
        await asyncio.sleep(0.001 * i)
        return assay.get_current_span().trace_id

    async def task(i):
        tid = await traced(i)
        await asyncio.sleep(0.01)
        return tid, assay.get_last_trace_id()

    async def main():
        return await asyncio.gather(*(task(i) for i in range(5)))

    for own, last in asyncio.run(main()):
        assert own == last


# -- interop with the application's own OpenTelemetry ----------------------------


def test_assay_span_inside_an_application_otel_span_joins_its_trace(tracing, fetch):
    app_exporter = InMemorySpanExporter()
    app_provider = TracerProvider()
    app_provider.add_span_processor(SimpleSpanProcessor(app_exporter))
    app_tracer = app_provider.get_tracer("app")

    @assay.trace
    def step():
        return 1

    with app_tracer.start_as_current_span("http-request") as app_span:
        step()
    ctx = app_span.get_span_context()
    trace = fetch(format(ctx.trace_id, "032x"))
    (span,) = trace.spans
    assert span.parent_id == format(ctx.span_id, "016x")
    assert trace.info.name == "step"
    assert trace.info.state == "OK"
    assert trace.info.request_preview is not None
    assert [s.name for s in app_exporter.get_finished_spans()] == ["http-request"]


def test_otel_spans_started_inside_an_assay_span_are_its_children(tracing):
    app_exporter = InMemorySpanExporter()
    app_provider = TracerProvider()
    app_provider.add_span_processor(SimpleSpanProcessor(app_exporter))
    app_tracer = app_provider.get_tracer("instrumentation")

    with assay.start_span("agent") as span, app_tracer.start_as_current_span("http-call"):
        pass
    (child,) = app_exporter.get_finished_spans()
    assert format(child.context.trace_id, "032x") == span.trace_id
    assert format(child.parent.span_id, "016x") == span.span_id


def test_assay_never_replaces_the_global_tracer_provider(tracing):
    before = otel_trace.get_tracer_provider()

    @assay.trace
    def f():
        return 1

    f()
    assert otel_trace.get_tracer_provider() is before
