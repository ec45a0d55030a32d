"""The pytest plugin: the assay_eval fixture fails a test with the gate's reason."""

from __future__ import annotations

import sqlite3

import pytest

pytest_plugins = ["pytester"]

APP = '''
import pytest
from assay.scorers import exact_match
from assay.pytest_plugin import assert_gate

DATA = [{"inputs": {"q": q}, "expectations": {"expected_response": q.upper()}}
        for q in ["a", "b", "c", "d"]]

def shout(q):
    return q.upper()

def mumble(q):
    return q.upper() if q in "ab" else q
'''


def _run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_quality=APP + body)
    return pytester.runpytest_subprocess(*args)  # the plugin loads by its entry point


def test_a_passing_gate_passes_and_a_failing_one_fails_with_its_reason(pytester, tmp_path):
    store = tmp_path / "evals.db"
    result = _run(pytester, '''
@pytest.mark.assay(thresholds={"exact_match/mean": ">= 0.9"})
def test_good(assay_eval):
    result = assay_eval(DATA, [exact_match()], predict_fn=shout)
    assert result.metrics["exact_match/mean"] == 1.0

@pytest.mark.assay(thresholds={"exact_match/mean": ">= 0.9"})
def test_bad(assay_eval):
    assay_eval(DATA, [exact_match()], predict_fn=mumble)

def test_checked_afterwards(assay_eval):
    result = assay_eval(DATA, [exact_match()], predict_fn=mumble)
    assert_gate(result, {"exact_match/pass_rate": ">= 0.75"})
''', f"--assay-store=sqlite:///{store}")
    result.assert_outcomes(passed=1, failed=2)
    text = result.stdout.str()
    assert "assay gate failed for run" in text
    assert "FAILED exact_match/mean >= 0.9: observed 0.5" in text
    assert "FAILED exact_match/pass_rate >= 0.75: observed 0.5" in text
    with sqlite3.connect(store) as con:
        tags = con.execute("SELECT value FROM run_tags WHERE key = 'pytest.nodeid' "
                           "ORDER BY value").fetchall()
    assert [t[0] for t in tags] == ["test_quality.py::test_bad",
                                    "test_quality.py::test_checked_afterwards",
                                    "test_quality.py::test_good"]


def test_without_thresholds_nothing_is_asserted_and_the_store_defaults_to_tmp(pytester):
    result = _run(pytester, '''
def test_plain(assay_eval):
    result = assay_eval(DATA, [exact_match()], predict_fn=mumble)
    assert result.gate is None and result.metrics["rows"] == 4

def test_assert_gate_needs_thresholds(assay_eval):
    result = assay_eval(DATA, [exact_match()], predict_fn=shout)
    with pytest.raises(ValueError, match="had no thresholds"):
        assert_gate(result)
''')
    result.assert_outcomes(passed=2)


def test_a_suite_that_does_not_ask_is_untouched(pytester):
    pytester.makepyfile(test_other="def test_other():\n    assert True\n")
    result = pytester.runpytest_subprocess("--basetemp", str(pytester.path / "base"))
    result.assert_outcomes(passed=1)
    assert not list((pytester.path / "base").glob("assay*"))  # no store was made
    assert not list(pytester.path.glob("*.db"))


def test_a_suite_that_configured_assay_keeps_its_configuration(pytester, tmp_path):
    store = tmp_path / "mine.db"
    pytester.makeconftest(f'''
import assay
assay.configure(store="sqlite:///{store}", experiment="mine",
                redact=lambda span: span)
''')
    result = _run(pytester, '''
def test_evaluates(assay_eval):
    assay_eval(DATA, [exact_match()], predict_fn=shout)

def test_after():
    from assay.tracing import _runtime
    rt = _runtime.current()
    assert rt.store.uri.endswith("mine.db") and rt.experiment == "mine"
''')
    result.assert_outcomes(passed=2)
    with sqlite3.connect(store) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
