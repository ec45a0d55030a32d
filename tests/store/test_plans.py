"""Search plans: the bound that tells few matches from many, and plan parameters."""

from __future__ import annotations

from contextlib import closing
from typing import Any

import pytest
from sqlalchemy.dialects import sqlite

from assay.store import plans
from assay.store.filter_parser import parse_filter
from assay.store.filter_sql import compile_bound


def shape(filter_string: str) -> Any:
    """The bound's tree with each subquery replaced by the table it reads."""
    bound = compile_bound(parse_filter(filter_string), dialect="sqlite", fts=True,
                          filter_string=filter_string)

    def strip(node: Any) -> Any:
        if node is None:
            return None
        how, what = node
        if how == "rows":
            return next(iter(what.get_final_froms())).element.name
        return how, [strip(part) for part in what]

    return strip(bound)


@pytest.mark.parametrize(("filter_string", "expected"), [
    ("tags.env = 'prod'", "trace_tags"),
    ("metadata.region = 'eu'", "trace_metadata"),
    ("feedback.correct = true", "assessments"),
    ("span.name = 'x'", "spans"),
    ("span.attributes.model = 'gpt'", "span_attributes"),
    # a trace column, a negation, absence, the full text: nothing bounds them
    ("trace.status = 'OK'", None),
    ("run_id = 'r1'", None),
    ("NOT (tags.env = 'prod')", None),
    ("tags.env IS NULL", None),
    ("trace.text LIKE '%refund%'", None),
    ("tags.`mlflow.traceName` = 'chat'", None),
    # AND: the smallest of what is bounded; OR: the sum, only when all are
    ("tags.env = 'prod' AND trace.status = 'OK'", ("min", ["trace_tags"])),
    ("tags.env = 'prod' AND span.name = 'x' AND span.type = 'LLM'",
     ("min", ["trace_tags", "spans", "spans"])),
    ("tags.env = 'prod' OR feedback.correct = true", ("sum", ["trace_tags", "assessments"])),
    ("tags.env = 'prod' OR trace.status = 'OK'", None),
    ("(tags.a = 'x' OR tags.b = 'y') AND trace.status = 'OK'",
     ("min", [("sum", ["trace_tags", "trace_tags"])])),
])
def test_the_bound_of_a_filter(filter_string, expected):
    assert shape(filter_string) == expected


def test_an_assessment_bound_counts_from_its_index_alone():
    """The bound of a feedback predicate counts overridden feedback too (an upper
    bound still), so the (kind, name, value) index answers it without reading rows;
    the filter itself still leaves overridden feedback out."""
    text = "feedback.correct = true"
    bound = compile_bound(parse_filter(text), dialect="sqlite", fts=True, filter_string=text)
    assert bound is not None and bound[0] == "rows"
    assert "overridden_by" not in str(bound[1])
    where = plans.where_clause("sqlite", True, None, text)
    assert "overridden_by IS NULL" in str(where)


def test_bounded_matches_takes_the_smallest_of_and_and_adds_up_or():
    counts = {"a": 5, "b": 50, "c": plans.RARE_MATCHES}
    seen: list[str] = []

    def count(leaf: Any) -> int:
        seen.append(leaf)
        return counts[leaf]

    def rows(name: str) -> tuple[str, Any]:
        return ("rows", name)

    assert plans.bounded_matches(("min", [rows("b"), rows("a")]), count) == 5
    assert plans.bounded_matches(("sum", [rows("a"), rows("b")]), count) == 55
    assert plans.bounded_matches(("min", [("sum", [rows("a"), rows("b")]), rows("c")]),
                                 count) == 55
    seen.clear()
    # A sum stops counting once it reaches the limit.
    assert plans.bounded_matches(("sum", [rows("c"), rows("a")]), count) == plans.RARE_MATCHES
    assert seen == ["c"]


def test_a_plan_supplies_the_page_token_values_in_place():
    plan = plans.build_plan(sqlite.dialect(), False, "exp", "tags.env = 'prod'", None, 10,
                            True)
    assert plan.walk is not None and plan.bound is not None
    params = plan.gather.params([1_700_000_000_000, "ab" * 16])
    assert isinstance(params, tuple)
    assert "exp" in params and "prod" in params
    assert 1_700_000_000_000 in params and "ab" * 16 in params
    assert params[-2:] == (11, 0)  # the page size and one more, no offset
    assert plan.gather.text.count("?") == len(params)
    # Without a filter or on a trace column only: no walk, nothing to count.
    plain = plans.build_plan(sqlite.dialect(), False, None, "trace.status = 'OK'", None, 10,
                             False)
    assert plain.walk is None and plain.bound is None


@pytest.mark.parametrize(("filter_string", "table"), [
    ("span.name = 'x'", "spans"),
    ("span.name = 'x' AND span.type = 'LLM'", "spans"),
    ("span.attributes.model = 'gpt'", "span_attributes"),
    ("span.attributes.model IS NULL", "spans"),
    ("span.name = 'x' AND span.attributes.k > 2", "spans"),
    # anything else is counted through the traces
    ("NOT (span.name = 'x')", None),
    ("span.name = 'x' OR span.name = 'y'", None),
    ("span.name = 'x' AND tags.env = 'prod'", None),
    ("span.name = 'x' AND trace.status = 'OK'", None),
    ("tags.env = 'prod'", None),
    ("feedback.correct = true", None),
])
def test_the_filters_counted_by_their_span_index_alone(filter_string, table):
    from assay.store.filter_sql import compile_span_members

    sub = compile_span_members(parse_filter(filter_string), dialect="sqlite", fts=True,
                               filter_string=filter_string)
    assert (None if sub is None else next(iter(sub.get_final_froms())).element.name) == table


@pytest.fixture
def one_experiment_store(store_uri: str) -> Any:
    store = _one_experiment(store_uri)
    yield store
    store.close()


def _one_experiment(uri: str) -> Any:
    """A store of 12 traces of experiment 'one': spans named 'x', 'y' or 'z' with
    attributes, one trace with two spans named 'x'."""
    from assay.store import SpanRecord, open_store

    store = open_store(uri)
    records = []
    for t in range(12):
        tid = f"{t + 1:032x}"
        names = ["x", "x"] if t == 0 else (["y"] if t % 3 == 0 else ["x", "z"])
        for i, name in enumerate(names):
            records.append(SpanRecord(
                trace_id=tid, span_id=f"{t * 10 + i + 1:016x}", parent_id=None,
                name=name, span_type="LLM" if t % 2 else "TOOL", status="OK",
                status_message=None, start_time_ns=10**18 + t * 10**9 + i,
                end_time_ns=10**18 + t * 10**9 + 10**6, inputs_json=None, outputs_json=None,
                attributes={"k": t} if i == 0 else {"model": "gpt"}, events=[],
                experiment="one", root_rank=2 if i == 0 else 0,
                trace_name="t" if i == 0 else None, trace_tags={}, trace_metadata={}))
    store.write_spans(records)
    return store


COUNTED_BY_SPANS = ["span.name = 'x'", "span.name = 'x' AND span.type = 'LLM'",
                    "span.attributes.model = 'gpt'", "span.attributes.k >= 4",
                    "span.attributes.model IS NULL", "span.name = 'nothing'"]


@pytest.mark.parametrize("filter_string", COUNTED_BY_SPANS)
def test_a_count_by_the_span_index_agrees_with_the_search(one_experiment_store, filter_string):
    store = one_experiment_store
    for experiment in ("one", None):
        found = store.search(experiment=experiment, filter_string=filter_string,
                             max_results=100, include_spans=False).traces
        assert store.count(experiment=experiment, filter_string=filter_string) == len(found)
    # A second experiment: the count of each goes through its traces' rows.
    from assay.store import SpanRecord

    store.write_spans([SpanRecord(
        trace_id="f" * 32, span_id="f" * 16, parent_id=None, name="x", span_type="LLM",
        status="OK", status_message=None, start_time_ns=10**18, end_time_ns=10**18 + 1,
        inputs_json=None, outputs_json=None, attributes={"model": "gpt", "k": 9}, events=[],
        experiment="two", root_rank=2, trace_name="t", trace_tags={}, trace_metadata={})])
    for experiment in ("one", "two", "zzz", None):
        found = store.search(experiment=experiment, filter_string=filter_string,
                             max_results=100, include_spans=False).traces
        assert store.count(experiment=experiment, filter_string=filter_string) == len(found)


def test_the_span_count_reads_no_trace_row_on_sqlite(db_path):
    import sqlite3

    _one_experiment(f"sqlite:///{db_path}").close()
    sql = plans.build_count(sqlite.dialect(), True, "one", "span.name = 'x'")
    with closing(sqlite3.connect(db_path)) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql.text}", sql.params())]
        assert conn.execute(sql.text, sql.params()).fetchone() == (9,)
    text = "\n".join(plan)
    # The count by the spans: their name index alone.
    assert "SEARCH sp USING COVERING INDEX ix_spans_name_trace_id (name=?)" in plan, text
    # The experiment's bounds: its smallest and largest name, each one probe at an
    # end of an index that starts with the experiment (no range: no "(...)").
    bounds = [line for line in plan if line.startswith("SEARCH traces USING COVERING INDEX "
                                                       "ix_traces_experiment_")
              and "(" not in line]
    assert len(bounds) == 2, text
    assert not [line for line in plan if line.startswith("SCAN")
                and line != "SCAN CONSTANT ROW"], text
