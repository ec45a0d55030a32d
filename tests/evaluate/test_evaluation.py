"""evaluate(): predictions under traces of a run, scores on every row, feedback on
the traces, metrics and the per-row table on the run."""

from __future__ import annotations

import asyncio
import threading
import time

import pandas as pd
import pytest

import assay
from assay.errors import ConfigurationError, InvalidData, ScorerError
from assay.evaluate import builtin
from assay.evaluate.results import EvaluationResult

DATA = [
    {"inputs": {"question": "capital of France?"},
     "expectations": {"expected_response": "Paris"}},
    {"inputs": {"question": "capital of Italy?"},
     "expectations": {"expected_response": "Rome"}},
    {"inputs": {"question": "capital of Spain?"},
     "expectations": {"expected_response": "Madrid"}},
]
ANSWERS = {"capital of France?": "Paris", "capital of Italy?": "Rome",
           "capital of Spain?": "Barcelona"}


@assay.trace(span_type="RETRIEVER")
def lookup(question: str) -> list[str]:
    return [ANSWERS.get(question, "")]


@assay.trace(span_type="AGENT")
def app(question: str) -> str:
    return lookup(question)[0]


@assay.scorer
def short(outputs) -> bool:
    return len(outputs) <= 6


@assay.scorer(aggregations=["mean", "max"], pass_if=">= 2")
def spans_seen(trace) -> int:
    return len(trace.spans)


def test_predict_fn_rows_are_traced_scored_and_logged(tracing):
    result = assay.evaluate(DATA, scorers=[builtin.exact_match(), short], predict_fn=app,
                            run_name="capitals")
    assert isinstance(result, EvaluationResult)
    m = result.metrics
    assert m["exact_match/mean"] == pytest.approx(2 / 3)
    assert m["short/mean"] == pytest.approx(2 / 3) and m["short/pass_rate"] == pytest.approx(2 / 3)
    assert m["exact_match/error_count"] == 0 and m["rows"] == 3
    assert m["predict/error_count"] == 0 and m["predict/latency_ms_p50"] >= 0
    table = result.table
    assert list(table["row"]) == [0, 1, 2]
    assert list(table["outputs"]) == ["Paris", "Rome", "Barcelona"]
    assert list(table["exact_match/value"]) == [True, True, False]
    assert table["trace_id"].str.fullmatch("[0-9a-f]{32}").all()

    run = assay.get_run(result.run_id)
    assert run.name == "capitals" and run.status == "FINISHED" and run.experiment == "test"
    assert run.metrics["exact_match/mean"] == pytest.approx(2 / 3)
    assert run.params["predict_fn"].endswith("app")
    assert '"kind": "code"' in run.params["scorer.exact_match"]
    assert run.tags["assay.evaluation"] == "true"

    # The traces carry the run id, the app's own spans nest inside, the scores are feedback.
    traces = assay.search_traces(f"run_id = '{result.run_id}'", return_type="list")
    assert len(traces) == 3
    one = next(t for t in traces if t.trace_id == table["trace_id"][2])
    assert [s.name for _, s in one.walk()] == ["app", "app", "lookup"]
    failed = assay.search_traces(f"run_id = '{result.run_id}' AND feedback.exact_match = false",
                                 return_type="list")
    assert [t.trace_id for t in failed] == [table["trace_id"][2]]
    feedback = {a.name: a for a in one.info.assessments}
    assert feedback["exact_match"].source_type == "CODE"
    assert feedback["exact_match"].metadata["assay.run_id"] == result.run_id

    stored = assay.load_table(result.run_id, "eval_results")
    assert list(stored["exact_match/value"]) == [True, True, False]


def test_predict_fn_is_called_once_per_row_and_nothing_else(tracing):
    calls: list[str] = []

    def predict(question: str) -> str:
        calls.append(question)
        return "x"

    assay.evaluate(DATA, [short], predict_fn=predict)
    assert sorted(calls) == sorted(d["inputs"]["question"] for d in DATA)


def test_an_exception_in_predict_fn_is_that_rows_error(tracing):
    def predict(question: str) -> str:
        if "Italy" in question:
            raise RuntimeError("model down")
        return ANSWERS[question]

    result = assay.evaluate(DATA, [builtin.exact_match()], predict_fn=predict)
    assert result.metrics["predict/error_count"] == 1
    assert result.metrics["exact_match/error_count"] == 1
    assert result.metrics["exact_match/mean"] == pytest.approx(1 / 2)
    assert result.table["error"][1] == "RuntimeError: model down"
    assert result.table["error"][0] is None and result.table["exact_match/error"][0] is None
    worst = result.worst_rows()
    assert worst[0] == {"row": 1, "trace_id": result.table["trace_id"][1],
                        "why": "predict_fn: RuntimeError: model down"}
    assert [w["row"] for w in worst] == [1, 2]
    assert str(result.errors[0]).startswith("row 1: predict_fn: RuntimeError")
    trace = assay.get_trace(result.table["trace_id"][1])
    assert trace.info.state == "ERROR"
    assert trace.spans[0].events[0].name == "exception"


def test_scorers_that_raise_or_hang_give_error_values(tracing):
    @assay.scorer
    def broken(outputs):
        raise ValueError("cannot score")

    @assay.scorer(timeout=0.2)
    def slow(outputs):
        time.sleep(5 if outputs == "Rome" else 0)
        return 1.0

    begun = time.monotonic()
    result = assay.evaluate(DATA, [broken, slow], predict_fn=app)
    assert time.monotonic() - begun < 4
    assert result.metrics["broken/error_count"] == 3
    assert result.metrics["slow/error_count"] == 1 and result.metrics["slow/mean"] == 1.0
    assert result.table["slow/error"][1] == "timed out after 0.2 s"
    assert result.table["broken/error"][0] == "ValueError: cannot score"
    assert {e.scorer for e in result.errors} == {"broken", "slow"}


def test_scorers_get_the_trace_of_a_predicted_row(tracing):
    result = assay.evaluate(DATA, [spans_seen], predict_fn=app)
    assert list(result.table["spans_seen/value"]) == [3, 3, 3]
    assert result.metrics["spans_seen/max"] == 3 and result.metrics["spans_seen/pass_rate"] == 1


def test_given_outputs_get_a_trace_each_in_the_run(tracing):
    data = [{"inputs": {"q": "a"}, "outputs": "Paris", "expectations": {"expected_response":
                                                                         "Paris"},
             "tags": {"source": "sheet"}},
            {"inputs": {"q": "b"}, "outputs": "London", "expectations": {"expected_response":
                                                                          "Rome"}}]
    result = assay.evaluate(data, [builtin.exact_match(), spans_seen])
    assert list(result.table["exact_match/value"]) == [True, False]
    traces = assay.search_traces(f"run_id = '{result.run_id}' AND tags.source = 'sheet'",
                                 return_type="list")
    assert len(traces) == 1 and traces[0].spans[0].outputs == "Paris"
    assert "predict/error_count" not in result.metrics


def test_stored_traces_are_scored_and_their_feedback_attached(tracing, fetch):
    ids = []
    for question in ANSWERS:
        app(question)
        ids.append(fetch().trace_id)
    assay.log_expectation(ids[2], "expected_response", "Madrid")
    frame = assay.search_traces("expectation.expected_response IS NOT NULL")
    result = assay.evaluate(frame, [builtin.exact_match()])
    assert list(result.table["trace_id"]) == [ids[2]]
    assert assay.search_traces("feedback.exact_match = false", return_type="list")[0] \
        .trace_id == ids[2]


def test_an_async_predict_fn_runs_on_one_loop_within_max_workers(tracing):
    active = 0
    peak = 0
    loops: set[int] = set()

    async def predict(question: str) -> str:
        nonlocal active, peak
        loops.add(id(asyncio.get_running_loop()))
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        return ANSWERS[question]

    data = DATA * 4
    result = assay.evaluate(data, [builtin.exact_match()], predict_fn=predict, max_workers=3)
    assert result.metrics["exact_match/mean"] == pytest.approx(2 / 3)
    assert peak == 3 and len(loops) == 1
    assert len(assay.search_traces(f"run_id = '{result.run_id}'", return_type="list")) == 12


def test_sync_rows_run_concurrently_up_to_max_workers(tracing):
    lock = threading.Lock()
    active = 0
    peak = 0

    def predict(question: str) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return "x"

    assay.evaluate(DATA * 4, [short], predict_fn=predict, max_workers=4)
    assert peak == 4


def test_inside_an_active_run_the_evaluation_logs_into_it(tracing):
    with assay.start_run(name="outer") as run:
        result = assay.evaluate(DATA, [short], predict_fn=app)
        assert result.run_id == run.run_id
        assert assay.get_run(run.run_id).status == "RUNNING"
    assert assay.get_run(run.run_id).status == "FINISHED"
    with assay.start_run(name="other", experiment="test"), \
            pytest.raises(ConfigurationError, match="belongs to experiment 'test'"):
        assay.evaluate(DATA, [short], predict_fn=app, experiment="elsewhere")


def test_the_experiment_argument_places_the_run_and_its_traces(tracing):
    result = assay.evaluate(DATA, [short], predict_fn=app, experiment="evals")
    assert assay.get_run(result.run_id).experiment == "evals"
    assert len(assay.search_traces(experiment="evals", return_type="list")) == 3
    assert assay.search_traces(experiment="test", return_type="list") == []


@pytest.mark.parametrize(("scorers", "message"), [
    ([lambda outputs: 1], "scorers\\[0\\] is function"),
    ([short, short], "several scorers are named 'short'"),
    ("exact_match", "takes a list of scorers"),
])
def test_bad_scorers_are_refused_before_anything_runs(tracing, scorers, message):
    called = []
    with pytest.raises(ScorerError, match=message):
        assay.evaluate(DATA, scorers, predict_fn=lambda question: called.append(question))
    assert called == []
    assert assay.search_runs(return_type="list") == []


def test_bad_data_is_refused_before_anything_runs(tracing):
    called = []
    with pytest.raises(InvalidData, match="row 1: no inputs"):
        assay.evaluate([{"inputs": {"question": "a"}}, {"expectations": {}}], [short],
                       predict_fn=lambda question: called.append(question))
    assert called == [] and assay.search_runs(return_type="list") == []


def test_summary_names_the_scores_and_the_worst_rows(tracing):
    result = assay.evaluate(DATA, [builtin.exact_match(), short], predict_fn=app)
    text = repr(result)
    assert f"Evaluation run {result.run_id}" in text and "3 rows" in text
    assert "exact_match" in text and "mean 0.667" in text
    assert f"row 2  trace {result.table['trace_id'][2]}" in text
    assert f"run_id = '{result.run_id}'" in text


def test_no_progress_is_drawn_when_stderr_is_not_a_terminal(tracing, capsys):
    assay.evaluate(DATA, [short], predict_fn=app)
    assert capsys.readouterr().err == ""


def test_a_dataframe_of_inputs_and_outputs(tracing):
    frame = pd.DataFrame({"inputs": [{"q": 1}, {"q": 2}], "outputs": ["Paris", "Barcelona"]})
    result = assay.evaluate(frame, [short])
    assert list(result.table["short/value"]) == [True, False]


def test_a_stored_dataset_is_evaluated_and_named_on_the_run(tracing):
    dataset = assay.create_dataset("capitals")
    dataset.merge_records(DATA)
    result = assay.evaluate(assay.get_dataset("capitals"), [builtin.exact_match()],
                            predict_fn=app)
    assert result.metrics["exact_match/mean"] == pytest.approx(2 / 3)
    params = assay.get_run(result.run_id).params
    assert params["dataset.name"] == "capitals" and params["dataset.version"] == "1"
    assert params["dataset.digest"] == dataset.digest


def test_async_scorers_are_awaited(tracing):
    @assay.scorer
    async def later(outputs) -> bool:
        await asyncio.sleep(0)
        return outputs == "Paris"

    result = assay.evaluate(DATA, [later], predict_fn=app)
    assert list(result.table["later/value"]) == [True, False, False]


def test_a_judge_scores_through_a_local_endpoint_and_a_rerun_hits_the_cache(tracing, tmp_path):
    from assay.judges import make_judge
    from tests.evaluate.judge_server import JudgeServer, verdict

    def respond(request):
        return verdict("Barcelona" not in request.prompt, "checked the capital")

    with JudgeServer(respond=respond) as server:
        judge = make_judge("correct_capital", "Is {{ outputs }} the capital asked for in "
                           "{{ inputs }}?", model="openai:/gpt-4o-mini",
                           base_url=server.openai_base_url, api_key="test",
                           cache=str(tmp_path / "cache"))
        first = assay.evaluate(DATA, [judge], predict_fn=app, max_workers=3)
        assert server.count() == 3
        second = assay.evaluate(DATA, [judge], predict_fn=app, max_workers=3)
        assert server.count() == 3  # every verdict came from the cache
    assert list(first.table["correct_capital/value"]) == [True, True, False]
    assert list(second.table["correct_capital/value"]) == [True, True, False]
    m1, m2 = first.metrics, second.metrics
    assert m1["judge/calls"] == 3 and m1["judge/cache_misses"] == 3
    assert m1["judge/input_tokens"] == 30 and m1["judge/output_tokens"] == 15
    assert m1["judge/cost_usd"] > 0 and m2["judge/cost_usd"] == 0
    assert m2["judge/cache_hits"] == 3 and m2["judge/input_tokens"] == 0
    trace = assay.get_trace(first.table["trace_id"][2])
    feedback = next(a for a in trace.info.assessments if a.name == "correct_capital")
    assert feedback.source_type == "LLM_JUDGE" and feedback.source_id == "openai:/gpt-4o-mini"
    assert feedback.value is False and feedback.rationale == "checked the capital"
    assert assay.get_run(first.run_id).metrics["judge/calls"] == 3


def test_with_tracing_disabled_the_rows_are_still_scored_and_the_run_logged(db_uri):
    assay.configure(store=db_uri, experiment="test", enabled=False)
    result = assay.evaluate(DATA, [builtin.exact_match()], predict_fn=app)
    assert result.metrics["exact_match/mean"] == pytest.approx(2 / 3)
    assert list(result.table["trace_id"]) == [None, None, None]
    assert assay.get_run(result.run_id).status == "FINISHED"


def test_without_a_store_the_evaluation_says_so(tmp_path):
    assay.configure(store="none")
    with pytest.raises(ConfigurationError, match="no trace store is configured"):
        assay.evaluate(DATA, [short], predict_fn=app)


def test_rows_that_sampling_left_without_a_trace_are_reported(db_uri, caplog):
    assay.configure(store=db_uri, experiment="test", sampling_ratio=0.0)
    with caplog.at_level("WARNING", logger="assay"):
        result = assay.evaluate(DATA, [short], predict_fn=app)
    assert result.metrics["short/mean"] == pytest.approx(2 / 3)
    assert "3 of 3 rows have no trace (sampling_ratio=0.0)" in caplog.text


def test_a_hung_scorer_leaves_a_bounded_number_of_threads(tracing):
    @assay.scorer(timeout=0.02)
    def hangs(outputs) -> bool:
        time.sleep(0.5)
        return True

    result = assay.evaluate(DATA * 20, [hangs], predict_fn=app, max_workers=10)
    errors = list(result.table["hangs/error"])
    assert all(e is not None for e in errors)
    assert any("still running past their 0.02 s timeout" in e for e in errors)
    alive = [t for t in threading.enumerate() if t.name == "assay-scorer-hangs"]
    assert len(alive) <= 32 + 10  # overdue ones, and one in flight per worker


def test_garbage_collection_is_left_as_it_was_found(tracing):
    import gc

    assert gc.get_freeze_count() == 0
    assay.evaluate(DATA, [short], predict_fn=app)
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    gc.freeze()  # a server that froze its objects before forking
    try:
        frozen = gc.get_freeze_count()
        assay.evaluate(DATA, [short], predict_fn=app)
        # still frozen (a few of those objects may have been freed meanwhile)
        assert frozen - 1000 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
