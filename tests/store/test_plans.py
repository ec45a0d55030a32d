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


# -- a feedback value's page: one range of a page index -------------------------------------------

def _assessed_store(uri: str) -> Any:
    """40 traces in experiments 'one' and 'two' (some sharing a timestamp), with
    feedback from two sources (some of it overridden by a newer value), string
    expectations, numbers, and feedback on a trace that is not stored."""
    from assay.store import SpanRecord, open_store
    from assay.tracing.models import Assessment

    store = open_store(uri)
    records = []
    for t in range(40):
        start = 10**18 + (t // 3) * 10**9  # threes share a timestamp
        records.append(SpanRecord(
            trace_id=f"{t + 1:032x}", span_id=f"{t + 1:016x}", parent_id=None, name="r",
            span_type="CHAIN", status="OK", status_message=None, start_time_ns=start,
            end_time_ns=start + 10**6, inputs_json=None, outputs_json=None, attributes={},
            events=[], experiment="one" if t % 5 else "two", root_rank=2, trace_name="r",
            trace_tags={}, trace_metadata={}))
    store.write_spans(records)
    made = 0

    def fb(t: int, name: str, value: Any, source: str = "HUMAN",
           kind: str = "feedback") -> Assessment:
        nonlocal made
        made += 1
        return Assessment(assessment_id=f"{made:032x}", trace_id=f"{t + 1:032x}", name=name,
                          kind=kind, value=value, source_type=source, created_time_ms=made)

    batch = [fb(t, "correct", t % 2 == 0) for t in range(40)]
    batch += [fb(t, "correct", t % 4 == 0, "LLM_JUDGE") for t in range(0, 40, 3)]
    batch += [fb(t, "correct", t % 2 == 1) for t in range(0, 40, 7)]  # overrides
    batch += [fb(t, "answer", "paris" if t % 3 else "rome", kind="expectation")
              for t in range(40)]
    batch += [fb(t, "score", t % 4) for t in range(40)]
    batch += [fb(99, "correct", True)]  # no such trace
    store.log_assessments(batch)
    return store


VALUED = ["feedback.correct = true", "feedback.correct = false", "feedback.score = 2",
          "expectation.answer = 'rome'", "feedback.correct = 'true'", "feedback.nothing = 1"]


@pytest.mark.parametrize("filter_string", VALUED)
def test_a_feedback_value_page_agrees_with_the_general_search(store_uri, filter_string):
    """Page by page, in both directions, the plan that reads the page index gives
    the traces the general plan does (the same filter AND-ed with a trace
    predicate, which that plan cannot take)."""
    store = _assessed_store(store_uri)
    try:
        for experiment in ("one", "two"):
            for order_by in (None, ["timestamp_ms ASC"]):
                plan = store._plan(experiment, filter_string, order_by, 3, False)
                assert "ix_assessments" not in plan.gather.text  # no index hint...
                assert "FROM assessments AS valued" in plan.gather.text  # ...its own plan
                general = store.search(
                    experiment=experiment, max_results=1000, include_spans=False,
                    filter_string=f"{filter_string} AND trace.timestamp_ms >= 0",
                    order_by=order_by).traces
                expected = [t.info.trace_id for t in general]
                assert store.count(experiment=experiment, filter_string=filter_string) \
                    == len(expected)
                for size in (1, 3, 7, 100):
                    seen: list[str] = []
                    token = None
                    while True:
                        found = store.search(experiment=experiment, max_results=size,
                                             include_spans=False, filter_string=filter_string,
                                             order_by=order_by, page_token=token)
                        seen += [t.info.trace_id for t in found.traces]
                        assert all(len(t.info.assessments) > 0 for t in found.traces)
                        token = found.next_page_token
                        if token is None:
                            break
                    assert seen == expected, (experiment, order_by, size)
        everywhere = store.search(experiment=None, max_results=1000, include_spans=False,
                                  filter_string=f"{filter_string} AND trace.timestamp_ms >= 0")
        assert store.count(experiment=None, filter_string=filter_string) \
            == len(everywhere.traces)
    finally:
        store.close()


def test_a_feedback_value_page_reads_one_range_of_a_page_index_on_sqlite(db_path):
    import sqlite3

    _assessed_store(f"sqlite:///{db_path}").close()
    for filter_string, index, value in (
            ("feedback.correct = true", "ix_assessments_num_page",
             "value_kind=? AND num_value=?"),
            ("expectation.answer = 'rome'", "ix_assessments_str_page", "str_value=?")):
        for after in (False, True):
            sql = plans.build_plan(sqlite.dialect(), True, "one", filter_string, None, 3, after)
            params = sql.gather.params([10**12, "f" * 32] if after else None)
            with closing(sqlite3.connect(db_path)) as conn:
                plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql.gather.text}",
                                                       params)]
            text = "\n".join(plan)
            # A later page starts its range at the token.
            after_token = " AND trace_timestamp_ms<?" if after else ""
            # The index alone: no assessment row is read.
            assert f"SEARCH valued USING COVERING INDEX {index} (kind=? AND name=? " \
                   f"AND {value} AND experiment=?{after_token})" in plan, text
            assert any(line.startswith("SEARCH traces USING INDEX sqlite_autoindex_traces_1 "
                                       "(trace_id=?)") for line in plan), text
            assert not [line for line in plan if line.startswith("SCAN")
                        and "hits" not in line], text
        # The count: the same range, the index alone.
        sql = plans.build_count(sqlite.dialect(), True, "one", filter_string)
        with closing(sqlite3.connect(db_path)) as conn:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql.text}",
                                                   sql.params())]
        assert f"SEARCH valued USING COVERING INDEX {index} " \
               f"(kind=? AND name=? AND {value} AND experiment=?)" in plan, plan
        assert not [line for line in plan if line.startswith("SCAN")], plan
