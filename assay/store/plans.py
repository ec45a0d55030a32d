"""Search plans: a filter, an ordering and a page size compiled once into the SQL
the driver runs, and kept for the next search of the same shape.

Parsing a filter, building its SQLAlchemy statement and compiling that to SQL
cost about 1.5 ms, several times what SQLite takes to answer a page by index.
Every literal of a filter is a bound parameter, so a filter string compiles to
one SQL text and one set of values: the plan keeps both, and the page token's
sort values are the only parameters supplied per search. A store keeps its
plans in a small LRU (:func:`plan_cache`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, case, distinct, func, select, true
from sqlalchemy.engine import Dialect

from assay.store import ordering
from assay.store import schema as s

__all__ = ["PAGE_COLUMNS", "RARE_MATCHES", "Scope", "SearchPlan", "Sql", "bounded_matches",
           "build_count", "build_plan", "in_scope", "plan_cache", "scope_of", "where_clause"]

#: The trace columns a page reads, in the order ``pages.assemble`` takes them;
#: the sort values follow.
PAGE_COLUMNS = ("trace_id", "experiment", "name", "state", "timestamp_ms", "execution_time_ms",
                "request_preview", "response_preview", "run_id", "tags_json", "metadata_json")

_AFTER = "assay_after_"  # the page token's sort values, by position
# A filter whose gathered matches number fewer than this is answered by
# gathering them (and sorting) straight away, rather than walking the traces.
RARE_MATCHES = 2_000
_PLANS = 256  # plans a store keeps


@dataclass(frozen=True)
class Sql:
    """SQL text for the driver, and how to get its parameters for one search."""

    text: str
    names: tuple[str, ...] | None  # positional parameters' names, or None: named
    values: dict[str, Any]          # the filter's literals, by parameter name

    def params(self, after: Sequence[Any] | None = None) -> Any:
        values = self.values
        if after is not None:
            values = {**values, **{f"{_AFTER}{i}": v for i, v in enumerate(after)}}
        if self.names is None:
            return values
        return tuple(values[name] for name in self.names)


@dataclass(frozen=True)
class SearchPlan:
    """How to answer one shape of search.

    ``gather`` finds every match and sorts them; ``walk`` (SQLite, when the
    filter has subqueries) walks the traces in page order probing each and
    stops at the page size; ``bound`` tells a filter whose matches are few
    (gather them) from one whose matches are many (walk): a tree as
    ``filter_sql.Bound`` whose leaves count a predicate's index entries up to
    :data:`RARE_MATCHES` (``None``: no bound, walk).
    """

    keys: list[ordering.SortKey]
    gather: Sql
    walk: Sql | None
    bound: tuple[str, Any] | None


#: What a search is scoped to: one experiment, several (sorted, at least two) or,
#: with ``None``, every one.
Scope = str | tuple[str, ...] | None


def scope_of(experiment: str | Sequence[str] | None) -> Scope:
    """A search's experiments as a :data:`Scope` (one name stays a name).

    Raises:
        ValueError: not a name, a sequence of names or ``None``; an empty sequence.
    """
    if experiment is None or isinstance(experiment, str):
        return experiment
    names = sorted(set(experiment)) if isinstance(experiment, (list, tuple, set, frozenset)) \
        else None
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"experiment={experiment!r}: expected an experiment name, a "
                         "non-empty list of names, or '*' for every experiment")
    return names[0] if len(names) == 1 else tuple(names)


def in_scope(column: Any, experiment: Scope) -> Any:
    """``column`` (an experiment name) is within ``experiment``'s scope (``None``:
    true)."""
    if experiment is None:
        return true()
    if isinstance(experiment, str):
        return column == experiment
    # One parameter a name (an expanding IN could not be compiled ahead of the
    # page token's values).
    return column.in_([bindparam(None, name, unique=True) for name in experiment])


def _compiled(stmt: Any, dialect: Dialect) -> Sql:
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    values = {key: value for key, value in compiled.params.items()
              if not key.startswith(_AFTER)}
    names = tuple(compiled.positiontup) if compiled.positional else None
    return Sql(compiled.string, names, values)


def build_plan(dialect: Dialect, fts: bool, experiment: Scope, filter_string: str | None,
               order_by: tuple[str, ...] | None, max_results: int, after: bool) -> SearchPlan:
    """The plan for a search (``after``: it continues after a page token).

    Raises:
        InvalidFilter: the filter or the ordering is malformed.
    """
    from assay.store.filter_parser import parse_filter
    from assay.store.filter_sql import (
        compile_assessment_page,
        compile_bound,
        compile_correlated,
        compile_filter,
    )

    keys = ordering.parse_order_by(list(order_by) if isinstance(order_by, tuple) else order_by)
    expr = parse_filter(filter_string) if filter_string else None
    text = filter_string or ""
    if expr is not None and isinstance(experiment, str) \
            and [k.label for k in keys] == ["timestamp_ms", "trace_id"]:
        valued = compile_assessment_page(expr, dialect=dialect.name, fts=fts, filter_string=text)
        if valued is not None:
            first = _assessment_page(*valued, experiment, keys[0].descending, max_results,
                                     after)
            return SearchPlan(keys, _compiled(first, dialect), None, None)
    cond = compile_filter(expr, dialect=dialect.name, fts=fts, filter_string=text)
    probe = None
    if expr is not None and dialect.name == "sqlite":
        probe = compile_correlated(expr, dialect=dialect.name, fts=fts, filter_string=text)
    scope = [] if experiment is None else [in_scope(s.traces.c.experiment, experiment)]
    token = [ordering.keyset_condition(keys, [bindparam(f"{_AFTER}{i}")
                                              for i in range(len(keys))])] if after else []
    columns = [s.traces.c[name] for name in PAGE_COLUMNS]
    labelled = [k.expr.label(f"_sort{i}") for i, k in enumerate(keys)]

    def page(where: Any) -> Any:
        return (select(*columns, *labelled).where(and_(*scope, where, *token))
                .order_by(*ordering.order_clauses(keys)).limit(max_results + 1))

    gather = _compiled(page(cond), dialect)
    if probe is None or expr is None:
        return SearchPlan(keys, gather, None, None)
    bound = compile_bound(expr, dialect=dialect.name, fts=fts, filter_string=text)
    return SearchPlan(keys, gather, _compiled(page(probe), dialect),
                      None if bound is None else _counts(bound, dialect))


def _assessment_page(a: Any, valued: Any, experiment: str, descending: bool,
                     max_results: int, after: bool) -> Any:
    """A page of the traces in ``experiment`` with an assessment of ``a`` meeting
    ``valued``, by time: the first entries of one range of a page index
    (``ix_assessments_num_page``/``str_page``: kind, name, value, experiment, the
    trace's timestamp and id), then those traces' rows.

    Walking the traces newest first and probing each for the value read every
    trace without it on the way: about 3,300 for a page of a value that one
    trace in 30 has, at 100,000 traces on SQLite (6.8 ms a page, now 3.3 ms; on
    PostgreSQL, which gathered every match and sorted them, 23.9 ms, now 7.9 ms).
    """
    keys = [ordering.SortKey("timestamp_ms", a.c.trace_timestamp_ms, descending),
            ordering.SortKey("trace_id", a.c.trace_id, descending)]
    token = [ordering.keyset_condition(keys, [bindparam(f"{_AFTER}{i}") for i in range(2)])] \
        if after else []
    hits = (select(a.c.trace_timestamp_ms.label("ts"), a.c.trace_id.label("tid"))
            .where(a.c.experiment == experiment, valued, *token)
            .distinct().order_by(*ordering.order_clauses(keys)).limit(max_results + 1)
            .subquery("hits"))
    # The sort values (and so the page token) are the index's: pages follow its
    # order, even while a copy is being refreshed.
    by = [hits.c.ts, hits.c.tid]
    columns = [s.traces.c[name] for name in PAGE_COLUMNS]
    return (select(*columns, *(c.label(f"_sort{i}") for i, c in enumerate(by)))
            .select_from(s.traces.join(hits, s.traces.c.trace_id == hits.c.tid))
            .where(s.traces.c.experiment == experiment)
            .order_by(*(c.desc() if descending else c.asc() for c in by)))


def _counts(bound: tuple[str, Any], dialect: Dialect) -> tuple[str, Any]:
    """``bound`` with each subquery replaced by the SQL counting its rows up to
    :data:`RARE_MATCHES`."""
    how, what = bound
    if how == "rows":
        rows = what.limit(RARE_MATCHES).subquery()
        return how, _compiled(select(func.count()).select_from(rows), dialect)
    return how, [_counts(part, dialect) for part in what]


def bounded_matches(bound: tuple[str, Any], count: Callable[[Sql], int]) -> int:
    """An upper bound on a filter's matches, or :data:`RARE_MATCHES` when it is
    at least that many: ``count`` runs one leaf's SQL."""
    how, what = bound
    if how == "rows":
        return min(count(what), RARE_MATCHES)
    total = 0
    if how == "sum":
        for part in what:
            total += bounded_matches(part, count)
            if total >= RARE_MATCHES:
                return RARE_MATCHES
        return total
    return min((bounded_matches(part, count) for part in what), default=RARE_MATCHES)


def where_clause(dialect: str, fts: bool, experiment: Scope,
                 filter_string: str | None) -> Any:
    """The WHERE condition on ``traces`` for a filter in an experiment (several, all).

    Raises:
        InvalidFilter: the filter is malformed.
    """
    from assay.store.filter_parser import parse_filter
    from assay.store.filter_sql import compile_filter

    expr = parse_filter(filter_string) if filter_string else None
    cond = compile_filter(expr, dialect=dialect, fts=fts, filter_string=filter_string or "")
    return cond if experiment is None else and_(in_scope(s.traces.c.experiment, experiment),
                                                cond)


def build_count(dialect: Dialect, fts: bool, experiment: Scope,
                filter_string: str | None) -> Sql:
    """The SQL counting a filter's matches.

    A filter that is one feedback (or expectation) value is counted by the
    distinct trace ids of its page index's range. A filter of span predicates
    only is counted by the distinct trace ids of its span (or attribute) index
    entries, without reading a trace row, when the count is of the whole store
    or every stored trace is in ``experiment`` (the store's smallest and
    largest experiment name, two index probes, say so); otherwise each match's
    trace row is read for its experiment. Measured at 100,000 traces on
    SQLite: a span name in 2.0 rather than 26.7 ms, a span attribute's value
    in 4.0 rather than 30.6 ms.

    Raises:
        InvalidFilter: the filter is malformed.
    """
    from assay.store.filter_parser import parse_filter
    from assay.store.filter_sql import compile_assessment_page, compile_span_members

    where = where_clause(dialect.name, fts, experiment, filter_string)
    general = select(func.count()).select_from(s.traces).where(where)
    expr = parse_filter(filter_string) if filter_string else None
    valued = None if expr is None else compile_assessment_page(
        expr, dialect=dialect.name, fts=fts, filter_string=filter_string or "")
    if valued is not None:
        # A feedback value's traces: one range of its page index (a stored
        # trace's assessments carry its experiment; others, NULL).
        a, cond = valued
        scope = a.c.experiment.is_not(None) if experiment is None \
            else in_scope(a.c.experiment, experiment)
        return _compiled(select(func.count(distinct(a.c.trace_id))).where(cond, scope), dialect)
    sub = None if expr is None else compile_span_members(
        expr, dialect=dialect.name, fts=fts, filter_string=filter_string or "")
    if sub is None:
        return _compiled(general, dialect)
    ids = sub.subquery()
    by_spans = select(func.count(distinct(ids.c.trace_id)))
    if experiment is None:
        return _compiled(by_spans, dialect)
    if not isinstance(experiment, str):
        return _compiled(general, dialect)
    name = s.traces.c.experiment
    only = and_(select(func.min(name)).scalar_subquery() == experiment,
                select(func.max(name)).scalar_subquery() == experiment)
    return _compiled(select(case((only, by_spans.scalar_subquery()),
                                 else_=general.scalar_subquery())), dialect)


def plan_cache(build: Callable[..., Any]) -> Callable[..., Any]:
    """``build`` behind a thread-safe LRU of :data:`_PLANS` plans."""
    return functools.lru_cache(maxsize=_PLANS)(build)

