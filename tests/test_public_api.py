import assay

PUBLIC = {
    "__version__", "AssayError", "Assessment", "AssessmentSource", "ConfigurationError",
    "configure", "count_traces", "delete_trace_tag", "delete_traces", "Feedback", "flush",
    "get_current_span", "get_last_trace_id", "get_trace", "InvalidFilter", "JudgeError",
    "LiveSpan", "log_expectation", "log_feedback", "Scorer", "scorer", "ScorerError",
    "search_traces", "set_trace_tag", "shutdown", "Span", "SpanEvent", "SpanStatus", "SpanType",
    "start_span", "StoreError", "Trace", "trace", "TraceInfo", "TraceState",
    "update_current_trace",
}


def test_all_is_exactly_the_public_names():
    assert set(assay.__all__) == PUBLIC
    assert assay.__all__ == sorted(assay.__all__, key=str.lower)


def test_every_public_name_resolves():
    for name in assay.__all__:
        assert getattr(assay, name) is not None


def test_module_namespace_has_no_stray_public_names():
    stray = {n for n in vars(assay) if not n.startswith("_")} - PUBLIC - {
        "config", "errors", "store", "tracing", "exporters", "testing", "cli", "demo",
        "evaluate"}
    assert stray == set()
