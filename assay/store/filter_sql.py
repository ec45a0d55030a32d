"""The filter language's back half: an AST from ``filter_parser`` to SQLAlchemy Core.

Every literal becomes a bound parameter. Each predicate on something a trace
has many of (tags, metadata, spans, span attributes, assessments, text)
becomes ``traces.trace_id IN (subquery)``, so the outer query keeps walking
the ``(experiment, timestamp_ms)`` index in order and stops at the page size.

Semantics:

- ``span.*`` predicates joined by AND in one group must hold for the same span;
  ``NOT (span.type = 'TOOL')`` means no span is a TOOL.
- Typed values (span attributes, feedback, expectations) compare by the
  literal's type: a number with the numbers stored, ``true``/``false`` with the
  booleans, a string with the text of the value (so ``'5'`` also finds the
  number 5, as MLflow's text comparison does). A number never matches text.
- ``tags.k != 'v'`` and ``NOT IN`` match traces that have the key with another
  value; ``tags.k IS NULL`` matches traces without the key.
- ``LIKE`` is case-sensitive and ``ILIKE`` is not, on every database; ``%``
  and ``_`` are the only wildcards (a backslash is a character like any other);
  ``RLIKE`` is a regular-expression search in Python's syntax, on every
  database (:mod:`assay.store.regex` rewrites it for PostgreSQL).
- ``trace.text`` matches a trace when some span's inputs or outputs, each a text
  of its own, match.
- Only the newest feedback of a name and source counts (older ones are kept,
  marked overridden).
- Run filters (:func:`compile_run_filter`) read the same way over ``runs``:
  ``metrics.<key>`` compares a metric's latest value (the one at its highest
  step; a NaN, stored as NULL, matches no comparison); ``metrics.k IS NULL``
  matches runs that never logged ``k``; params and tags work as trace tags.
- MLflow's own keys keep working: ``tags.`mlflow.traceName``` is the trace
  name, ``run_id`` also matches the metadata key ``mlflow.sourceRun``, and
  ``prompt`` matches no trace (assay links no prompt versions yet).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    and_,
    bindparam,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql.elements import literal, literal_column

from assay.errors import InvalidFilter
from assay.store import regex
from assay.store import schema as s
from assay.store.filter_ast import And, Comparison, Expr, Field, Not, Or, iso_to_epoch_ms

__all__ = ["Bound", "compile_assessment_page", "compile_bound", "compile_correlated",
           "compile_filter", "compile_run_filter", "compile_span_members", "latest_metric_value"]

_T = s.traces.c
_TRACE_COLUMNS = {
    "status": _T.state, "name": _T.name, "timestamp_ms": _T.timestamp_ms,
    "execution_time_ms": _T.execution_time_ms, "end_time_ms": _T.end_time_ms,
    "request_id": _T.trace_id, "client_request_id": _T.client_request_id,
    "run_id": _T.run_id, "request": _T.request_preview, "response": _T.response_preview,
}
_SPAN_KINDS = ("span", "span_attribute")
_MLFLOW_TRACE_NAME = "mlflow.traceName"
_SOURCE_RUN = "mlflow.sourceRun"


class _Compiler:
    def __init__(self, dialect: str, fts: bool, filter_string: str,
                 correlated: bool = False) -> None:
        self.dialect = dialect
        self.fts = fts
        self.text = filter_string
        self.position = 0
        self.correlated = correlated
        self.subqueries = 0  # correlated ones
        # When a list: every subquery ``member`` is given, with whether it is
        # negated and whether it can be probed by trace id (see compile_bound).
        self.members: list[tuple[Any, bool, bool]] | None = None
        # Set while bounding: a subquery may then match more than the filter does
        # (the bound stays an upper bound) when that lets an index answer alone.
        self.superset = False

    def member(self, sub: Any, *, negate: bool = False,
               correlate: bool = True) -> ColumnElement[bool]:
        """The trace is (or with ``negate``, is not) among ``sub``'s trace ids.

        Either ``trace_id IN (sub)``, which the database computes once, or, in
        correlated mode, ``EXISTS (sub AND its trace_id = traces.trace_id)``, a
        probe per trace that lets a walk through the newest traces stop at the
        page size (``correlate=False`` keeps IN for a subquery that cannot be
        probed by trace id, such as the full-text table's).
        """
        if self.members is not None:
            self.members.append((sub, negate, correlate))
        if self.correlated and correlate:
            self.subqueries += 1
            probe = sub.where(sub.selected_columns[0] == _T.trace_id).exists()
            return not_(probe) if negate else probe
        return _T.trace_id.not_in(sub) if negate else _T.trace_id.in_(sub)

    def error(self, message: str, position: int, hint: str | None = None) -> InvalidFilter:
        return InvalidFilter(message, filter_string=self.text, position=position, hint=hint)

    def regex(self, value: Any) -> str:
        pattern = str(value)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise self.error(f"invalid regular expression {pattern!r}: {exc}",
                             self.position, hint="RLIKE takes a regular expression") from None
        if self.dialect != "postgresql":
            return pattern  # SQLite runs Python's re.search
        try:
            return regex.for_postgresql(pattern)
        except regex.UnsupportedRegex as exc:
            raise self.error(f"regular expression {pattern!r}: {exc}", self.position,
                             hint="RLIKE takes Python's regular expressions") from None

    # -- operators ------------------------------------------------------------
    def like(self, col: Any, pattern: str, *, insensitive: bool) -> Any:
        if insensitive:
            if self.dialect == "sqlite":
                # SQLite's lower() folds ASCII only; the store registers a Unicode one.
                return func.assay_lower(col).like(func.assay_lower(literal(pattern)))
            # The store's columns sort by code point (collation "C"), which folds
            # only ASCII case: ILIKE folds by the database's own collation.
            return col.collate("default").ilike(literal(_pg_pattern(pattern), Text()))
        if self.dialect == "sqlite":
            # SQLite's LIKE ignores ASCII case: GLOB with the pattern translated.
            return _glob(col, pattern)
        return col.like(_pg_pattern(pattern))

    def compare(self, col: Any, op: str, value: Any) -> Any:
        if op == "=":
            return col == value
        if op == "!=":
            return col != value
        if op == "<":
            return col < value
        if op == "<=":
            return col <= value
        if op == ">":
            return col > value
        if op == ">=":
            return col >= value
        if op in ("LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"):
            cond = self.like(col, str(value), insensitive="ILIKE" in op)
            return not_(cond) if op.startswith("NOT") else cond
        if op == "RLIKE":
            return col.regexp_match(self.regex(value))
        if op in ("IN", "NOT IN"):
            # One parameter a value: an expanding IN could not be compiled ahead of
            # a page token's values (a plan is compiled once, its token bound later).
            values = [bindparam(None, v, type_=col.type, unique=True) for v in value]
            return col.in_(values) if op == "IN" else col.not_in(values)
        if op == "IS NULL":
            return col.is_(None)
        if op == "IS NOT NULL":
            return col.is_not(None)
        raise AssertionError(op)

    def typed(self, table: Any, op: str, value: Any) -> ColumnElement[bool]:
        """A comparison on a (value_kind, num_value, str_value) row, by the literal's type."""
        c = table.c
        if op == "IN":
            return or_(*(self.typed(table, "=", v) for v in value))
        if op == "NOT IN":  # present, of a comparable type, and none of the values
            return and_(*(self.typed(table, "!=", v) for v in value))
        if isinstance(value, bool):
            cond = and_(c.value_kind == "b", c.num_value == (1.0 if value else 0.0))
            return and_(c.value_kind == "b", c.num_value != (1.0 if value else 0.0)) \
                if op == "!=" else cond
        if isinstance(value, (int, float)):
            return and_(c.value_kind == "n", self.compare(c.num_value, op, value))
        return and_(c.str_value.is_not(None), self.compare(c.str_value, op, value))

    # -- fields ---------------------------------------------------------------
    def trace_field(self, cmp: Comparison) -> ColumnElement[bool]:
        name = cmp.field.name
        if name == "text":
            return self.text_search(cmp)
        if name == "prompt":
            # assay links no prompt versions to traces yet: no trace has one.
            return true() if cmp.op in ("IS NULL", "!=", "NOT IN") else false()
        col = _TRACE_COLUMNS[name]
        value = cmp.value
        if name in ("timestamp_ms", "end_time_ms"):
            value = _epoch_ms(value)
        cond = self.compare(col, cmp.op, value)
        if name == "run_id" and cmp.op not in ("IS NULL", "!=", "NOT IN"):
            # MLflow records a trace's run as the metadata key mlflow.sourceRun.
            source_run = Comparison(Field("metadata", "metadata", _SOURCE_RUN), cmp.op,
                                    cmp.value)
            cond = or_(cond, self.keyed(source_run))
        return cond

    def text_search(self, cmp: Comparison) -> ColumnElement[bool]:
        pattern = str(cmp.value)
        negate = cmp.op.startswith("NOT")
        insensitive = "ILIKE" in cmp.op
        sp = s.spans.alias("tx")
        in_spans = or_(self.like(sp.c.inputs, pattern, insensitive=insensitive),
                       self.like(sp.c.outputs, pattern, insensitive=insensitive))
        # The text index holds a span's inputs and outputs as one text, joined by a
        # newline. A pattern '%literal%' matches it exactly when it matches either
        # part; any other pattern could run from one part into the other, or be
        # anchored where the other part begins or ends. The index is then asked
        # for the pattern unanchored, a superset, and the spans of the traces it
        # finds are checked against their inputs and outputs one by one.
        within = _within_one_text(pattern)
        probe = pattern if within else _unanchored(pattern)
        if self.fts and self.dialect == "postgresql":
            fts = s.fts_table()  # pg_trgm serves LIKE and ILIKE alike
            content = fts.c.content
            indexed = select(fts.c.trace_id).where(
                content.ilike(_pg_pattern(probe)) if insensitive
                else content.like(_pg_pattern(probe)))
        elif self.fts and _trigram_usable(pattern, insensitive):
            fts = s.fts_table()
            # The trigram index serves LIKE (ignoring case); GLOB re-checks the case.
            cond: Any = fts.c.content.like(probe)
            if not insensitive:
                cond = and_(cond, _glob(fts.c.content, probe))
            indexed = select(fts.c.trace_id).where(cond)
        else:
            member = self.member(select(sp.c.trace_id).where(in_spans))
            return not_(member) if negate else member
        if not within:
            checked = s.spans.alias("tc")
            indexed = select(checked.c.trace_id).where(
                checked.c.trace_id.in_(indexed),
                or_(self.like(checked.c.inputs, pattern, insensitive=insensitive),
                    self.like(checked.c.outputs, pattern, insensitive=insensitive)))
        # The index holds the first TEXT_CHARS of each text: the spans with more
        # are read in full too (found by their partial index, whose constant the
        # condition repeats). The text index cannot be probed by trace id: it is
        # searched once.
        limit: Any = literal_column(str(s.TEXT_CHARS))
        long_text = or_(func.length(sp.c.inputs) > limit, func.length(sp.c.outputs) > limit)
        member = self.member(indexed.union_all(select(sp.c.trace_id).where(long_text, in_spans)),
                             correlate=False)
        return not_(member) if negate else member

    def keyed(self, cmp: Comparison) -> ColumnElement[bool]:
        if cmp.field.kind == "tag" and cmp.field.key == _MLFLOW_TRACE_NAME:
            # MLflow keeps a trace's name in this tag; assay keeps it in a column.
            return self.compare(_T.name, cmp.op, cmp.value)
        table = {"tag": s.trace_tags, "metadata": s.trace_metadata}[cmp.field.kind].alias()
        has_key = select(table.c.trace_id).where(table.c.key == cmp.field.key)
        if cmp.op == "IS NULL":
            return self.member(has_key, negate=True)
        if cmp.op == "IS NOT NULL":
            return self.member(has_key)
        return self.member(has_key.where(self.compare(table.c.value, cmp.op, cmp.value)))

    def valid_assessments(self, a: Any, cmp: Comparison) -> list[ColumnElement[bool]]:
        """The rows of ``a`` (an alias of ``assessments``) that count for ``cmp``'s
        kind and name, whatever their value."""
        terms = [a.c.kind == cmp.field.kind, a.c.name == cmp.field.key]
        # A bound counts the overridden ones too, and so reads the (kind, name,
        # value) index alone (2,000 entries: 0.3 rather than 2.3 ms).
        if not self.superset:
            terms.append(a.c.overridden_by.is_(None))
        return terms

    def assessment(self, cmp: Comparison) -> ColumnElement[bool]:
        a = s.assessments.alias()
        valid = select(a.c.trace_id).where(*self.valid_assessments(a, cmp))
        if cmp.op == "IS NULL":
            return self.member(valid.where(_present(a)), negate=True)
        if cmp.op == "IS NOT NULL":
            return self.member(valid.where(_present(a)))
        return self.member(valid.where(self.typed(a, cmp.op, cmp.value)))

    def span_group(self, items: list[Comparison]) -> ColumnElement[bool]:
        """Comparisons that must all hold for one and the same span."""
        plain = [c for c in items if c.field.kind == "span"]
        attrs = [c for c in items if c.field.kind == "span_attribute"]
        if not plain and len(attrs) == 1 and attrs[0].op not in ("IS NULL",):
            return self.attribute_only(attrs[0])
        sp = s.spans.alias("sp")
        conds = []
        for c in plain:
            self.position = c.position
            conds.append(self.span_field(sp, c))
        for c in attrs:
            self.position = c.position
            conds.append(self.span_attribute(sp, c))
        return self.member(select(sp.c.trace_id).where(*conds))

    def attribute_only(self, cmp: Comparison) -> ColumnElement[bool]:
        a = s.span_attributes.alias("sa")
        # A typed comparison implies a value is there; only IS NOT NULL tests for it
        # (keeping the lookup on a covering index).
        sub = select(a.c.trace_id).where(a.c.key == cmp.field.key)
        if cmp.op == "IS NOT NULL":
            sub = sub.where(_present(a))
        else:
            sub = sub.where(self.typed(a, cmp.op, cmp.value))
        return self.member(sub)

    def span_attribute(self, sp: Any, cmp: Comparison) -> ColumnElement[bool]:
        a = s.span_attributes.alias()
        match = exists().where(a.c.trace_id == sp.c.trace_id, a.c.span_id == sp.c.span_id,
                               a.c.key == cmp.field.key)
        if cmp.op == "IS NULL":
            return not_(match.where(_present(a)))
        if cmp.op == "IS NOT NULL":
            return match.where(_present(a))
        return match.where(self.typed(a, cmp.op, cmp.value))

    def span_field(self, sp: Any, cmp: Comparison) -> ColumnElement[bool]:
        name = cmp.field.name
        if name == "content":
            insensitive = "ILIKE" in cmp.op
            cond = or_(*(self.like(col, str(cmp.value), insensitive=insensitive)
                         for col in (sp.c.inputs, sp.c.outputs, sp.c.attributes)))
            return not_(cond) if cmp.op.startswith("NOT") else cond
        if name == "duration_ms":
            value = cmp.value
            scaled = tuple(v * 1_000_000 for v in value) if isinstance(value, tuple) \
                else (None if value is None else value * 1_000_000)
            return self.compare(sp.c.duration_ns, cmp.op, scaled)
        col = {"name": sp.c.name, "type": sp.c.span_type, "status": sp.c.status}[name]
        return self.compare(col, cmp.op, cmp.value)

    # -- structure ------------------------------------------------------------
    def comparison(self, cmp: Comparison) -> ColumnElement[bool]:
        kind = cmp.field.kind
        if kind == "trace":
            return self.trace_field(cmp)
        if kind in ("tag", "metadata"):
            return self.keyed(cmp)
        if kind in ("feedback", "expectation"):
            return self.assessment(cmp)
        if kind in _SPAN_KINDS:
            return self.span_group([cmp])
        raise AssertionError(kind)

    def expr(self, node: Expr) -> ColumnElement[bool]:
        if isinstance(node, Comparison):
            self.position = node.position
            return self.comparison(node)
        if isinstance(node, Not):
            return not_(self.expr(node.item))
        if isinstance(node, Or):
            return or_(*(self.expr(i) for i in node.items))
        spans = [i for i in node.items
                 if isinstance(i, Comparison) and i.field.kind in _SPAN_KINDS]
        rest = [self.expr(i) for i in node.items
                if not (isinstance(i, Comparison) and i.field.kind in _SPAN_KINDS)]
        if spans:
            rest.append(self.span_group(spans))
        return and_(*rest)


def _epoch_ms(value: Any) -> Any:
    if isinstance(value, str):
        return iso_to_epoch_ms(value)
    if isinstance(value, tuple):
        return tuple(_epoch_ms(v) for v in value)
    return value


def _present(table: Any) -> Any:
    """A typed value that is there: a key set to null counts as absent."""
    return or_(table.c.value_kind != "j", table.c.str_value.is_not(None))


def _glob(col: Any, pattern: str) -> Any:
    return col.op("GLOB", is_comparison=True)(_like_to_glob(pattern))


def _pg_pattern(pattern: str) -> str:
    """A LIKE pattern for PostgreSQL, whose LIKE takes a backslash as its escape
    character: doubled, it stands for itself there, as it does on SQLite."""
    return pattern.replace("\\", "\\\\")


def _within_one_text(pattern: str) -> bool:
    """Whether ``pattern`` is ``'%literal%'``, the literal free of wildcards and
    newlines: it then matches two texts joined by a newline exactly when it
    matches one of them."""
    inner = pattern[1:-1]
    return (len(pattern) > 2 and pattern[0] == "%" and pattern[-1] == "%"
            and not any(ch in inner for ch in "%_\n"))


def _unanchored(pattern: str) -> str:
    """``pattern`` with a ``%`` at either end: it matches every text that has a
    part ``pattern`` matches."""
    return f"{'' if pattern.startswith('%') else '%'}{pattern}" \
           f"{'' if pattern.endswith('%') else '%'}"


def _trigram_usable(pattern: str, insensitive: bool) -> bool:
    """Whether SQLite's trigram index can answer this LIKE: it needs a literal run of
    three or more characters, and folds only ASCII case."""
    if insensitive and not pattern.isascii():
        return False
    runs = pattern.replace("_", "%").split("%")
    return any(len(run) >= 3 for run in runs)


def _like_to_glob(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "%":
            out.append("*")
        elif ch == "_":
            out.append("?")
        elif ch in "*?[":
            out.append(f"[{ch}]")
        else:
            out.append(ch)
    return "".join(out)


def compile_filter(expr: Expr | None, *, dialect: str, fts: bool,
                   filter_string: str = "") -> ColumnElement[bool]:
    """The WHERE condition on ``traces`` for a parsed filter (``true()`` for none)."""
    if expr is None:
        return true()
    return _Compiler(dialect, fts, filter_string).expr(expr)


def compile_correlated(expr: Expr, *, dialect: str, fts: bool,
                       filter_string: str = "") -> ColumnElement[bool] | None:
    """The same condition with each subquery as a correlated ``EXISTS`` probe, for
    a walk through the traces in order that stops at the page size; ``None``
    when the filter has no such subquery (then both forms are the same)."""
    compiler = _Compiler(dialect, fts, filter_string, correlated=True)
    cond = compiler.expr(expr)
    return cond if compiler.subqueries else None


def compile_span_members(expr: Expr, *, dialect: str, fts: bool,
                         filter_string: str = "") -> Any | None:
    """The subquery of trace ids that a filter of span predicates only (one, or
    several AND-ed, which one and the same span must match) selects from the
    spans or their attributes; ``None`` for any other filter. Every span's
    trace is stored with it, so these ids are the matching traces of the whole
    store (counting them by the span index alone: see ``plans.build_count``)."""
    items = [expr] if isinstance(expr, Comparison) else (
        expr.items if isinstance(expr, And) else [])
    if not items or not all(isinstance(i, Comparison) and i.field.kind in _SPAN_KINDS
                            for i in items):
        return None
    compiler = _Compiler(dialect, fts, filter_string)
    compiler.members = []
    compiler.span_group(items)  # type: ignore[arg-type]
    if len(compiler.members) != 1:
        return None
    sub, negate, _ = compiler.members[0]
    return None if negate else sub


def compile_assessment_page(expr: Expr, *, dialect: str, fts: bool,
                            filter_string: str = "") -> tuple[Any, ColumnElement[bool]] | None:
    """For a filter that is one ``feedback.<name> = value`` or
    ``expectation.<name> = value`` (a boolean, a number or a string): an alias of
    ``assessments`` and the condition its valid rows with that value meet, whose
    columns lead one of the page indexes (see ``plans.build_plan``); ``None`` for
    any other filter."""
    if not isinstance(expr, Comparison) or expr.op != "=" or expr.value is None \
            or expr.field.kind not in ("feedback", "expectation"):
        return None
    compiler = _Compiler(dialect, fts, filter_string)
    a = s.assessments.alias("valued")
    return a, and_(*compiler.valid_assessments(a, expr), compiler.typed(a, "=", expr.value))


#: An upper bound on a filter's matches, from the subqueries of its predicates:
#: ``("rows", subquery)``, the trace ids one predicate selects (a trace may be
#: counted more than once); ``("min", [...])`` for AND; ``("sum", [...])`` for OR.
Bound = tuple[str, Any]


def compile_bound(expr: Expr, *, dialect: str, fts: bool,
                  filter_string: str = "") -> Bound | None:
    """How to bound the number of traces ``expr`` matches by counting index
    entries, or ``None`` when nothing bounds it (a predicate on a trace column,
    a negation, the full text). Counting each subquery's rows up to a limit
    reads one index range, whatever the rest of the store holds."""
    compiler = _Compiler(dialect, fts, filter_string)
    compiler.superset = True

    def bound(node: Expr) -> Bound | None:
        if isinstance(node, Comparison):
            if node.field.kind == "trace":
                return None  # a column (run_id: a column or a metadata key)
            compiler.members = []
            compiler.position = node.position
            compiler.comparison(node)
            members, compiler.members = compiler.members, None
            if len(members) != 1:
                return None
            sub, negate, probed = members[0]
            return None if negate or not probed else ("rows", sub)
        if isinstance(node, Not):
            return None
        parts = [bound(item) for item in node.items]
        if isinstance(node, Or):
            return None if any(p is None for p in parts) else ("sum", parts)
        known = [p for p in parts if p is not None]
        return ("min", known) if known else None

    return bound(expr)


# -- run filters ----------------------------------------------------------------------------------

_R = s.runs.c
_RUN_COLUMNS = {"status": _R.status, "run_name": _R.name, "run_id": _R.run_id,
                "start_time": _R.start_time_ms, "end_time": _R.end_time_ms,
                "experiment": _R.experiment}


def latest_metric_value(run_id: Any, key: str) -> Any:
    """A scalar subquery: the value of metric ``key`` at its highest step in the run
    ``run_id`` (a column to correlate with, or a value); NULL when never logged."""
    m = s.run_metrics.alias("lm")
    m2 = s.run_metrics.alias("lm2")
    top = (select(func.max(m2.c.step)).where(m2.c.run_id == m.c.run_id, m2.c.key == m.c.key)
           .scalar_subquery())
    return (select(m.c.value).where(m.c.run_id == run_id, m.c.key == key, m.c.step == top)
            .scalar_subquery())


class _RunCompiler(_Compiler):
    """The filter compiler over ``runs``: run attributes, metrics, params and tags."""

    def member(self, sub: Any, *, negate: bool = False,
               correlate: bool = True) -> ColumnElement[bool]:
        return _R.run_id.not_in(sub) if negate else _R.run_id.in_(sub)

    def comparison(self, cmp: Comparison) -> ColumnElement[bool]:
        kind = cmp.field.kind
        if kind == "run":
            value = cmp.value
            if cmp.field.name in ("start_time", "end_time"):
                value = _epoch_ms(value)
            return self.compare(_RUN_COLUMNS[cmp.field.name], cmp.op, value)
        if kind == "metric":
            return self.metric(cmp)
        if kind in ("param", "run_tag"):
            table = (s.run_params if kind == "param" else s.run_tags).alias()
            has_key = select(table.c.run_id).where(table.c.key == cmp.field.key)
            if cmp.op == "IS NULL":
                return self.member(has_key, negate=True)
            if cmp.op == "IS NOT NULL":
                return self.member(has_key)
            return self.member(has_key.where(self.compare(table.c.value, cmp.op, cmp.value)))
        raise self.error(f"{cmp.field.path} is not a run field", cmp.position)

    def metric(self, cmp: Comparison) -> ColumnElement[bool]:
        m = s.run_metrics.alias("m")
        logged = select(m.c.run_id).where(m.c.key == cmp.field.key)
        if cmp.op == "IS NULL":
            return self.member(logged, negate=True)
        if cmp.op == "IS NOT NULL":
            return self.member(logged)
        m2 = s.run_metrics.alias("m2")
        top = (select(func.max(m2.c.step)).where(m2.c.run_id == m.c.run_id, m2.c.key == m.c.key)
               .scalar_subquery())
        return self.member(logged.where(m.c.step == top,
                                        self.compare(m.c.value, cmp.op, cmp.value)))


def compile_run_filter(expr: Expr | None, *, dialect: str,
                       filter_string: str = "") -> ColumnElement[bool]:
    """The WHERE condition on ``runs`` for a parsed run filter (``true()`` for none).

    Raises:
        InvalidFilter: an RLIKE pattern is not a regular expression.
    """
    if expr is None:
        return true()
    return _RunCompiler(dialect, False, filter_string).expr(expr)
