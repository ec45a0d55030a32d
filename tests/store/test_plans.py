"""Search plans: the bound that tells few matches from many, and plan parameters."""

from __future__ import annotations

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
