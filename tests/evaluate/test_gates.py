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
                            ({"alpha": 0}, "alpha=0"), ({"max_error_rate": 2}, "max_error_rate")]:
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
