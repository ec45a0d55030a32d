"""assay: OpenTelemetry-native tracing and GenAI evaluation.

    import assay

    @assay.trace(span_type="LLM")
    def answer(question: str) -> str: ...

    answer("What is assay?")
    assay.flush()
    assay.search_traces()

    result = assay.evaluate(data, scorers=[...], predict_fn=answer)
"""

import typing as _typing

from assay._version import __version__
from assay.config import configure
from assay.errors import (
    AssayError,
    ConfigurationError,
    InvalidData,
    InvalidFilter,
    JudgeError,
    ScorerError,
    StoreError,
)

# ``assay.evaluate`` is the function (bound over the subpackage's attribute,
# which stays importable by name: ``from assay.evaluate import builtin``);
# ``assay.scorers`` and ``assay.judges`` are the public modules for scorers
# and judges.
from assay.evaluate.evaluation import evaluate
from assay.evaluate.scorers import Feedback, Scorer, scorer
from assay.store.feedback import (
    AssessmentSource,
    delete_assessment,
    get_assessment,
    log_expectation,
    log_feedback,
    override_feedback,
)
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

if _typing.TYPE_CHECKING:
    from assay.evaluate.compare import compare
    from assay.evaluate.results import EvaluationResult
    from assay.store.datasets import (
        Dataset,
        create_dataset,
        delete_dataset,
        get_dataset,
        search_datasets,
    )
    from assay.store.runs import (
        ActiveRun,
        Run,
        active_run,
        delete_run,
        end_run,
        get_metric_history,
        get_run,
        load_table,
        log_metric,
        log_metrics,
        log_param,
        log_params,
        log_table,
        search_runs,
        set_tag,
        set_tags,
        start_run,
    )

# Runs, datasets and comparisons are imported on first use: a traced
# application that never evaluates does not pay for them at ``import assay``.
_LAZY = {
    "compare": "assay.evaluate.compare",
    "EvaluationResult": "assay.evaluate.results",
    **dict.fromkeys(("Dataset", "create_dataset", "delete_dataset", "get_dataset",
                     "search_datasets"), "assay.store.datasets"),
    **dict.fromkeys(("ActiveRun", "Run", "active_run", "delete_run", "end_run",
                     "get_metric_history", "get_run", "load_table", "log_metric",
                     "log_metrics", "log_param", "log_params", "log_table", "search_runs",
                     "set_tag", "set_tags", "start_run"), "assay.store.runs"),
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'assay' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "__version__",
    "active_run",
    "ActiveRun",
    "AssayError",
    "Assessment",
    "AssessmentSource",
    "compare",
    "ConfigurationError",
    "configure",
    "count_traces",
    "create_dataset",
    "Dataset",
    "delete_assessment",
    "delete_dataset",
    "delete_run",
    "delete_trace_tag",
    "delete_traces",
    "end_run",
    "evaluate",
    "EvaluationResult",
    "Feedback",
    "flush",
    "get_assessment",
    "get_current_span",
    "get_dataset",
    "get_last_trace_id",
    "get_metric_history",
    "get_run",
    "get_trace",
    "InvalidData",
    "InvalidFilter",
    "JudgeError",
    "LiveSpan",
    "load_table",
    "log_expectation",
    "log_feedback",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_table",
    "override_feedback",
    "Run",
    "Scorer",
    "scorer",
    "ScorerError",
    "search_datasets",
    "search_runs",
    "search_traces",
    "set_tag",
    "set_tags",
    "set_trace_tag",
    "shutdown",
    "Span",
    "SpanEvent",
    "SpanStatus",
    "SpanType",
    "start_run",
    "start_span",
    "StoreError",
    "Trace",
    "trace",
    "TraceInfo",
    "TraceState",
    "update_current_trace",
]
