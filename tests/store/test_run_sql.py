"""Runs in the store, on SQLite and PostgreSQL: writes, reads, search_runs' filter
language (every field kind and operator), ordering and paging, batch assessments,
and runs and traces outliving each other's deletion."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import pytest

import assay
from assay.store import runs as run_api
from assay.store.query import store
from assay.tracing.models import Assessment

# -- a fixed set of runs ------------------------------------------------------------------

NAMES = ("baseline-a", "baseline-b", "other", "elsewhere")


@pytest.fixture
def runs(tracing_any: str) -> Iterator[dict[str, str]]:
    """Three runs of experiment 'test' (and one of another), with known times:

    ============  ==========  ===================  ==============  ========  ========
    run           status      correctness/mean     loss by step    model     tags
    ============  ==========  ===================  ==============  ========  ========
    baseline-a    FINISHED    0.9                  1.0, 0.2        gpt-4o    env=prod
    baseline-b    FAILED      0.7                  0.5             4o-mini   env=staging, team=x
    other         RUNNING     NaN                  -               -         -
    ============  ==========  ===================  ==============  ========  ========
    """
    st = store()
    ids = {name: uuid.uuid4().hex for name in NAMES}
    st.create_run(ids["baseline-a"], experiment="test", name="baseline-a", start_time_ms=1_000,
                  tags={"env": "prod"})
    st.create_run(ids["baseline-b"], experiment="test", name="baseline-b", start_time_ms=2_000,
                  tags={"env": "staging", "team": "x"})
    st.create_run(ids["other"], experiment="test", name="other", start_time_ms=3_000)
    st.create_run(ids["elsewhere"], experiment="other", name="elsewhere", start_time_ms=4_000)
    st.log_params(ids["baseline-a"], {"model": "gpt-4o", "k": "5"})
    st.log_params(ids["baseline-b"], {"model": "gpt-4o-mini"})
    st.log_metrics(ids["baseline-a"], [("correctness/mean", 0.9, 0, 1_100),
                                       ("loss", 1.0, 0, 1_100), ("loss", 0.2, 1, 1_200)])
    st.log_metrics(ids["baseline-b"], [("correctness/mean", 0.7, 0, 2_100),
                                       ("loss", 0.5, 0, 2_100)])
    st.log_metrics(ids["other"], [("correctness/mean", math.nan, 0, 3_100)])
    st.update_run(ids["baseline-a"], status="FINISHED", end_time_ms=1_500)
    st.update_run(ids["baseline-b"], status="FAILED", end_time_ms=2_500)
    yield ids


def names(frame_or_list: object) -> list[str]:
    runs = frame_or_list if isinstance(frame_or_list, list) else None
    if runs is not None:
        return [r.name for r in runs]
    return list(frame_or_list["name"])  # type: ignore[index]


def found(filter_string: str, **kwargs: object) -> set[str]:
    return {r.name for r in run_api.search_runs(filter_string, return_type="list", **kwargs)}


# -- writing and reading -------------------------------------------------------------------


def test_a_run_reads_back_with_params_latest_metrics_and_tags(runs):
    run = store().get_run(runs["baseline-a"])
    assert run is not None
    assert (run.name, run.experiment, run.status) == ("baseline-a", "test", "FINISHED")
    assert (run.start_time_ms, run.end_time_ms) == (1_000, 1_500)
    assert run.params == {"k": "5", "model": "gpt-4o"}
    assert run.metrics == {"correctness/mean": 0.9, "loss": 0.2}  # loss: its latest step
    assert run.tags == {"env": "prod"}
    other = store().get_run(runs["other"])
    assert other is not None and math.isnan(other.metrics["correctness/mean"])
    assert (other.status, other.end_time_ms) == ("RUNNING", None)
    assert store().get_run(uuid.uuid4().hex) is None


def test_metric_history_keeps_every_step(runs):
    history = store().get_metric_history(runs["baseline-a"], "loss")
    assert [(m.step, m.value, m.timestamp_ms) for m in history] == [(0, 1.0, 1_100),
                                                                    (1, 0.2, 1_200)]
    assert store().get_metric_history(runs["baseline-a"], "nothing") == []


def test_log_metrics_writes_several_keys_at_once_and_the_last_of_a_step_wins(runs):
    rid = runs["other"]
    store().log_metrics(rid, [("a", 1.0, 0, 1), ("b", 2.0, 0, 1), ("a", 3.0, 0, 2),
                              ("a", 4.0, 7, 3)])
    run = store().get_run(rid)
    assert run is not None
    assert (run.metrics["a"], run.metrics["b"]) == (4.0, 2.0)
    assert [(m.step, m.value) for m in store().get_metric_history(rid, "a")] == [(0, 3.0),
                                                                                 (7, 4.0)]
    store().log_metrics(rid, [("a", -1.5, 7, 4), ("inf", math.inf, 0, 4)])
    run = store().get_run(rid)
    assert run is not None and run.metrics["a"] == -1.5 and run.metrics["inf"] == math.inf


def test_params_and_tags_are_upserts_and_tags_can_be_deleted(runs):
    rid = runs["baseline-b"]
    store().log_params(rid, {"model": "gpt-5", "temperature": "0.1"})
    store().set_run_tags(rid, {"env": "prod"})
    store().delete_run_tag(rid, "team")
    store().delete_run_tag(rid, "never-set")
    run = store().get_run(rid)
    assert run is not None
    assert run.params == {"model": "gpt-5", "temperature": "0.1"}
    assert run.tags == {"env": "prod"}


def test_update_run_to_running_clears_the_end_time_and_can_rename(runs):
    rid = runs["baseline-a"]
    store().update_run(rid, status="RUNNING", name="renamed")
    run = store().get_run(rid)
    assert run is not None and (run.status, run.end_time_ms, run.name) == ("RUNNING", None,
                                                                            "renamed")
    with pytest.raises(ValueError, match="DONE"):
        store().update_run(rid, status="DONE")


def test_tables_are_stored_replaced_and_read_back(runs):
    rid = runs["baseline-a"]
    assert store().load_run_table(rid, "rows") is None
    store().log_run_table(rid, "rows", '[{"a": 1}]')
    store().log_run_table(rid, "rows", '[{"a": 2}]')
    assert store().load_run_table(rid, "rows") == '[{"a": 2}]'


def test_writing_into_a_missing_run_is_an_error_and_writes_nothing(runs):
    missing = uuid.uuid4().hex
    for call in (lambda: store().log_params(missing, {"a": "1"}),
                 lambda: store().log_metrics(missing, [("m", 1.0, 0, 0)]),
                 lambda: store().set_run_tags(missing, {"t": "v"}),
                 lambda: store().log_run_table(missing, "t", "[]"),
                 lambda: store().update_run(missing, status="FINISHED")):
        with pytest.raises(assay.StoreError, match=f"no run with id '{missing}'"):
            call()
    assert store().get_run(missing) is None
    assert store().get_metric_history(missing, "m") == []


def test_creating_a_run_twice_is_an_error(runs):
    with pytest.raises(assay.StoreError, match="exists already"):
        store().create_run(runs["other"], experiment="test", name="again", start_time_ms=0)


def test_deleting_a_run_removes_everything_it_logged(runs):
    rid = runs["baseline-a"]
    store().log_run_table(rid, "rows", "[]")
    assert store().delete_run(rid) is True
    assert store().delete_run(rid) is False
    assert store().get_run(rid) is None
    assert store().get_metric_history(rid, "loss") == []
    assert store().load_run_table(rid, "rows") is None
    assert found("params.model LIKE 'gpt%'") == {"baseline-b"}


def test_runs_and_traces_outlive_each_other(runs):
    with run_api.start_run("with-traces") as run, assay.start_span("inside"):
        pass
    assert assay.flush(timeout_s=30)
    trace_id = assay.get_last_trace_id()
    assert trace_id is not None
    assert assay.delete_traces("trace.name = 'inside'") == 1
    assert store().get_run(run.run_id) is not None  # deleting traces leaves runs
    with run_api.start_run("again") as again, assay.start_span("kept"):
        pass
    assert assay.flush(timeout_s=30)
    kept = assay.get_last_trace_id()
    assert kept is not None
    assert run_api.delete_run(again.run_id)
    trace = assay.get_trace(kept)  # deleting a run leaves its traces, with its id
    assert trace is not None and trace.info.run_id == again.run_id


# -- batch assessments ---------------------------------------------------------------------


def _assessment(trace_id: str, name: str, value: object, source_id: str | None = "scorer",
                when: int = 0) -> Assessment:
    return Assessment(assessment_id=uuid.uuid4().hex, trace_id=trace_id, name=name,
                      kind="feedback", value=value, source_type="CODE", source_id=source_id,
                      created_time_ms=when)


def test_log_assessments_overrides_as_log_assessment_does(tracing_any):
    with assay.start_span("scored"):
        pass
    assert assay.flush(timeout_s=30)
    tid = assay.get_last_trace_id()
    assert tid is not None
    stored = _assessment(tid, "correct", False, when=1)
    anonymous = _assessment(tid, "correct", 0.1, source_id=None, when=1)
    store().log_assessments([stored, anonymous])
    batch = [_assessment(tid, "correct", True, when=2),      # overrides `stored`
             _assessment(tid, "correct", 0.5, when=3),       # overrides the one before
             _assessment(tid, "correct", 0.2, source_id=None, when=4),  # overrides `anonymous`
             _assessment(tid, "relevant", 1.0, when=5)]
    store().log_assessments(batch)
    store().log_assessments([])
    trace = assay.get_trace(tid)
    assert trace is not None
    by_id = {a.assessment_id: a for a in trace.info.assessments}
    assert len(by_id) == 6
    assert by_id[stored.assessment_id].overridden_by == batch[0].assessment_id
    assert by_id[batch[0].assessment_id].overridden_by == batch[1].assessment_id
    assert by_id[anonymous.assessment_id].overridden_by == batch[2].assessment_id
    valid = {(a.name, a.source_id): a.value for a in trace.info.assessments
             if a.overridden_by is None}
    assert valid == {("correct", "scorer"): 0.5, ("correct", None): 0.2,
                     ("relevant", "scorer"): 1.0}
    assert assay.count_traces("feedback.correct = 0.5") == 1
    assert assay.count_traces("feedback.correct = true") == 0


# -- search_runs: every field kind and operator ----------------------------------------------

FILTERS = [
    ("metrics.`correctness/mean` >= 0.8", {"baseline-a"}),
    ("metric.`correctness/mean` < 0.8", {"baseline-b"}),
    ("metrics.`correctness/mean` > 0", {"baseline-a", "baseline-b"}),  # NaN matches nothing
    ("metrics.loss = 0.2", {"baseline-a"}),
    ("metrics.loss = 1.0", set()),  # an earlier step is not the run's value
    ("metrics.loss != 0.2", {"baseline-b"}),
    ("metrics.loss > 0.1 AND metrics.loss <= 0.5", {"baseline-a", "baseline-b"}),
    ("metrics.loss < 0.5", {"baseline-a"}),
    ("metrics.loss IN (0.5, 0.3)", {"baseline-b"}),
    ("metrics.loss NOT IN (0.5)", {"baseline-a"}),
    ("metrics.loss IS NULL", {"other"}),
    ("metrics.loss IS NOT NULL", {"baseline-a", "baseline-b"}),
    ("metrics.loss > '0.3'", {"baseline-b"}),
    ("params.model = 'gpt-4o'", {"baseline-a"}),
    ("param.model != 'gpt-4o'", {"baseline-b"}),
    ("params.model LIKE 'gpt-4o%'", {"baseline-a", "baseline-b"}),
    ("params.model LIKE 'GPT%'", set()),  # LIKE is case-sensitive
    ("params.model ILIKE 'GPT-4O-MINI'", {"baseline-b"}),
    ("params.model IN ('gpt-4o', 'claude')", {"baseline-a"}),
    ("params.model NOT IN ('gpt-4o')", {"baseline-b"}),
    ("params.k IS NULL", {"baseline-b", "other"}),
    ("parameters.k IS NOT NULL", {"baseline-a"}),
    ("params.model RLIKE 'mini$'", {"baseline-b"}),
    ("tags.env = 'prod'", {"baseline-a"}),
    ("tags.env != 'prod'", {"baseline-b"}),
    ("tag.team IS NOT NULL", {"baseline-b"}),
    ("tags.`env` ILIKE 'STAG%'", {"baseline-b"}),
    ("attributes.status = 'FINISHED'", {"baseline-a"}),
    ("status IN ('FAILED', 'RUNNING')", {"baseline-b", "other"}),
    ("attribute.status != 'RUNNING'", {"baseline-a", "baseline-b"}),
    ("run_name = 'other'", {"other"}),
    ("attributes.run_name LIKE 'baseline%'", {"baseline-a", "baseline-b"}),
    ("attributes.name ILIKE 'OTHER'", {"other"}),
    ("attributes.start_time > 1500", {"baseline-b", "other"}),
    ("start_time <= 2000", {"baseline-a", "baseline-b"}),
    ("attributes.start_time < '1970-01-01T00:00:02Z'", {"baseline-a"}),
    ("end_time IS NULL", {"other"}),
    ("attributes.end_time >= 2500", {"baseline-b"}),
    ("attributes.experiment = 'test'", {"baseline-a", "baseline-b", "other"}),
    ("NOT params.model = 'gpt-4o'", {"baseline-b", "other"}),
    ("NOT (tags.env = 'prod' OR status = 'RUNNING')", {"baseline-b"}),
    ("(tags.env = 'prod' OR tags.env = 'staging') AND NOT metrics.loss > 0.3", {"baseline-a"}),
    ("params.model = 'gpt-4o' or run_name = 'other'", {"baseline-a", "other"}),
]


@pytest.mark.parametrize(("filter_string", "expected"), FILTERS, ids=[f for f, _ in FILTERS])
def test_search_runs_filters(runs, filter_string, expected):
    assert found(filter_string) == expected


def test_search_runs_by_run_id(runs):
    rid = runs["baseline-b"]
    assert found(f"attributes.run_id = '{rid}'") == {"baseline-b"}
    assert found(f"run_id IN ('{rid}', '{runs['other']}')") == {"baseline-b", "other"}
    assert found(f"id != '{rid}'") == {"baseline-a", "other"}


def test_search_runs_is_scoped_to_an_experiment(runs):
    assert found(None) == {"baseline-a", "baseline-b", "other"}
    assert found("", experiment="other") == {"elsewhere"}
    assert found(None, experiment="*") == set(NAMES)
    assert found("attributes.experiment = 'other'", experiment="*") == {"elsewhere"}


@pytest.mark.parametrize(("filter_string", "position", "message"), [
    ("metrics.correctness/mean > 1", 19, "backticks"),
    ("metrics.x > 'high'", 12, "takes a number"),
    ("metrics.x LIKE '1%'", 10, "does not take LIKE"),
    ("statuz = 'FINISHED'", 0, "did you mean 'attributes.status'"),
    ("trace.status = 'OK'", 0, "unknown field"),
    ("params.model = gpt", 15, "quote text values"),
    ("params.model = 'a' AND", 22, "expected a field"),
    ("(status = 'RUNNING'", 19, "expected ')'"),
    ("attributes.start_time > 'yesterday'", 24, "ISO date"),
])
def test_malformed_run_filters_name_the_position(runs, filter_string, position, message):
    with pytest.raises(assay.InvalidFilter) as info:
        run_api.search_runs(filter_string)
    assert info.value.position == position
    assert message in str(info.value)


# -- ordering and paging ---------------------------------------------------------------------


@pytest.mark.parametrize(("order_by", "expected"), [
    (None, ["other", "baseline-b", "baseline-a"]),
    (["start_time"], ["baseline-a", "baseline-b", "other"]),
    (["attributes.start_time DESC"], ["other", "baseline-b", "baseline-a"]),
    (["metrics.`correctness/mean` DESC"], ["baseline-a", "baseline-b", "other"]),
    (["metrics.`correctness/mean` ASC"], ["baseline-b", "baseline-a", "other"]),
    (["metrics.loss"], ["baseline-a", "baseline-b", "other"]),
    (["params.model DESC"], ["baseline-b", "baseline-a", "other"]),
    (["tags.team", "start_time DESC"], ["baseline-b", "other", "baseline-a"]),
    (["run_name"], ["baseline-a", "baseline-b", "other"]),
    (["status", "end_time DESC"], ["baseline-b", "baseline-a", "other"]),
])
def test_search_runs_order(runs, order_by, expected):
    assert names(run_api.search_runs(order_by=order_by, return_type="list")) == expected
    assert names(run_api.search_runs(order_by=order_by)) == expected


@pytest.mark.parametrize("order_by", [None, ["metrics.`correctness/mean` DESC"],
                                      ["params.model"], ["end_time"]])
def test_search_runs_pages_with_a_cursor(runs, order_by):
    whole = names(run_api.search_runs(order_by=order_by, return_type="list"))
    seen: list[str] = []
    token = None
    while True:
        page = run_api.search_runs(order_by=order_by, max_results=1, page_token=token,
                                   return_type="list")
        seen.extend(names(page))
        token = page.next_page_token
        if token is None:
            break
    assert seen == whole
    frame = run_api.search_runs(order_by=order_by, max_results=2)
    assert frame.attrs["next_page_token"] is not None
    rest = run_api.search_runs(order_by=order_by, page_token=frame.attrs["next_page_token"])
    assert names(frame) + names(rest) == whole
    assert rest.attrs["next_page_token"] is None


def test_a_page_token_only_continues_its_own_ordering(runs):
    page = run_api.search_runs(max_results=1, return_type="list")
    with pytest.raises(ValueError, match="search_runs"):
        run_api.search_runs(order_by=["run_name"], page_token=page.next_page_token)
    with pytest.raises(ValueError, match="search_runs"):
        run_api.search_runs(page_token="not-a-token")


@pytest.mark.parametrize("order_by", [["metrics"], ["nonsense DESC"], ["trace.name"], "start_time",
                                      [""]])
def test_bad_order_by_is_invalid_filter(runs, order_by):
    with pytest.raises(assay.InvalidFilter):
        run_api.search_runs(order_by=order_by)


def test_an_order_by_naming_no_field_says_which_item(runs):
    with pytest.raises(assay.InvalidFilter, match="cannot order runs by 'nonsense'") as info:
        run_api.search_runs(order_by=["start_time", "nonsense DESC"])
    assert info.value.filter_string == "nonsense DESC"


def test_the_frame_has_a_column_per_metric_param_and_tag(runs):
    frame = run_api.search_runs(order_by=["start_time"])
    assert list(frame.columns) == [*run_api.RUN_FRAME_COLUMNS, "metrics.correctness/mean",
                                   "metrics.loss", "params.k", "params.model", "tags.env",
                                   "tags.team"]
    first = frame.iloc[0]
    assert (first["name"], first["metrics.loss"], first["params.model"],
            first["tags.env"]) == ("baseline-a", 0.2, "gpt-4o", "prod")
    assert math.isnan(frame.iloc[2]["metrics.loss"])
    empty = run_api.search_runs("run_name = 'none'")
    assert list(empty.columns) == list(run_api.RUN_FRAME_COLUMNS) and len(empty) == 0


@pytest.mark.parametrize("max_results", [0, 50_001, True, 1.5])
def test_bad_max_results(runs, max_results):
    with pytest.raises(ValueError, match="max_results"):
        run_api.search_runs(max_results=max_results)
