"""assay: OpenTelemetry-native tracing and GenAI evaluation.

    import assay

    @assay.trace(span_type="LLM")
    def answer(question: str) -> str: ...

    answer("What is assay?")
    assay.flush()
    assay.search_traces()
"""

from assay._version import __version__
from assay.config import configure
from assay.errors import (
    AssayError,
    ConfigurationError,
    InvalidFilter,
    JudgeError,
    ScorerError,
    StoreError,
)
from assay.evaluate.scorers import Feedback, Scorer, scorer
from assay.store.feedback import AssessmentSource, log_expectation, log_feedback
from assay.store.query import (
    count_traces,
    delete_trace_tag,
    delete_traces,
    get_trace,
    search_traces,
    set_trace_tag,
)
from assay.tracing._runtime import flush, shutdown
from assay.tracing.decorator import trace
from assay.tracing.models import Assessment, Span, SpanEvent, Trace, TraceInfo
from assay.tracing.span import (
    LiveSpan,
    get_current_span,
    get_last_trace_id,
    start_span,
    update_current_trace,
)
from assay.tracing.types import SpanStatus, SpanType, TraceState

__all__ = [
    "__version__",
    "AssayError",
    "Assessment",
    "AssessmentSource",
    "ConfigurationError",
    "configure",
    "count_traces",
    "delete_trace_tag",
    "delete_traces",
    "Feedback",
    "flush",
    "get_current_span",
    "get_last_trace_id",
    "get_trace",
    "InvalidFilter",
    "JudgeError",
    "LiveSpan",
    "log_expectation",
    "log_feedback",
    "Scorer",
    "scorer",
    "ScorerError",
    "search_traces",
    "set_trace_tag",
    "shutdown",
    "Span",
    "SpanEvent",
    "SpanStatus",
    "SpanType",
    "start_span",
    "StoreError",
    "Trace",
    "trace",
    "TraceInfo",
    "TraceState",
    "update_current_trace",
]
