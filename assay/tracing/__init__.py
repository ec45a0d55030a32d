"""Tracing: ``@trace``, ``start_span``, live spans, context propagation and the data model."""

from assay.tracing.context import TracedThreadPoolExecutor, continue_trace, inject_traceparent, wrap
from assay.tracing.decorator import trace
from assay.tracing.span import (
    LiveSpan,
    get_current_span,
    get_last_trace_id,
    start_span,
    update_current_trace,
)
from assay.tracing.types import SpanStatus, SpanType, TraceState

__all__ = [
    "LiveSpan",
    "SpanStatus",
    "SpanType",
    "TraceState",
    "TracedThreadPoolExecutor",
    "continue_trace",
    "get_current_span",
    "get_last_trace_id",
    "inject_traceparent",
    "start_span",
    "trace",
    "update_current_trace",
    "wrap",
]
