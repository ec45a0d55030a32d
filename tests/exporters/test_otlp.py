"""OTLPExporter over real HTTP on 127.0.0.1: delivery through ``assay.configure``, the
conventions and the resource on the wire, the OTEL_EXPORTER_OTLP_* variables, retries
and backoff, giving up, shutdown, and a lossless encode/decode round trip."""

from __future__ import annotations

import json
import logging
import os
import textwrap
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter as OTelMemoryExporter,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

import assay
from assay.exporters import InMemorySpanExporter, OTLPExporter, stats
from assay.exporters._conventions import derive
from assay.exporters._convert import to_record
from assay.exporters._otlp_wire import DERIVED_KEYS, decode_request, encode_request
from assay.exporters.otlp import DEFAULT_ENDPOINT, retry_after
from assay.tracing import continue_trace
from assay.tracing.types import SPAN_INPUTS, SPAN_OUTPUTS, SPAN_TYPE
from tests.conftest import run_python
from tests.exporters.otlp_receiver import OTLPReceiver, free_port

# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as r:
        yield r


@pytest.fixture(autouse=True)
def _no_otlp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ambient OTEL_* and proxy settings of the machine must not leak into these tests."""
    prefixes = ("OTEL_EXPORTER_OTLP", "OTEL_SERVICE", "OTEL_RESOURCE", "HTTP_PROXY",
                "HTTPS_PROXY", "ALL_PROXY")
    for key in [k for k in os.environ if k.upper().startswith(prefixes)]:
        monkeypatch.delenv(key)


def some_spans(count: int = 2) -> list[ReadableSpan]:
    """Ended spans of a plain OpenTelemetry SDK provider."""
    memory = OTelMemoryExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "unit"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for i in range(count):
        with tracer.start_as_current_span(f"span-{i}") as span:
            span.set_attribute(SPAN_TYPE, "TOOL")
            span.set_attribute(SPAN_INPUTS, json.dumps({"i": i}))
    provider.shutdown()
    return list(memory.get_finished_spans())


def exporter_for(receiver: OTLPReceiver, **kwargs: Any) -> OTLPExporter:
    kwargs.setdefault("initial_backoff_s", 0.01)
    return OTLPExporter(receiver.url, **kwargs)


def timed_export(exporter: OTLPExporter,
                 spans: list[ReadableSpan]) -> tuple[SpanExportResult, float]:
    start = time.monotonic()
    result = exporter.export(spans)
    return result, time.monotonic() - start


# -- end to end through assay.configure ------------------------------------------------


def test_traced_calls_reach_the_collector_with_conventions_and_resource(
        receiver: OTLPReceiver, db_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout-bot")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,team=search")
    exporter = OTLPExporter(receiver.url, headers={"x-api-key": "secret"})
    assay.configure(store=db_uri, experiment="test", flush_interval_ms=50, exporters=[exporter])

    @assay.trace(span_type="CHAT_MODEL")
    def chat(messages: list[dict[str, str]], model: str = "gpt-4o-mini") -> dict[str, Any]:
        return {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Paris"}}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3}}

    @assay.trace
    def answer(question: str) -> str:
        assay.update_current_trace(tags={"env": "ci"}, metadata={"user": "u1"})
        reply = chat([{"role": "user", "content": question}])
        return str(reply["choices"][0]["message"]["content"])

    assert answer("Capital of France?") == "Paris"
    assert assay.flush(timeout_s=10)

    spans = {s.name: s for s in receiver.spans()}
    assert set(spans) == {"answer", "chat"}
    root, llm = spans["answer"], spans["chat"]
    assert root.resource["service.name"] == "checkout-bot"
    assert root.resource["deployment.environment"] == "ci"
    assert root.resource["team"] == "search"
    assert root.resource["assay.experiment"] == "test"
    assert root.scope == "assay"

    attrs = root.attributes
    assert attrs["openinference.span.kind"] == "UNKNOWN"
    assert attrs["input.value"] == '{"question":"Capital of France?"}'
    assert attrs["input.mime_type"] == "application/json"
    assert (attrs["output.value"], attrs["output.mime_type"]) == ("Paris", "text/plain")
    assert json.loads(attrs["assay.trace.tags"]) == {"env": "ci"}
    assert json.loads(attrs["assay.trace.metadata"]) == {"user": "u1"}

    attrs = llm.attributes
    assert attrs["openinference.span.kind"] == "LLM"
    assert attrs[SPAN_TYPE] == "CHAT_MODEL"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["gen_ai.usage.output_tokens"] == 3
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}]}]
    assert json.loads(attrs["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Paris"}],
         "finish_reason": "stop"}]
    assert llm.span.parent_span_id == root.span.span_id

    request = receiver.accepted[0]
    assert request.path == "/v1/traces"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["x-api-key"] == "secret"
    assert request.headers["user-agent"].startswith("assay/")

    # The store got the same trace, and the processor counted the delivery.
    trace = assay.get_trace(assay.get_last_trace_id() or "")
    assert trace is not None and len(trace.spans) == 2
    row = next(r for r in stats() if r["exporter"] == "OTLPExporter")
    assert (row["exported"], row["failed"]) == (2, 0)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_the_collector_can_replace_the_store(receiver: OTLPReceiver, tmp_path: Any,
                                             monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.chdir(tmp_path)
    if how == "environment":
        monkeypatch.setenv("ASSAY_STORE", "none")
        assay.configure(exporters=[exporter_for(receiver)], flush_interval_ms=50)
    else:
        assay.configure(store="none", exporters=[exporter_for(receiver)], flush_interval_ms=50)

    @assay.trace
    def step(x: int) -> int:
        return x + 1

    assert step(1) == 2
    assert assay.flush(timeout_s=10)
    assert [s.name for s in receiver.spans()] == ["step"]
    assert [row["exporter"] for row in stats()] == ["OTLPExporter"]
    assert not (tmp_path / "assay.db").exists()
    with pytest.raises(assay.ConfigurationError, match="no trace store"):
        assay.search_traces()


def test_service_name_from_otel_resource_attributes(
        receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    assay.configure(store="memory://", flush_interval_ms=50,
                    exporters=[OTLPExporter(receiver.url)])
    with assay.start_span("op"):
        pass
    assert assay.flush(timeout_s=10)
    assert receiver.spans()[0].resource["service.name"] == "from-attributes"


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "assay"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "team=search"}, "assay"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,team=search"},
     "from-attributes"),
    ({"OTEL_SERVICE_NAME": "from-name",
      "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,team=search"}, "from-name"),
    ({"OTEL_SERVICE_NAME": "from-name"}, "from-name"),
], ids=["default", "attributes-without-name", "attributes", "both", "name"])
def test_service_name_precedence(env: dict[str, str], expected: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    memory = InMemorySpanExporter()
    assay.configure(store="memory://", exporters=[memory])
    with assay.start_span("op"):
        pass
    assert assay.flush(timeout_s=10)
    resource = memory.raw[0].resource.attributes
    assert resource["service.name"] == expected
    assert resource["assay.experiment"] == "default"
    if "team" in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        assert resource["team"] == "search"


@pytest.mark.parametrize("spool", [False, True], ids=["without-spool", "with-spool"])
def test_failed_delivery_is_counted_by_the_processor(spool: bool,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    exporter = OTLPExporter(f"http://127.0.0.1:{free_port()}/v1/traces", max_retry_s=0)
    assay.configure(store="memory://", flush_interval_ms=50, exporters=[exporter], spool=spool)
    with caplog.at_level(logging.ERROR, logger="assay"), assay.start_span("op"):
        pass
    flushed = assay.flush(timeout_s=1)
    row = next(r for r in stats() if r["exporter"] == "OTLPExporter")
    if spool:  # kept on disk for later, not lost: not delivered yet
        assert flushed is False
        assert (row["exported"], row["failed"], row["spooled"]) == (0, 0, 1)
    else:
        assert (row["exported"], row["failed"], row["spooled"]) == (0, 1, 0)
    assert "ConnectError" in caplog.text


# -- the round trip --------------------------------------------------------------------


def traced_spans() -> list[ReadableSpan]:
    """Spans of every shape assay records, as ended OpenTelemetry spans."""
    memory = InMemorySpanExporter()
    assay.configure(store="memory://", experiment="round-trip", exporters=[memory])

    @assay.trace(span_type="RETRIEVER", attributes={"k": 3, "filters": {"lang": "en"}})
    def retrieve(query: str) -> list[dict[str, Any]]:
        return [{"id": "d1", "score": 0.9}, {"id": "d2", "score": 0.5}]

    @assay.trace(span_type="TOOL")
    def fail() -> None:
        raise ValueError("no such tool")

    @assay.trace(span_type="LLM")
    def stream(prompt: str) -> Iterator[str]:
        yield from ("a", "b")

    @assay.trace(span_type="AGENT")
    def agent(question: str) -> str:
        assay.update_current_trace(tags={"release": "1.2", "user": "ü"},
                                   metadata={"session": "s-1"})
        retrieve(question)
        with pytest.raises(ValueError):
            fail()
        with assay.start_span("custom", span_type="MY_TYPE") as span:
            span.set_inputs("plain text in")
            span.set_outputs(None)
            span.set_attributes({"floats": [0.5, 1.5], "names": ["x", "y"], "flag": True,
                                 "big": 2**40, "nested": {"a": [1, {"b": None}]}})
            span.add_event("checkpoint", {"step": 2})
            span.add_link(retrieve_context[0], {"why": "related"})
            span.set_status("ERROR", "soft failure")
        return "".join(stream(question))

    retrieve_context: list[Any] = []
    with assay.start_span("linked") as linked:
        retrieve_context.append(linked.get_span_context())
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with continue_trace({"traceparent": parent, "tracestate": "vendor=v1"}):
        agent("what is OTLP?")
    assert assay.flush(timeout_s=10)
    return [s for s in memory.raw if s.name != "linked"]


def test_round_trip_loses_nothing() -> None:
    spans = traced_spans()
    assert len(spans) == 5
    back = decode_request(encode_request(spans).SerializeToString())
    assert [to_record(s) for s in back] == [to_record(s) for s in spans]
    for before, after in zip(spans, back, strict=True):
        assert after.context == before.context
        assert after.parent == before.parent
        assert after.parent is not None and after.parent.is_remote == before.parent.is_remote
        assert after.kind == before.kind
        assert after.status.status_code == before.status.status_code
        assert after.status.description == before.status.description
        assert dict(after.attributes or {}) == dict(before.attributes or {})
        assert [(e.name, dict(e.attributes or {}), e.timestamp) for e in after.events] == [
            (e.name, dict(e.attributes or {}), e.timestamp) for e in before.events]
        assert [(lk.context, dict(lk.attributes or {})) for lk in after.links] == [
            (lk.context, dict(lk.attributes or {})) for lk in before.links]
        assert after.resource == before.resource
        assert after.instrumentation_scope == before.instrumentation_scope
    by_name = {s.name: to_record(s) for s in back}
    assert by_name["agent"].trace_tags == {"release": "1.2", "user": "ü"}
    assert by_name["agent"].trace_metadata == {"session": "s-1"}
    assert by_name["agent"].experiment == "round-trip"
    assert by_name["retrieve"].span_type == "RETRIEVER"
    assert by_name["retrieve"].attributes["filters"] == {"lang": "en"}
    assert by_name["custom"].inputs_json == '"plain text in"'
    assert by_name["fail"].status == "ERROR"


def test_the_run_id_travels_with_the_root_span_and_is_read_back() -> None:
    from assay.store import runs as run_api

    memory = InMemorySpanExporter()
    assay.configure(store="memory://", experiment="round-trip", exporters=[memory])
    with run_api.start_run("otlp") as run, assay.start_span("root"), \
            assay.start_span("child"):
        pass
    assert assay.flush(timeout_s=10)
    spans = {s.name: s for s in memory.raw}
    assert spans["root"].attributes["assay.trace.run_id"] == run.run_id
    assert "assay.trace.run_id" not in (spans["child"].attributes or {})
    back = {s.name: to_record(s)
            for s in decode_request(encode_request(list(spans.values())).SerializeToString())}
    assert (back["root"].run_id, back["child"].run_id) == (run.run_id, None)
    assert "assay.trace.run_id" not in back["root"].attributes


def test_round_trip_through_http(receiver: OTLPReceiver) -> None:
    spans = traced_spans()
    assert exporter_for(receiver).export(spans) is SpanExportResult.SUCCESS
    wire = receiver.accepted[0]
    back = decode_request(wire.message)
    assert [to_record(s) for s in back] == [to_record(s) for s in spans]
    raw = decode_request(wire.message, raw=True)
    assert all(DERIVED_KEYS in (s.attributes or {}) for s in raw)


def test_dropped_counts_span_kind_and_trace_state_survive() -> None:
    memory = OTelMemoryExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2, max_events=1,
                                                     max_links=1, max_event_attributes=1))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests", "1.0", schema_url="https://example.com/s")
    with tracer.start_as_current_span("other") as other:
        pass
    links = [Link(other.get_span_context(), {"a": 1}), Link(other.get_span_context())]
    with tracer.start_as_current_span("server", kind=SpanKind.SERVER, links=links,
                                      attributes={"a": 1, "b": 2, "c": 3}) as span:
        span.add_event("e0")
        span.add_event("e1", {"x": 1, "y": 2})
        span.set_status(Status(StatusCode.OK))
    provider.shutdown()
    before = memory.get_finished_spans()[-1]
    (after,) = decode_request(encode_request([before]).SerializeToString())
    assert (after.dropped_attributes, after.dropped_events, after.dropped_links) == (1, 1, 1)
    assert after.events[0].name == "e1" and after.events[0].dropped_attributes == 1
    assert after.links[0].dropped_attributes == 0
    assert after.kind is SpanKind.SERVER
    assert after.status.status_code is StatusCode.OK
    scope = after.instrumentation_scope
    assert scope is not None
    assert (scope.name, scope.version, scope.schema_url) == ("tests", "1.0",
                                                             "https://example.com/s")


def test_spans_are_grouped_by_resource_and_scope() -> None:
    first, second = some_spans(2), some_spans(1)
    request = encode_request(first + second)
    assert len(request.resource_spans) == 2
    assert [len(rs.scope_spans[0].spans) for rs in request.resource_spans] == [2, 1]


def test_spans_of_other_instrumentations_get_assay_keys_on_decode() -> None:
    span = ReadableSpan("openai.chat", context=some_spans(1)[0].context, attributes={
        "openinference.span.kind": "LLM", "input.value": "hi", "input.mime_type": "text/plain",
        "output.value": '{"text": "hello"}', "output.mime_type": "application/json",
        "llm.model_name": "gpt-4o"})
    (back,) = decode_request(encode_request([span], conventions=False).SerializeToString())
    record = to_record(back)
    assert record.span_type == "LLM"
    assert json.loads(record.inputs_json or "") == "hi"
    assert json.loads(record.outputs_json or "") == {"text": "hello"}
    assert record.attributes == {"llm.model_name": "gpt-4o"}
    # Encoding it again puts the same conventions back on the wire.
    (wire,) = decode_request(encode_request([back]).SerializeToString(), raw=True)
    assert (wire.attributes or {})["input.value"] == "hi"
    assert (wire.attributes or {})["output.mime_type"] == "application/json"


# -- conventions -----------------------------------------------------------------------


@pytest.mark.parametrize(("span_type", "kind"), [
    ("LLM", "LLM"), ("CHAT_MODEL", "LLM"), ("EMBEDDING", "EMBEDDING"),
    ("RETRIEVER", "RETRIEVER"), ("RERANKER", "RERANKER"), ("TOOL", "TOOL"),
    ("AGENT", "AGENT"), ("CHAIN", "CHAIN"), ("PARSER", "CHAIN"), ("GUARDRAIL", "GUARDRAIL"),
    ("EVALUATOR", "EVALUATOR"), ("UNKNOWN", "UNKNOWN"), ("my-own-type", "UNKNOWN"),
])
def test_span_kind_mapping(span_type: str, kind: str) -> None:
    assert derive({SPAN_TYPE: span_type})["openinference.span.kind"] == kind


def test_attributes_the_application_set_win() -> None:
    attrs = {SPAN_TYPE: "LLM", SPAN_INPUTS: '{"model": "gpt-4o", "prompt": "hi"}',
             SPAN_OUTPUTS: '{"usage": {"prompt_tokens": 1, "completion_tokens": 2}}',
             "gen_ai.request.model": "my-deployment", "input.value": "custom",
             "openinference.span.kind": "CHAIN", "gen_ai.system": "azure"}
    added = derive(attrs)
    assert not set(added) & set(attrs)
    assert "input.mime_type" not in added
    assert "gen_ai.provider.name" not in added
    assert added["gen_ai.operation.name"] == "text_completion"
    assert added["gen_ai.usage.output_tokens"] == 2


def test_anthropic_shape() -> None:
    inputs = {"model": "claude-sonnet-4-5", "max_tokens": 256, "system": "Be brief.",
              "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    outputs = {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [{"type": "text", "text": "hello"},
                           {"type": "tool_use", "id": "tu1", "name": "search",
                            "input": {"q": "x"}}],
               "stop_reason": "tool_use",
               "usage": {"input_tokens": 10, "output_tokens": 4,
                         "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}}
    added = derive({SPAN_TYPE: "LLM", SPAN_INPUTS: json.dumps({"kwargs": inputs}),
                    SPAN_OUTPUTS: json.dumps(outputs)})
    assert added["gen_ai.operation.name"] == "chat"
    assert added["gen_ai.provider.name"] == "anthropic"
    assert added["gen_ai.request.model"] == "claude-sonnet-4-5"
    assert added["gen_ai.request.max_tokens"] == 256
    assert added["gen_ai.usage.input_tokens"] == 115
    assert added["gen_ai.usage.output_tokens"] == 4
    assert added["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert json.loads(added["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "Be brief."}]
    assert json.loads(added["gen_ai.output.messages"]) == [{
        "role": "assistant", "finish_reason": "tool_use",
        "parts": [{"type": "text", "content": "hello"},
                  {"type": "tool_call", "id": "tu1", "name": "search", "arguments": {"q": "x"}}]}]


def test_openai_tool_calls_and_provider_prefix() -> None:
    messages = [
        {"role": "system", "content": "You route."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "lookup", "arguments": '{"id": 7}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "found"},
    ]
    added = derive({SPAN_TYPE: "CHAT_MODEL", SPAN_INPUTS: json.dumps(
        {"messages": messages, "model": "azure:/prod-gpt", "temperature": 0, "stop": "END"})})
    assert added["gen_ai.provider.name"] == "azure.ai.openai"
    assert added["gen_ai.system"] == "az.ai.openai"
    assert added["gen_ai.request.model"] == "prod-gpt"
    assert added["gen_ai.request.temperature"] == 0
    assert added["gen_ai.request.stop_sequences"] == ("END",)
    assert json.loads(added["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "You route."}]},
        {"role": "assistant", "parts": [
            {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": {"id": 7}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1",
                                    "response": "found"}]},
    ]


@pytest.mark.parametrize(("model", "provider"), [
    ("gpt-4o", "openai"), ("o3-mini", "openai"), ("claude-3-5-haiku", "anthropic"),
    ("gemini-2.0-flash", "gcp.gemini"), ("mistral-large", "mistral_ai"),
    ("llama3:8b", None), ("meta-llama/Llama-3-8B", None), ("my-model", None),
])
def test_provider_guess_from_the_model_family(model: str, provider: str | None) -> None:
    added = derive({SPAN_TYPE: "LLM", SPAN_INPUTS: json.dumps({"model": model})})
    assert added.get("gen_ai.provider.name") == provider


def test_embeddings_and_non_model_spans() -> None:
    added = derive({SPAN_TYPE: "EMBEDDING", SPAN_INPUTS: '{"model": "text-embedding-3-small"}',
                    SPAN_OUTPUTS: '{"usage": {"prompt_tokens": 8, "total_tokens": 8}}'})
    assert added["gen_ai.operation.name"] == "embeddings"
    assert added["gen_ai.usage.input_tokens"] == 8
    assert "gen_ai.usage.output_tokens" not in added
    tool = derive({SPAN_TYPE: "TOOL", SPAN_INPUTS: '{"model": "gpt-4o"}'})
    assert not any(key.startswith("gen_ai.") for key in tool)
    assert derive({"http.method": "GET"}) == {}


def test_conventions_can_be_turned_off(receiver: OTLPReceiver) -> None:
    exporter = exporter_for(receiver, conventions=False)
    assert exporter.export(some_spans(1)) is SpanExportResult.SUCCESS
    (span,) = receiver.spans()
    assert set(span.attributes) == {SPAN_TYPE, SPAN_INPUTS}


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(("env", "endpoint"), [
    ({}, DEFAULT_ENDPOINT),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom"}, "http://c:4318/custom"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c/"}, "https://c/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/otlp"}, "http://c:4318/otlp/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4318",
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/v1/traces"},
     "http://traces:4318/v1/traces"),
])
def test_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                       endpoint: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert OTLPExporter().endpoint == endpoint


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                       receiver: OTLPReceiver) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-generic=1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                       "Authorization=Basic%20dXNlcjpwYXNz, x-tenant = a%3Db%2Cc ,")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    exporter = OTLPExporter()
    assert (exporter.timeout_s, exporter.compression) == (2.5, "none")
    assert exporter.export(some_spans(1)) is SpanExportResult.SUCCESS
    headers = receiver.accepted[0].headers
    assert headers["authorization"] == "Basic dXNlcjpwYXNz"
    assert headers["x-tenant"] == "a=b,c"
    assert "x-generic" not in headers
    assert "content-encoding" not in headers


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:4318/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "not a number")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli")
    exporter = OTLPExporter("http://arg:4318/v1/traces", timeout_s=3, compression="gzip")
    assert (exporter.endpoint, exporter.timeout_s, exporter.compression) == (
        "http://arg:4318/v1/traces", 3.0, "gzip")
    assert exporter.timeout_s == 3.0 and exporter.max_retry_s == 30.0


def test_defaults() -> None:
    exporter = OTLPExporter()
    assert (exporter.endpoint, exporter.timeout_s, exporter.compression) == (
        "http://localhost:4318/v1/traces", 10.0, "gzip")
    exporter.shutdown()


@pytest.mark.parametrize(("name", "value"), [
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:port"),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "novalue"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "bad key=1"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten"),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-5"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
])
def test_bad_environment_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                                  value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(assay.ConfigurationError, match=name) as info:
        OTLPExporter()
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("kwargs", [
    {"endpoint": "localhost:4318"}, {"timeout_s": 0}, {"timeout_s": "5"},
    {"compression": "br"}, {"max_retry_s": -1}, {"headers": {"bad key": "v"}},
    {"max_request_bytes": 0}, {"initial_backoff_s": float("nan")},
])
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(assay.ConfigurationError, match="OTLPExporter"):
        OTLPExporter(**kwargs)


def test_other_protocols_are_reported(monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with caplog.at_level(logging.WARNING, logger="assay"):
        OTLPExporter()
    assert "http/protobuf only" in caplog.text


# -- delivery --------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_compression(receiver: OTLPReceiver, compression: Any) -> None:
    spans = some_spans(3)
    assert exporter_for(receiver, compression=compression).export(spans) is (
        SpanExportResult.SUCCESS)
    (request,) = receiver.accepted
    assert request.headers.get("content-encoding") == (
        "gzip" if compression == "gzip" else None)
    assert request.body[:2] == b"\x1f\x8b" if compression == "gzip" else (
        request.body == request.message.SerializeToString())
    assert [s.name for s in receiver.spans()] == ["span-0", "span-1", "span-2"]


def test_large_batches_go_in_several_requests(receiver: OTLPReceiver) -> None:
    spans = some_spans(5)
    one_span = len(encode_request(spans[:1]).SerializeToString())
    exporter = exporter_for(receiver, max_request_bytes=2 * one_span + 50)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert [len(r.message.resource_spans[0].scope_spans[0].spans)
            for r in receiver.accepted] == [2, 1, 2]
    assert [s.name for s in receiver.spans()] == [f"span-{i}" for i in range(5)]


def test_a_failed_request_stops_the_rest_of_the_batch(receiver: OTLPReceiver) -> None:
    receiver.statuses.extend([200, 400])
    exporter = exporter_for(receiver, max_request_bytes=1)
    assert exporter.export(some_spans(4)) is SpanExportResult.FAILURE
    assert [r.status for r in receiver.attempts] == [200, 400]


@pytest.mark.parametrize("status", [503, 502, 504, 500, 429])
def test_retryable_statuses_are_retried(receiver: OTLPReceiver, status: int) -> None:
    receiver.statuses.extend([status, status])
    exporter = exporter_for(receiver)
    assert exporter.export(some_spans()) is SpanExportResult.SUCCESS
    assert [r.status for r in receiver.attempts] == [status, status, 200]
    assert exporter.retries == 2
    assert len(receiver.spans()) == 2


def test_retry_after_seconds_is_honoured(receiver: OTLPReceiver) -> None:
    receiver.statuses.append(429)
    receiver.retry_after = "1"
    result, elapsed = timed_export(exporter_for(receiver), some_spans())
    assert result is SpanExportResult.SUCCESS
    first, second = receiver.attempts
    assert second.at - first.at >= 1.0
    assert elapsed < 2.0


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert retry_after("3", now) == 3.0
    assert retry_after(" 0 ", now) == 0.0
    assert retry_after(formatdate(now + 7, usegmt=True), now) == pytest.approx(7.0)
    assert retry_after(formatdate(now - 60, usegmt=True), now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after("-1", now) is None
    assert retry_after(None, now) is None


def test_retry_after_beyond_the_retry_window_gives_up_at_once(receiver: OTLPReceiver) -> None:
    receiver.statuses.append(503)
    receiver.retry_after = "120"
    exporter = exporter_for(receiver, max_retry_s=5)
    result, elapsed = timed_export(exporter, some_spans())
    assert result is SpanExportResult.FAILURE
    assert elapsed < 1.0 and len(receiver.attempts) == 1 and exporter.retries == 0


def test_retry_after_zero_still_backs_off(receiver: OTLPReceiver) -> None:
    receiver.statuses.extend([503] * 1_000)
    receiver.retry_after = "0"
    exporter = exporter_for(receiver, max_retry_s=0.3, initial_backoff_s=0.02)
    assert exporter.export(some_spans()) is SpanExportResult.FAILURE
    assert 2 <= len(receiver.attempts) < 20


def test_gives_up_after_max_retry_s(receiver: OTLPReceiver,
                                    caplog: pytest.LogCaptureFixture) -> None:
    receiver.statuses.extend([503] * 1_000)
    exporter = exporter_for(receiver, max_retry_s=0.4, initial_backoff_s=0.02)
    with caplog.at_level(logging.ERROR, logger="assay"):
        result, elapsed = timed_export(exporter, some_spans())
    assert result is SpanExportResult.FAILURE
    assert elapsed < 1.0
    assert receiver.attempts[-1].at - receiver.attempts[0].at < 0.4
    assert exporter.retries >= 2 and len(receiver.attempts) == exporter.retries + 1
    assert "gave up" in caplog.text and "HTTP 503" in caplog.text
    assert not receiver.spans()


def test_client_errors_fail_at_once(receiver: OTLPReceiver,
                                    caplog: pytest.LogCaptureFixture) -> None:
    receiver.statuses.append(400)
    receiver.error_body = "invalid span: trace_id is empty " + "x" * 500
    exporter = exporter_for(receiver)
    with caplog.at_level(logging.ERROR, logger="assay"):
        result, elapsed = timed_export(exporter, some_spans())
    assert result is SpanExportResult.FAILURE
    assert len(receiver.attempts) == 1 and exporter.retries == 0 and elapsed < 1.0
    (record,) = [r for r in caplog.records if "OTLPExporter" in r.getMessage()]
    assert "HTTP 400" in record.getMessage() and "trace_id is empty" in record.getMessage()
    assert "x" * 200 not in record.getMessage()


def test_repeated_failures_are_logged_once_a_minute(receiver: OTLPReceiver,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    receiver.statuses.extend([401] * 3)
    exporter = exporter_for(receiver)
    with caplog.at_level(logging.ERROR, logger="assay"):
        results = [exporter.export(some_spans(1)) for _ in range(3)]
    assert results == [SpanExportResult.FAILURE] * 3
    assert len([r for r in caplog.records if "HTTP 401" in r.getMessage()]) == 1


def test_connection_refused_then_the_collector_comes_up() -> None:
    late = OTLPReceiver(port=free_port())
    exporter = OTLPExporter(late.url, max_retry_s=5, initial_backoff_s=0.05)
    starter = threading.Timer(0.3, late.start)
    starter.start()
    try:
        result, elapsed = timed_export(exporter, some_spans())
        assert result is SpanExportResult.SUCCESS
        assert exporter.retries >= 1 and elapsed >= 0.3
        assert len(late.spans()) == 2
    finally:
        starter.join()
        late.stop()


def test_connection_refused_gives_up() -> None:
    exporter = OTLPExporter(f"http://127.0.0.1:{free_port()}/v1/traces", max_retry_s=0.3,
                            initial_backoff_s=0.02)
    result, elapsed = timed_export(exporter, some_spans())
    assert result is SpanExportResult.FAILURE
    assert exporter.retries >= 1 and elapsed < 1.0


def test_timeouts_are_retried(receiver: OTLPReceiver) -> None:
    receiver.delays.append(1.0)
    exporter = exporter_for(receiver, timeout_s=0.2)
    result, elapsed = timed_export(exporter, some_spans())
    assert result is SpanExportResult.SUCCESS
    assert exporter.retries == 1 and elapsed < 1.0


def test_partial_success_is_logged(receiver: OTLPReceiver,
                                   caplog: pytest.LogCaptureFixture) -> None:
    receiver.partial_success = (1, "span name too long")
    exporter = exporter_for(receiver)
    with caplog.at_level(logging.WARNING, logger="assay"):
        assert exporter.export(some_spans()) is SpanExportResult.SUCCESS
    assert exporter.rejected_spans == 1
    assert exporter.stats() == {"retries": 0, "rejected_spans": 1}
    assert "rejected 1 of 2 span(s): span name too long" in caplog.text


def test_shutdown_cuts_a_backoff_short(receiver: OTLPReceiver) -> None:
    receiver.statuses.append(503)
    receiver.retry_after = "30"
    exporter = exporter_for(receiver, max_retry_s=60)
    results: list[SpanExportResult] = []
    worker = threading.Thread(target=lambda: results.append(exporter.export(some_spans())))
    worker.start()
    assert receiver.wait_for_attempts(1)
    time.sleep(0.05)
    start = time.monotonic()
    exporter.shutdown()
    worker.join(5)
    assert time.monotonic() - start < 0.5
    assert results == [SpanExportResult.FAILURE]
    assert exporter.export(some_spans()) is SpanExportResult.FAILURE
    assert len(receiver.attempts) == 1
    assert exporter.force_flush() is True


def test_a_forked_child_sends_on_connections_of_its_own() -> None:
    out = run_python(textwrap.dedent("""
        import os
        from opentelemetry.sdk.trace.export import SpanExportResult
        from assay.exporters import OTLPExporter
        from tests.exporters.otlp_receiver import OTLPReceiver
        from tests.exporters.test_otlp import some_spans

        with OTLPReceiver() as receiver:
            exporter = OTLPExporter(receiver.url, max_retry_s=5)
            assert exporter.export(some_spans(1)) is SpanExportResult.SUCCESS
            parent_client = exporter._client
            pid = os.fork()
            if pid == 0:
                ok = exporter._client is not parent_client and exporter.export(
                    some_spans(2)) is SpanExportResult.SUCCESS
                os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert exporter._client is parent_client
            assert exporter.export(some_spans(1)) is SpanExportResult.SUCCESS
            print(len(receiver.spans()))
    """), timeout=60)
    assert out.strip() == "4"


def test_export_never_raises() -> None:
    closed = httpx.Client()
    closed.close()
    exporter = OTLPExporter("http://127.0.0.1:9/v1/traces", client=closed)
    assert exporter.export(some_spans()) is SpanExportResult.FAILURE
    assert exporter.retries == 0
    broken = ReadableSpan("broken", context=None)
    assert OTLPExporter().export([broken]) is SpanExportResult.FAILURE
    assert OTLPExporter().export([]) is SpanExportResult.SUCCESS


def test_a_client_given_is_left_open(receiver: OTLPReceiver) -> None:
    with httpx.Client() as client:
        exporter = exporter_for(receiver, client=client)
        assert exporter.export(some_spans(1)) is SpanExportResult.SUCCESS
        exporter.shutdown()
        assert not client.is_closed
    assert repr(exporter) == f"OTLPExporter({receiver.url!r})"


def test_public_name() -> None:
    import assay.exporters

    assert "OTLPExporter" in assay.exporters.__all__
    assert assay.exporters.OTLPExporter is OTLPExporter
    with pytest.raises(AttributeError):
        _ = assay.exporters.NoSuchExporter  # type: ignore[attr-defined]
