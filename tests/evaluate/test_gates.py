"""Gates: thresholds with intervals, the error policy, repeats with reducers, and
paired comparison with a baseline run."""

from __future__ import annotations

import itertools

import pytest

import assay
from assay.evaluate.compare import BaselineNotFound
from assay.evaluate.gates import GateError, Threshold, parse_threshold
from assay.scorers import exact_match

CITIES = ["Paris", "Rome", "Madrid", "Berlin", "Lisbon", "Vienna", "Prague", "Warsaw",
          "Oslo", "Dublin"]
DATA = [{"inputs": {"city": c}, "expectations": {"expected_response": c}} for c in CITIES * 4]


def right(city: str) -> str:
    return city


def worse(city: str) -> str:
    return "?" if city in ("Rome", "Oslo", "Dublin") else city


@assay.scorer
def nonempty(outputs) -> bool:
    return bool(outputs)


@pytest.mark.parametrize(("rule", "expected"), [
    (">= 0.8", Threshold("m", ">=", 0.8)),
    ("<=2000", Threshold("m", "<=", 2000.0)),
    ("== 1 @lower", Threshold("m", "==", 1.0, "lower")),
    (" > -1e-3 @ upper ", Threshold("m", ">", -0.001, "upper")),
    (0.5, Threshold("m", ">=", 0.5)),
])
def test_thresholds_parse(rule, expected):
    assert parse_threshold("m", rule) == expected


@pytest.mark.parametrize("rule", ["0.8", ">= high", "=> 0.8", ">= 0.8 @middle", True, None])
def test_malformed_thresholds_are_refused(rule):
    with pytest.raises(GateError, match="threshold for 'm'"):
        parse_threshold("m", rule)


def test_a_passing_and_a_failing_threshold_name_value_and_interval(tracing):
    result = assay.evaluate(DATA, [exact_match()], predict_fn=worse,
                            thresholds={"exact_match/mean": ">= 0.6",
                                        "exact_match/pass_rate": ">= 0.9"})
    gate = result.gate
    assert gate is not None and not gate.passed and not bool(gate)
    assert [c.passed for c in gate.checks] == [True, False, True, True]
    assert [c.kind for c in gate.checks] == ["threshold", "threshold", "error_rate",
                                             "error_rate"]
    failed = gate.failed[0]
    assert failed.metric == "exact_match/pass_rate" and failed.estimate == pytest.approx(0.7)
    lo, hi = result.intervals["exact_match/pass_rate"]
    assert lo < 0.7 < hi
    assert "FAILED exact_match/pass_rate >= 0.9: observed 0.7" in gate.reason
    assert "95% CI" in gate.reason
    run = assay.get_run(result.run_id)
    assert run.metrics["gate/passed"] == 0 and run.tags["assay.gate"] == "failed"


def test_at_the_lower_bound_a_mean_that_passes_by_luck_does_not(tracing):
    result = assay.evaluate(DATA, [exact_match()], predict_fn=worse)
    point = result.check({"exact_match/mean": ">= 0.65"})
    lower = result.check({"exact_match/mean": ">= 0.65 @lower"})
    assert point.passed and not lower.passed
    assert lower.failed[0].observed == result.intervals["exact_match/mean"][0]


def test_a_threshold_on_a_missing_metric_is_an_error_not_a_pass(tracing):
    result = assay.evaluate(DATA[:3], [exact_match()], predict_fn=right)
    with pytest.raises(GateError, match=r"no such metric.*exact_match/mean"):
        result.check({"correctness/mean": ">= 0.8"})
    with pytest.raises(GateError, match="has no confidence interval"):
        result.check({"exact_match/error_count": "<= 0 @upper"})


def test_a_threshold_on_a_feedback_that_only_errored_fails_instead_of_erroring(tracing):
    @assay.scorer
    def down(outputs) -> bool:
        raise ConnectionError("endpoint unreachable")

    result = assay.evaluate(DATA[:3], [down], predict_fn=right)
    gate = result.check({"down/mean": ">= 0.5", "down/pass_rate": ">= 0.5"},
                        max_error_rate=1.0)
    assert not gate.passed
    assert "down/mean >= 0.5: no value (down errored on every row: 3 errors)" in gate.reason


def test_scorer_errors_fail_the_gate_unless_allowed(tracing):
    @assay.scorer
    def flaky(inputs) -> bool:
        if inputs["city"] == "Rome":
            raise RuntimeError("judge down")
        return True

    result = assay.evaluate(DATA, [flaky], predict_fn=right, thresholds={"flaky/mean": ">= 0.5"})
    assert result.metrics["flaky/mean"] == 1.0  # the errors are not in the mean...
    assert not result.gate.passed  # ...and so they fail the gate
    assert "flaky error rate 10.00% (4 of 40) > max_error_rate 0.00%" in result.gate.reason
    assert result.check({"flaky/mean": ">= 0.5"}, max_error_rate=0.1).passed


def test_repeats_reduce_each_row_and_report_the_spread(tracing):
    flips = itertools.cycle([True, True, False])

    @assay.scorer
    def noisy(outputs) -> bool:
        return next(flips)

    data = DATA[:4]
    majority = assay.evaluate(data, [noisy], predict_fn=right, repeats=3, max_workers=1)
    assert majority.metrics["repeats"] == 3 and majority.metrics["rows"] == 4
    assert list(majority.table["noisy/value"]) == [True] * 4
    assert all(len(v) == 3 for v in majority.table["noisy/values"])
    assert majority.metrics["noisy/flip_rate"] == 1.0
    assert len(majority.table["trace_ids"][0]) == 3
    traces = assay.search_traces(f"run_id = '{majority.run_id}'", return_type="list")
    assert len(traces) == 12
    strict = assay.evaluate(data, [noisy], predict_fn=right, repeats=3, reducer="pass^k",
                            max_workers=1)
    assert list(strict.table["noisy/passed"]) == [False] * 4
    lenient = assay.evaluate(data, [noisy], predict_fn=right, repeats=3,
                             reducer={"noisy": "pass@k"}, max_workers=1)
    assert list(lenient.table["noisy/passed"]) == [True] * 4
    mean = assay.evaluate(data, [noisy], predict_fn=right, repeats=3, reducer="mean",
                          max_workers=1)
    assert mean.metrics["noisy/mean"] == pytest.approx(2 / 3)


def test_bad_options_are_refused_before_anything_runs(tracing):
    for kwargs, message in [({"repeats": 0}, "repeats=0"), ({"confidence": 1.5}, "confidence"),
                            ({"reducer": "best"}, "reducer='best'"),
                            ({"reducer": {"other": "mean"}}, "no scorer has that name"),
                            ({"thresholds": {"x": "about 3"}}, "cannot read"),
                            ({"alpha": 0}, "alpha=0"), ({"max_error_rate": 2}, "max_error_rate"),
                            ({"baseline": 5}, "baseline=5: expected a run id")]:
        with pytest.raises(ValueError, match=message):
            assay.evaluate(DATA, [nonempty], predict_fn=right, **kwargs)
    assert assay.search_runs(return_type="list") == []


def test_judge_cache_keys_include_the_repeat_and_cache_false_bypasses_it(tracing, tmp_path):
    from assay.judges import make_judge
    from tests.evaluate.judge_server import JudgeServer

    with JudgeServer() as server:
        judge = make_judge("fine", "Is {{ outputs }} fine?", model="openai:/m",
                           base_url=server.openai_base_url, api_key="k",
                           cache=str(tmp_path / "cache"))
        assay.evaluate(DATA[:3], [judge], predict_fn=right, repeats=2)
        assert server.count() == 6  # each repeat is its own sample
        assay.evaluate(DATA[:3], [judge], predict_fn=right, repeats=2)
        assert server.count() == 6
        assay.evaluate(DATA[:3], [judge], predict_fn=right)
        assert server.count() == 6  # repeat 0 is an evaluation without repeats
        result = assay.evaluate(DATA[:3], [judge], predict_fn=right, cache=False)
        assert server.count() == 9
        assert result.metrics["judge/cache_hits"] == 0


def test_a_regression_against_a_baseline_run_is_found_row_by_row(tracing):
    main = assay.evaluate(DATA, [exact_match(), nonempty], predict_fn=right,
                          tags={"branch": "main"})
    result = assay.evaluate(DATA, [exact_match(), nonempty], predict_fn=worse,
                            baseline="tags.branch = 'main'", fail_on_regression=True)
    comparison = result.comparison
    assert comparison is not None and comparison.baseline_run_id == main.run_id
    exact = next(m for m in comparison.metrics if m.name == "exact_match")
    assert exact.kind == "binary" and exact.pairs == 40
    assert exact.baseline == 1.0 and exact.current == pytest.approx(0.7)
    assert exact.regression and exact.p_value < 0.001
    assert len(exact.newly_failing) == 12 and exact.newly_passing == []
    assert {c.inputs["city"] for c in exact.newly_failing} == {"Rome", "Oslo", "Dublin"}
    same = next(m for m in comparison.metrics if m.name == "nonempty")
    assert not same.regression and same.diff == 0
    assert not result.gate.passed
    assert [c.kind for c in result.gate.failed] == ["regression"]
    assert "REGRESSION" in comparison.reason


def test_no_change_is_not_a_regression_and_baselines_resolve_by_name_and_id(tracing):
    base = assay.evaluate(DATA, [exact_match()], predict_fn=worse, run_name="nightly")
    again = assay.evaluate(DATA, [exact_match()], predict_fn=worse, baseline="nightly",
                           fail_on_regression=True)
    assert again.comparison.baseline_run_id == base.run_id
    assert again.gate.passed and again.comparison.passed
    by_id = assay.compare(again.run_id, base.run_id)
    assert by_id.metrics[0].diff == 0 and not by_id.metrics[0].significant
    better = assay.compare(base.run_id, again.run_id)
    assert better.passed


def test_an_unknown_baseline_is_a_clear_error(tracing):
    assay.evaluate(DATA[:2], [exact_match()], predict_fn=right)
    with pytest.raises(BaselineNotFound, match="no run matches"):
        assay.evaluate(DATA[:2], [exact_match()], predict_fn=right, baseline="no-such-run")


# -- soundness of the gate's edges ------------------------------------------------------


def test_a_baseline_filter_matching_the_run_itself_finds_the_previous_run(tracing):
    first = assay.evaluate(DATA, [exact_match()], predict_fn=right, tags={"branch": "main"})
    later = assay.evaluate(DATA, [exact_match()], predict_fn=worse, tags={"branch": "main"},
                           baseline="tags.branch = 'main'", fail_on_regression=True)
    assert later.comparison.baseline_run_id == first.run_id
    assert not later.gate.passed
    assay.evaluate(DATA, [exact_match()], predict_fn=right, run_name="solo")
    with pytest.raises(BaselineNotFound):
        assay.evaluate(DATA, [exact_match()], predict_fn=right, run_name="fresh",
                       tags={"branch": "fresh"}, baseline="tags.branch = 'fresh'")


def test_nothing_to_pair_fails_a_regression_gate(tracing):
    assay.evaluate([{"inputs": {"city": "Paris"}, "outputs": "Paris"}], [exact_match()],
                   run_name="other-data")
    result = assay.evaluate(DATA, [exact_match()], predict_fn=right, baseline="other-data",
                            fail_on_regression=True)
    assert not result.gate.passed
    assert "nothing compared with baseline" in result.gate.reason


def test_errors_alone_gate_when_max_error_rate_is_given(tracing):
    @assay.scorer
    def broken(outputs) -> bool:
        raise RuntimeError("no")

    result = assay.evaluate(DATA[:3], [broken], predict_fn=right, max_error_rate=0.5)
    assert result.gate is not None and not result.gate.passed
    assert assay.evaluate(DATA[:3], [nonempty], predict_fn=right).gate is None


def test_a_gate_error_comes_after_the_run_ended_finished(tracing):
    with pytest.raises(GateError):
        assay.evaluate(DATA[:3], [exact_match()], predict_fn=right, run_name="judged",
                       thresholds={"missing/mean": ">= 1"})
    run = assay.search_runs("run_name = 'judged'", return_type="list")[0]
    assert run.status == "FINISHED" and "exact_match/mean" in run.metrics


def test_a_bound_without_an_interval_fails_instead_of_passing(tracing):
    result = assay.evaluate(DATA[:1], [exact_match()], predict_fn=right)
    gate = result.check({"exact_match/mean": ">= 0.5 @lower"})
    assert not gate.passed and "no interval (fewer than 2 values" in gate.reason


def test_non_finite_scores_and_clashing_feedback_names_are_errors(tracing):
    @assay.scorer
    def similarity(outputs) -> float:
        return float("nan") if outputs == "Rome" else 1.0

    @assay.scorer
    def thief(outputs):
        return assay.Feedback(1.0, name="similarity")

    result = assay.evaluate(DATA, [similarity, thief], predict_fn=right)
    assert result.metrics["similarity/error_count"] == 4
    assert result.metrics["thief/error_count"] == 40
    assert "which scorer 'similarity' also gives" in result.table["thief/error"][0]
    assert not result.check({"similarity/mean": ">= 0.5"}).passed


def test_pass_at_k_reducers_give_verdicts_and_need_them(tracing):
    @assay.scorer(pass_if=">= 0.5")
    def score(outputs) -> float:
        return 0.3

    @assay.scorer
    def raw(outputs) -> float:
        return 0.7

    once = assay.evaluate(DATA[:2], [score], predict_fn=right, reducer="pass@k")
    assert list(once.table["score/value"]) == [False, False]
    assert once.metrics["score/mean"] == 0.0
    no_verdict = assay.evaluate(DATA[:2], [raw], predict_fn=right, reducer="pass^k")
    assert no_verdict.metrics["raw/error_count"] == 0
    assert "needs a pass/fail verdict" in no_verdict.table["raw/error"][0]

    calls = itertools.count()

    @assay.scorer
    def sometimes(outputs) -> bool:
        if next(calls) % 2:
            raise RuntimeError("flaky")
        return True

    strict = assay.evaluate(DATA[:2], [sometimes], predict_fn=right, repeats=2,
                            reducer="pass^k", max_workers=1)
    assert list(strict.table["sometimes/passed"]) == [False, False]


def test_row_keys_and_digests_do_not_depend_on_the_process():
    from assay.evaluate.data import EvalRow, canonical_text
    from assay.evaluate.summarize import row_keys

    class Tool:
        pass

    a = canonical_text({"tags": {"b", "a", "c"}, "tool": Tool()})
    b = canonical_text({"tool": Tool(), "tags": {"c", "b", "a"}})
    assert a == b and "0x" not in a
    rows = [EvalRow(0, {"q": 1}), EvalRow(1, {"q": 1}), EvalRow(2, {"q": 2})]
    keys = row_keys(rows)
    assert keys[1] == keys[0] + "#1" and len(set(keys)) == 3


def test_rows_are_traces_of_their_own_inside_a_span(tracing):
    @assay.scorer
    def spans_in_trace(trace) -> int:
        return len(trace.spans)

    with assay.start_span("ci-job"):
        result = assay.evaluate(DATA[:3], [spans_in_trace], predict_fn=right)
    assert result.table["trace_id"].nunique() == 3
    assert list(result.table["spans_in_trace/value"]) == [1, 1, 1]


def test_a_long_judge_prompt_is_cut_in_the_param_and_kept_whole_in_a_table(tracing):
    from assay.judges import make_judge
    from tests.evaluate.judge_server import JudgeServer

    instructions = "Judge {{ outputs }} carefully. " + "Be strict. " * 800
    with JudgeServer() as server:
        judge = make_judge("strict", instructions, model="openai:/m",
                           base_url=server.openai_base_url, api_key="k", cache=False)
        result = assay.evaluate(DATA[:1], [judge, nonempty], predict_fn=right)
    assert result.metrics["strict/error_count"] == 0
    param = assay.get_run(result.run_id).params["scorer.strict"]
    assert len(param) <= 6000 and "spec_sha256" in param and "...[cut]" in param
    specs = assay.load_table(result.run_id, "scorers")
    assert specs["spec"][0]["instructions"] == instructions
