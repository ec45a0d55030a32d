"""Reports for CI: the Markdown summary, JUnit XML and the files (assay.evaluate.report)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from assay.evaluate.compare import Comparison, MetricComparison, RowChange
from assay.evaluate.gates import Check, GateResult
from assay.evaluate.report import to_junit, to_markdown, write_reports
from assay.evaluate.results import EvaluationResult

RUN = "a" * 32
BASE = "b" * 32
TRACES = [f"{i:032x}" for i in range(1, 5)]
HOSTILE = "a | b <script>alert(1)</script> `tick` *star*\nsecond line"


def _result(**extra) -> EvaluationResult:
    table = pd.DataFrame({
        "row": [0, 1, 2, 3],
        "row_key": ["k0", "k1", "k2", "k3"],
        "trace_id": TRACES,
        "inputs": [{"q": "fine"}, {"q": "wrong"}, {"q": HOSTILE}, {"q": "broke"}],
        "outputs": ["yes", "no", "maybe", None],
        "expectations": [{}, {}, {}, {}],
        "error": [None, None, None, "KeyError: 'order'"],
        "correct/value": [True, False, False, None],
        "correct/rationale": ["ok", "wrong city", HOSTILE, None],
        "correct/error": [None, None, None, "not scored"],
        "correct/passed": [True, False, False, None],
    })
    table["error"] = pd.Series([None, None, None, "KeyError: 'order'"], dtype=object)
    table["correct/error"] = pd.Series([None, None, None, "not scored"], dtype=object)
    metrics = {"rows": 4.0, "repeats": 1.0, "correct/mean": 1 / 3, "correct/pass_rate": 1 / 3,
               "correct/error_count": 1.0, "predict/error_count": 1.0,
               "judge/calls": 3.0, "judge/cache_hits": 1.0, "judge/endpoint_errors": 0.0}
    return EvaluationResult(run_id=RUN, metrics=metrics, table=table, feedback_names=["correct"],
                            experiment="support|bot",
                            intervals={"correct/mean": (0.0, 0.8),
                                       "correct/pass_rate": (0.06, 0.79)},
                            **extra)


def _gate() -> GateResult:
    return GateResult([
        Check("threshold", "correct/mean >= 0.5 @lower", "correct/mean", False, 0.0, 1 / 3,
              (0.0, 0.8), "correct/mean >= 0.5 @lower: observed 0 at the interval's lower bound"),
        Check("error_rate", "correct/error_rate <= 0.5", "correct", True, 0.25, 0.25, None,
              "correct error rate 25.00% (1 of 4) <= max_error_rate 50.00%"),
    ], 0.95)


def _comparison(*, regression: bool = True) -> Comparison:
    failing = [RowChange("k1", 1, TRACES[1], "c" * 32, True, False, {"q": "wrong"}),
               RowChange("k2", 2, TRACES[2], "d" * 32, True, False, {"q": HOSTILE})]
    metric = MetricComparison(
        name="correct", kind="binary", pairs=4, baseline=0.75, current=0.25, diff=-0.5,
        interval=(-0.9, -0.1), p_value=0.0312, significant=True, regression=regression,
        method="mcnemar-exact", newly_failing=failing if regression else [])
    return Comparison(RUN, BASE, [metric], alpha=0.05, tolerance=0.0, level=0.95,
                      unpaired_current=1)


def _table_rows(markdown: str) -> list[list[str]]:
    """Every Markdown table line, split on its unescaped pipes."""
    return [re.split(r"(?<!\\)\|", line.strip())[1:-1] for line in markdown.splitlines()
            if line.startswith("|")]


def _tables(markdown: str) -> list[list[str]]:
    """Each table as its lines (blocks of consecutive ``|`` lines)."""
    blocks, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    return blocks + ([current] if current else [])


# -- Markdown ---------------------------------------------------------------------------


def test_markdown_names_the_run_metrics_gate_and_worst_rows():
    gate, comparison = _gate(), _comparison()
    md = to_markdown(_result(gate=gate, comparison=comparison), run_name="nightly")
    assert md.startswith("## assay evaluation: ❌ failed (1 of 2 checks)\n")
    assert f"**Run** `{RUN}`" in md and "name `nightly`" in md and "4 rows" in md
    assert "experiment `support|bot`" in md
    assert "predict_fn failed on 1 row(s)" in md and "judge: 3 calls, 1 from the cache" in md
    # the metrics table: mean and pass rate with their intervals
    row = next(r for r in _table_rows(md) if r[0].strip() == "correct")
    assert [c.strip() for c in row] == ["correct", "0.333", "0 .. 0.800", "33.3%",
                                        "6.0% .. 79.0%", "1"]
    assert "<details><summary>All metrics</summary>" in md
    # the gate: each check, its verdict, observed value and interval
    assert "### Gate: ❌ failed (1 of 2 checks)" in md
    check = next(r for r in _table_rows(md) if "correct/mean >= 0.5 @lower" in r[1])
    assert [c.strip() for c in check] == ["❌", "correct/mean >= 0.5 @lower", "threshold", "0",
                                          "0.333", "0 .. 0.800"]
    assert "- correct/mean >= 0.5 @lower: observed 0 at the interval's lower bound" in md
    # the worst rows, worst first, and how to find their traces
    worst = md.split("### Worst rows", 1)[1]
    assert worst.index(TRACES[3]) < worst.index(TRACES[1])
    assert "predict\\_fn" not in worst and "predict_fn: KeyError" in worst
    assert (f"assay.search_traces(\"run_id = '{RUN}' AND trace.id IN ('{TRACES[3]}', "
            in worst)
    assert f"`assay traces show {TRACES[3]}`" in worst


def test_markdown_lists_the_regressions_with_p_values_and_newly_failing_rows():
    md = to_markdown(_result(), _gate(), _comparison())
    section = md.split(f"### Compared with baseline `{BASE}`", 1)[1]
    assert "alpha 0.05" in section and "1 row(s) only in this run" in section
    row = next(r for r in _table_rows(section) if r[1].strip() == "correct")
    assert [c.strip() for c in row] == ["❌", "correct", "pass rate", "75.0%", "25.0%", "-0.500",
                                        "-0.900 .. -0.100", "0.031", "mcnemar-exact", "4"]
    assert "Regressions do not fail this gate." in section  # no regression check in the gate
    failing = section.split("**Newly failing rows**", 1)[1]
    assert f"`{TRACES[1]}`" in failing and f"`{'c' * 32}`" in failing
    assert f"`{TRACES[2]}`" in failing


def test_markdown_from_a_gate_with_regression_checks_only():
    gate = _gate() + _comparison().gate()
    md = to_markdown(gate=gate)
    assert md.startswith("## assay evaluation: ❌ failed (2 of 3 checks)")
    section = md.split("### Regression checks", 1)[1]
    row = next(r for r in _table_rows(section) if r[1].strip() == "correct")
    assert row[4].strip() == "0.031" and "`k1`, `k2`" in row[5]
    assert "### Worst rows" not in md  # no result given


def test_markdown_escapes_cells_so_tables_keep_their_columns():
    md = to_markdown(_result(), _gate(), _comparison())
    assert "<script>" not in md and "&lt;script>" in md
    assert "second line" in md and "\nsecond line" not in md
    for table in _tables(md):
        widths = {len(r) for r in _table_rows("\n".join(table))}
        assert len(widths) == 1, table


def test_markdown_without_a_gate_or_failures():
    result = _result()
    result.table = result.table.iloc[:1]
    md = to_markdown(result)
    assert md.startswith("## assay evaluation: no gate\n")
    assert "No row failed a verdict or raised an error." in md
    assert to_markdown().startswith("## assay evaluation: no gate")
    assert to_markdown(comparison=_comparison(regression=False)).startswith(
        "## assay evaluation: ✅ no regression")
    assert "### Worst rows" not in to_markdown(_result(), worst=0)
    assert to_markdown(title="Nightly | eval").startswith("## Nightly \\| eval:")


# -- JUnit ------------------------------------------------------------------------------------


def test_junit_has_a_testcase_per_check_and_failures_with_messages():
    gate = _gate() + _comparison().gate()
    xml = to_junit(gate, _comparison(), suite="quality", run_id=RUN)
    root = ET.fromstring(xml)
    assert root.tag == "testsuites" and root.get("failures") == "2"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "quality"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "2", "0")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["run_id"] == RUN and props["baseline_run_id"] == BASE
    assert props["confidence"] == "0.95" and props["alpha"] == "0.05"
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("quality.threshold", "correct/mean >= 0.5 @lower"),
        ("quality.error_rate", "correct/error_rate <= 0.5"),
        ("quality.regression", f"correct vs baseline {BASE}"),
    ]
    failure = cases[0].find("failure")
    assert failure is not None and failure.get("type") == "threshold"
    assert failure.get("message", "").startswith("correct/mean >= 0.5 @lower: observed 0")
    assert cases[1].find("failure") is None
    regression = cases[2].find("failure")
    assert regression is not None and "p=0.0312" in regression.get("message", "")
    assert "newly_failing: [\"k1\", \"k2\"]" in (regression.text or "")


def test_junit_escapes_markup_and_control_characters():
    check = Check("threshold", 'a<b & "c" \x01', "m", False, 1.0, 1.0, None,
                  "line one\nline <two> & \x07 ]]>")
    xml = to_junit(GateResult([check]))
    case = ET.fromstring(xml).find("testsuite/testcase")
    assert case is not None and case.get("name") == 'a<b & "c" \ufffd'
    failure = case.find("failure")
    assert failure is not None and failure.get("message") == "line one\nline <two> & \ufffd ]]>"


def test_junit_shows_a_regression_that_does_not_gate_as_skipped():
    xml = to_junit(_gate(), _comparison(), run_id=RUN)
    suite = ET.fromstring(xml).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    skipped = suite.find("testcase[@classname='assay.regression']/skipped")
    assert skipped is not None and "not gated" in skipped.get("message", "")


def test_junit_without_a_gate_is_an_empty_suite():
    suite = ET.fromstring(to_junit(None)).find("testsuite")
    assert suite is not None and suite.get("tests") == "0" and not suite.findall("testcase")


# -- files ---------------------------------------------------------------------------------------


def test_write_reports_writes_both_and_appends_to_the_job_summary(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("# Earlier step\ndone", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = _result(gate=_gate(), comparison=_comparison())
    written = write_reports(tmp_path / "r.md", tmp_path / "r.xml", result=result,
                            gate=None, comparison=None, run_name="nightly")
    assert written == [tmp_path / "r.md", summary, tmp_path / "r.xml"]
    markdown = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert markdown.startswith("## assay evaluation: ❌ failed") and "nightly" in markdown
    assert summary.read_text(encoding="utf-8") == "# Earlier step\ndone\n" + markdown
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite is not None
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["run_id"] == RUN
    # a second report appends again
    write_reports(result=result, gate=None, comparison=None)
    assert summary.read_text(encoding="utf-8").count("## assay evaluation") == 2


def test_write_reports_without_paths_or_summary_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert write_reports(result=_result(), gate=None, comparison=None) == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), None])
def test_markdown_shows_missing_numbers_as_dashes(value):
    result = _result()
    result.metrics["correct/mean"] = value  # type: ignore[assignment]
    row = next(r for r in _table_rows(to_markdown(result)) if r[0].strip() == "correct")
    assert row[1].strip() == "-"
