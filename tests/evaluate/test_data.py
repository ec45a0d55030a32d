"""evaluate()'s data forms, and the errors that stop it before anything runs."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import assay
from assay.errors import InvalidData
from assay.evaluate.data import MISSING, data_digest, expectations_of, row_from_trace, to_rows


@assay.trace
def app(question: str) -> str:
    return question.upper()


def _stored_trace(fetch, question: str, expected: str | None = None):
    app(question)
    trace = fetch()
    if expected is not None:
        assay.log_expectation(trace.trace_id, "expected_response", expected)
        trace = assay.get_trace(trace.trace_id)
    return trace


def test_a_list_of_dicts_becomes_rows_in_order():
    rows = to_rows([{"inputs": {"q": "a"}, "outputs": "A", "expectations": {"e": 1},
                     "tags": {"k": 2}},
                    {"inputs": {"q": "b"}, "outputs": None}], has_predict_fn=False)
    assert [r.index for r in rows] == [0, 1]
    assert rows[0].inputs == {"q": "a"} and rows[0].outputs == "A"
    assert rows[0].expectations == {"e": 1} and rows[0].tags == {"k": "2"}
    assert rows[1].outputs is None  # None is an answer, not a missing one


def test_a_dataframe_with_missing_optional_cells():
    frame = pd.DataFrame({"inputs": [{"q": "a"}, {"q": "b"}],
                          "expectations": [{"e": 1}, math.nan]})
    rows = to_rows(frame, has_predict_fn=True)
    assert rows[1].expectations == {} and rows[0].outputs is MISSING


def test_traces_give_inputs_outputs_and_expectations(tracing, fetch):
    trace = _stored_trace(fetch, "paris?", expected="PARIS?")
    row = row_from_trace(trace)
    assert row["inputs"] == {"question": "paris?"} and row["outputs"] == "PARIS?"
    assert row["expectations"] == {"expected_response": "PARIS?"}
    rows = to_rows([trace], has_predict_fn=False)
    assert rows[0].source_trace_id == trace.trace_id and rows[0].trace is trace


def test_search_traces_frame_and_list_are_accepted(tracing, fetch):
    _stored_trace(fetch, "one")
    _stored_trace(fetch, "two")
    frame = assay.search_traces(order_by=["timestamp_ms ASC"])
    rows = to_rows(frame, has_predict_fn=False)
    assert [r.inputs["question"] for r in rows] == ["one", "two"]
    listed = assay.search_traces(return_type="list", order_by=["timestamp_ms ASC"])
    assert [r.outputs for r in to_rows(listed, has_predict_fn=False)] == ["ONE", "TWO"]


def test_the_newest_valid_expectation_wins(tracing, fetch):
    trace = _stored_trace(fetch, "q", expected="old")
    assay.log_expectation(trace.trace_id, "expected_response", "new")
    assert expectations_of(assay.get_trace(trace.trace_id)) == {"expected_response": "new"}


@pytest.mark.parametrize(("data", "message"), [
    ([], "data is empty"),
    (pd.DataFrame({"inputs": []}), "data is empty"),
    ("not rows", "data must be a list of dicts"),
    ({"inputs": {}}, "data must be a list of dicts"),
    ([{"inputs": {"q": 1}, "outputs": 1}, {"outputs": 2}], "row 1: no inputs"),
    ([{"inputs": "q", "outputs": 1}], "row 0: inputs must be a dict, got str"),
    ([{"inputs": {"q": 1}, "outputs": 1, "expectations": ["x"]}],
     "row 0: expectations must be a dict, got list"),
    ([{"inputs": {"q": 1}, "outputs": 1, "expected": "x"}], "row 0: unknown key 'expected'"),
    ([{"inputs": {"q": 1}, "outputs": 1}, 7], "row 1: expected a dict or an assay.Trace"),
    ([{"inputs": {"q": 1}}], "row 0 has no outputs and no trace"),
    ([{"inputs": {"q": 1}, "outputs": 1, "trace": "abc"}], "row 0: trace must be an"),
    (pd.DataFrame({"question": ["a"]}), "no 'inputs' or 'trace' column"),
    (pd.DataFrame({"inputs": [{"q": 1}], "outputs": [1], "extra": [0]}),
     "unknown column 'extra'"),
])
def test_bad_data_is_refused_naming_the_row(data, message):
    with pytest.raises(InvalidData, match=message):
        to_rows(data, has_predict_fn=False)


def test_outputs_together_with_predict_fn_are_refused():
    with pytest.raises(InvalidData, match="row 2 has outputs, and predict_fn was given"):
        to_rows([{"inputs": {"q": 1}}, {"inputs": {"q": 2}},
                 {"inputs": {"q": 3}, "outputs": "x"}], has_predict_fn=True)


def test_the_digest_follows_the_content_not_the_container():
    data = [{"inputs": {"q": "a", "n": 1}, "outputs": "A"}]
    same = pd.DataFrame({"inputs": [{"n": 1, "q": "a"}], "outputs": ["A"]})
    other = [{"inputs": {"q": "a", "n": 2}, "outputs": "A"}]
    digest = data_digest(to_rows(data, has_predict_fn=False))
    assert digest == data_digest(to_rows(same, has_predict_fn=False))
    assert digest != data_digest(to_rows(other, has_predict_fn=False))


def test_row_columns_added_to_a_search_traces_frame_are_used(tracing, fetch):
    _stored_trace(fetch, "paris?", expected="OLD")
    frame = assay.search_traces()
    frame["expectations"] = [{"expected_response": "PARIS?"}]
    rows = to_rows(frame, has_predict_fn=False)
    assert rows[0].expectations == {"expected_response": "PARIS?"}
    assert rows[0].outputs == "PARIS?"
