import assay

PUBLIC = {
    "__version__", "AssayError", "Assessment", "AssessmentSource", "ConfigurationError",
    "configure", "count_traces", "delete_trace_tag", "delete_traces", "Feedback", "flush",
    "get_current_span", "get_last_trace_id", "get_trace", "InvalidFilter", "JudgeError",
    "LiveSpan", "log_expectation", "log_feedback", "Scorer", "scorer", "ScorerError",
    "search_traces", "set_trace_tag", "shutdown", "Span", "SpanEvent", "SpanStatus", "SpanType",
    "start_span", "StoreError", "Trace", "trace", "TraceInfo", "TraceState",
    "update_current_trace",
    "EvaluationResult", "InvalidData", "evaluate", "Dataset", "create_dataset",
    "delete_dataset", "get_dataset", "search_datasets", "Run", "active_run", "end_run",
    "get_run", "load_table", "log_metric", "log_metrics", "log_param", "log_params",
    "log_table", "search_runs", "set_tag", "set_tags", "start_run", "compare",
    "ActiveRun", "delete_run", "get_metric_history", "delete_assessment", "get_assessment",
    "override_feedback",
}


def test_all_is_exactly_the_public_names():
    assert set(assay.__all__) == PUBLIC
    assert assay.__all__ == sorted(assay.__all__, key=str.lower)


def test_every_public_name_resolves():
    for name in assay.__all__:
        assert getattr(assay, name) is not None


def test_module_namespace_has_no_stray_public_names():
    # (pytest's assertion rewriting of the plugin's package adds "@py_*" names)
    stray = {n for n in vars(assay) if not n.startswith("_") and n.isidentifier()} - PUBLIC - {
        "config", "errors", "store", "tracing", "exporters", "testing", "cli", "demo",
        "evaluate", "scorers", "judges", "pytest_plugin"}
    assert stray == set()


def test_evaluate_is_the_function_and_its_subpackage_stays_importable():
    from assay.evaluate import builtin
    from assay.evaluate.evaluation import evaluate

    assert assay.evaluate is evaluate
    assert builtin.exact_match().name == "exact_match"
    from assay import scorers

    assert scorers.exact_match is builtin.exact_match
