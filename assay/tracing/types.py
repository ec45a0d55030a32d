"""Span types, trace states and the attribute keys assay writes on OpenTelemetry spans."""

from __future__ import annotations

from enum import Enum

__all__ = ["SpanStatus", "SpanType", "TraceState"]


class SpanType(str, Enum):
    """What a span does. Any other string is kept as given."""

    LLM = "LLM"
    CHAT_MODEL = "CHAT_MODEL"
    EMBEDDING = "EMBEDDING"
    RETRIEVER = "RETRIEVER"
    RERANKER = "RERANKER"
    TOOL = "TOOL"
    AGENT = "AGENT"
    CHAIN = "CHAIN"
    PARSER = "PARSER"
    GUARDRAIL = "GUARDRAIL"
    EVALUATOR = "EVALUATOR"
    UNKNOWN = "UNKNOWN"

    def __str__(self) -> str:
        return self.value


class SpanStatus(str, Enum):
    """A span's outcome: ``OK``, ``ERROR`` or ``UNSET`` (never set by its code)."""

    OK = "OK"
    ERROR = "ERROR"
    UNSET = "UNSET"

    def __str__(self) -> str:
        return self.value


class TraceState(str, Enum):
    """A trace's outcome: its root span's status, or IN_PROGRESS before the root ends."""

    OK = "OK"
    ERROR = "ERROR"
    IN_PROGRESS = "IN_PROGRESS"

    def __str__(self) -> str:
        return self.value


# Attribute keys on the OpenTelemetry span. They travel with the span, so an
# OTLP round trip keeps them; the store moves them into columns of their own.
SPAN_TYPE = "assay.span.type"
SPAN_INPUTS = "assay.span.inputs"
SPAN_OUTPUTS = "assay.span.outputs"
SPAN_LOCAL_ROOT = "assay.span.local_root"  # parent belongs to another tracer
SPAN_STOPPED_EARLY = "assay.span.stopped_early"
SPAN_INTERRUPTED = "assay.span.interrupted"
SPAN_JSON_ATTRIBUTES = "assay.span.json_attributes"  # keys whose values are JSON text
TRACE_TAGS = "assay.trace.tags"
TRACE_METADATA = "assay.trace.metadata"
TRACE_NAME = "assay.trace.name"
TRACE_EXPERIMENT = "assay.trace.experiment"
TRACE_RUN_ID = "assay.trace.run_id"  # on a root span started while a run is active
RESOURCE_EXPERIMENT = "assay.experiment"

#: Attribute keys that the store lifts into columns and tables of their own.
RESERVED_KEYS = frozenset({
    SPAN_TYPE, SPAN_INPUTS, SPAN_OUTPUTS, SPAN_LOCAL_ROOT, SPAN_JSON_ATTRIBUTES,
    TRACE_TAGS, TRACE_METADATA, TRACE_NAME, TRACE_EXPERIMENT, TRACE_RUN_ID,
})

EVENT_FIRST_ITEM = "first_item"
