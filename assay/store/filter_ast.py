"""The filter language's typed AST, its closed field table, and ``render``.

:func:`assay.store.filter_parser.parse_filter` turns a filter string into an
:data:`Expr` made of four frozen dataclasses: :class:`Comparison` (a field, an
operator and a literal), :class:`And`, :class:`Or` and :class:`Not`. Nested
``And``/``Or`` of the same kind are flattened. Positions (0-based character
offsets into the filter) and the literal's source text are carried along for
error messages but take no part in equality, so ASTs compare by meaning.

Fields
======

Every field a filter may name is in the tables below; nothing else is
accepted. Names and prefixes are case-insensitive; keys (the part after
``tags.`` and the like) are case-sensitive and are everything after the
prefix, dots included (``span.attributes.gen_ai.usage.input_tokens`` has the
key ``gen_ai.usage.input_tokens``). A key segment that is not a plain word is
quoted with backticks (``tags.`mlflow.traceName```, ``tags.`my key```) or,
after a dot, with double quotes (``tags."my key"``).

Trace fields: ``trace.<field>``, ``attribute.<field>``, ``attributes.<field>``
or the bare ``<field>``; a ``Field`` of kind ``"trace"``::

    field (canonical)   aliases                                     value type
    status              state                                       string
    name                                                            string
    timestamp_ms        timestamp, start_time_ms, request_time      timestamp
    execution_time_ms   execution_time, execution_duration,         number
                        duration_ms, duration
    end_time_ms         end_time                                    timestamp
    request_id          trace_id, id                                string
    client_request_id                                               string
    run_id                                                          string
    text                                                            fulltext
    request                                                         string
    response                                                        string
    prompt              prompts                                     prompt

Span fields: ``span.<field>``; a ``Field`` of kind ``"span"``::

    name                                                            string
    type                span_type                                   string
    status                                                          string
    duration_ms         duration                                    number
    content                                                         fulltext

Keyed fields: ``Field.name`` is the kind, ``Field.key`` the user's key::

    path                                          kind             value type
    tags.<key>, tag.<key>                         tag              keyed
    metadata.<key>, request_metadata.<key>        metadata         keyed
    span.attributes.<key>                         span_attribute   typed
    feedback.<name>                               feedback         typed
    expectation.<name>                            expectation      typed

Value types, with the operators and literals each accepts:

- **string**: ``= != LIKE NOT LIKE ILIKE NOT ILIKE RLIKE IN NOT IN IS [NOT]
  NULL`` with quoted strings (``trace.status`` takes any string: ``'OK'``,
  ``'ERROR'``, ``'IN_PROGRESS'``...; the store decides what matches).
- **number**: ``= != < <= > >= IN NOT IN IS [NOT] NULL`` with numbers; a quoted
  number (``'500'``) is accepted and becomes the number.
- **timestamp**: as *number* (milliseconds since the epoch), and also an ISO
  date or date-time string (``'2026-01-01'``, ``'2026-01-01T12:00:00Z'``),
  kept as the string; :func:`iso_to_epoch_ms` converts it (naive means UTC).
- **fulltext**: ``LIKE NOT LIKE ILIKE NOT ILIKE`` with a quoted pattern.
- **prompt**: ``= != IN NOT IN IS [NOT] NULL`` with ``'name/version'``.
- **keyed** (tags, metadata): as *string*; values are strings.
- **typed** (span attributes, feedback, expectations): every operator; the
  literal's type says how to compare (a number as a number, a string as a
  string, ``true``/``false`` as a boolean). Ordering operators take numbers;
  ``LIKE``-family operators take strings; booleans take ``= != IN NOT IN``.

Canonical operators: ``= != < <= > >= LIKE NOT LIKE ILIKE NOT ILIKE RLIKE IN
NOT IN IS NULL IS NOT NULL`` (``<>`` is read as ``!=``).

Run fields
==========

:func:`assay.store.filter_parser.parse_run_filter` reads MLflow's run-search
syntax with the same tokenizer and grammar over these fields instead. Run
attributes: ``attributes.<field>``, ``attribute.<field>``, ``attr.<field>``,
``run.<field>`` or the bare ``<field>``; a ``Field`` of kind ``"run"``::

    field (canonical)   aliases                                     value type
    status                                                          string
    run_name            name                                        string
    run_id              id                                          string
    start_time          start_time_ms                               timestamp
    end_time            end_time_ms                                 timestamp
    experiment                                                      string

Keyed run fields::

    path                                          kind             value type
    metrics.<key>, metric.<key>                   metric           number
    params.<key>, param.<key>, parameters.<key>   param            keyed
    tags.<key>, tag.<key>                         run_tag          keyed

A metric compares its latest value (the one logged at its highest step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Literal

__all__ = [
    "ALL_OPERATORS",
    "EQUALITY",
    "KEYED_FIELDS",
    "MEMBERSHIP",
    "NULLNESS",
    "OPERATORS_BY_TYPE",
    "ORDERING",
    "PATTERN",
    "PREFIXES",
    "RUN_FIELDS",
    "RUN_KEYED_FIELDS",
    "RUN_PREFIXES",
    "SPAN_FIELDS",
    "TRACE_FIELDS",
    "And",
    "Comparison",
    "Expr",
    "Field",
    "FieldKind",
    "FieldSpec",
    "Not",
    "Or",
    "Scalar",
    "Value",
    "ValueType",
    "and_",
    "comparisons",
    "field_spec",
    "iso_to_epoch_ms",
    "is_plain_key_segment",
    "not_",
    "or_",
    "parse_iso_datetime",
    "render",
    "render_field",
    "render_value",
]

FieldKind = Literal["trace", "tag", "metadata", "span", "span_attribute", "feedback",
                    "expectation", "run", "metric", "param", "run_tag"]
ValueType = Literal["string", "number", "timestamp", "fulltext", "prompt", "keyed", "typed"]
Scalar = str | int | float | bool
#: A comparison's literal: a scalar, a tuple of scalars for ``IN``/``NOT IN``,
#: ``None`` for ``IS [NOT] NULL``.
Value = Scalar | tuple[Scalar, ...] | None

EQUALITY = frozenset({"=", "!="})
ORDERING = frozenset({"<", "<=", ">", ">="})
PATTERN = frozenset({"LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE", "RLIKE"})
MEMBERSHIP = frozenset({"IN", "NOT IN"})
NULLNESS = frozenset({"IS NULL", "IS NOT NULL"})
ALL_OPERATORS = EQUALITY | ORDERING | PATTERN | MEMBERSHIP | NULLNESS

#: The operators each value type accepts.
OPERATORS_BY_TYPE: dict[ValueType, frozenset[str]] = {
    "string": EQUALITY | PATTERN | MEMBERSHIP | NULLNESS,
    "number": EQUALITY | ORDERING | MEMBERSHIP | NULLNESS,
    "timestamp": EQUALITY | ORDERING | MEMBERSHIP | NULLNESS,
    "fulltext": frozenset({"LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"}),
    "prompt": EQUALITY | MEMBERSHIP | NULLNESS,
    "keyed": EQUALITY | PATTERN | MEMBERSHIP | NULLNESS,
    "typed": ALL_OPERATORS,
}


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One row of the closed field table."""

    kind: FieldKind
    name: str
    value_type: ValueType
    aliases: tuple[str, ...] = ()
    doc: str = ""

    @property
    def operators(self) -> frozenset[str]:
        return OPERATORS_BY_TYPE[self.value_type]


def _table(*specs: FieldSpec) -> dict[str, FieldSpec]:
    return {s.name: s for s in specs}


#: Trace-level fields by canonical name.
TRACE_FIELDS: dict[str, FieldSpec] = _table(
    FieldSpec("trace", "status", "string", ("state",), "the trace's state: OK, ERROR, IN_PROGRESS"),
    FieldSpec("trace", "name", "string", (), "the trace's name (its root span's, by default)"),
    FieldSpec("trace", "timestamp_ms", "timestamp", ("timestamp", "start_time_ms", "request_time"),
              "start time, milliseconds since the epoch"),
    FieldSpec("trace", "execution_time_ms", "number",
              ("execution_time", "execution_duration", "duration_ms", "duration"),
              "duration in milliseconds"),
    FieldSpec("trace", "end_time_ms", "timestamp", ("end_time",),
              "end time (start + duration), milliseconds since the epoch"),
    FieldSpec("trace", "request_id", "string", ("trace_id", "id"), "the trace id"),
    FieldSpec("trace", "client_request_id", "string", (), "the caller's own request id"),
    FieldSpec("trace", "run_id", "string", (), "the run the trace belongs to"),
    FieldSpec("trace", "text", "fulltext", (), "full text of every span's inputs and outputs"),
    FieldSpec("trace", "request", "string", (), "the trace's request (root span inputs)"),
    FieldSpec("trace", "response", "string", (), "the trace's response (root span outputs)"),
    FieldSpec("trace", "prompt", "prompt", ("prompts",), "a linked prompt, as 'name/version'"),
)

#: Span-level fields by canonical name (``span.attributes.<key>`` is keyed).
SPAN_FIELDS: dict[str, FieldSpec] = _table(
    FieldSpec("span", "name", "string", (), "a span's name"),
    FieldSpec("span", "type", "string", ("span_type",), "a span's type: LLM, TOOL, ..."),
    FieldSpec("span", "status", "string", (), "a span's status: OK, ERROR, UNSET"),
    FieldSpec("span", "duration_ms", "number", ("duration",), "a span's duration in ms"),
    FieldSpec("span", "content", "fulltext", (), "a span's inputs, outputs and attributes"),
)

#: Keyed fields by kind: the user's key is ``Field.key``.
KEYED_FIELDS: dict[str, FieldSpec] = _table(
    FieldSpec("tag", "tag", "keyed", (), "a trace tag"),
    FieldSpec("metadata", "metadata", "keyed", (), "a trace metadata entry"),
    FieldSpec("span_attribute", "span_attribute", "typed", (), "a span attribute"),
    FieldSpec("feedback", "feedback", "typed", (), "the current feedback of that name"),
    FieldSpec("expectation", "expectation", "typed", (), "the current expectation of that name"),
)

#: Path prefixes (lower case) and the field group each one opens.
PREFIXES: dict[str, str] = {
    "trace": "trace", "attribute": "trace", "attributes": "trace",
    "tag": "tag", "tags": "tag",
    "metadata": "metadata", "request_metadata": "metadata",
    "span": "span",
    "feedback": "feedback",
    "expectation": "expectation",
}

#: Run attributes by canonical name (what ``search_runs`` filters on).
RUN_FIELDS: dict[str, FieldSpec] = _table(
    FieldSpec("run", "status", "string", (), "the run's status: RUNNING, FINISHED, FAILED, KILLED"),
    FieldSpec("run", "run_name", "string", ("name",), "the run's name"),
    FieldSpec("run", "run_id", "string", ("id",), "the run id"),
    FieldSpec("run", "start_time", "timestamp", ("start_time_ms",),
              "start time, milliseconds since the epoch"),
    FieldSpec("run", "end_time", "timestamp", ("end_time_ms",),
              "end time, milliseconds since the epoch (none while running)"),
    FieldSpec("run", "experiment", "string", (), "the run's experiment"),
)

#: Keyed run fields by kind: the user's key is ``Field.key``.
RUN_KEYED_FIELDS: dict[str, FieldSpec] = _table(
    FieldSpec("metric", "metric", "number", (), "a run metric's latest value"),
    FieldSpec("param", "param", "keyed", (), "a run parameter"),
    FieldSpec("run_tag", "run_tag", "keyed", (), "a run tag"),
)

#: Run filter path prefixes (lower case) and the field group each one opens.
RUN_PREFIXES: dict[str, str] = {
    "attribute": "run", "attributes": "run", "attr": "run", "run": "run",
    "metric": "metric", "metrics": "metric",
    "param": "param", "params": "param", "parameter": "param", "parameters": "param",
    "tag": "run_tag", "tags": "run_tag",
}

_KEYED_PREFIX = {"tag": "tags", "metadata": "metadata", "span_attribute": "span.attributes",
                 "feedback": "feedback", "expectation": "expectation", "metric": "metrics",
                 "param": "params", "run_tag": "tags"}


@dataclasses.dataclass(frozen=True)
class Field:
    """A field a comparison reads.

    ``kind`` is one of ``trace``, ``span`` (a fixed field from the tables),
    ``tag``, ``metadata``, ``span_attribute``, ``feedback``, ``expectation``
    (keyed). ``name`` is the canonical field name after alias resolution; for
    keyed kinds it is the kind itself and ``key`` holds the user's key.
    """

    kind: FieldKind
    name: str
    key: str | None = None
    position: int = dataclasses.field(default=0, compare=False, repr=False)

    @property
    def spec(self) -> FieldSpec:
        return field_spec(self)

    @property
    def path(self) -> str:
        """The canonical text of this field, e.g. ``trace.status``, ``tags.env``."""
        return render_field(self)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``field op value``; ``raw`` is the literal's source text (a tuple for ``IN``)."""

    field: Field
    op: str
    value: Value
    position: int = dataclasses.field(default=0, compare=False, repr=False)
    raw: str | tuple[str, ...] | None = dataclasses.field(default=None, compare=False,
                                                        repr=False)


@dataclasses.dataclass(frozen=True)
class And:
    """All of ``items`` (two or more, none of them an ``And``)."""

    items: tuple[Expr, ...]
    position: int = dataclasses.field(default=0, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Or:
    """Any of ``items`` (two or more, none of them an ``Or``)."""

    items: tuple[Expr, ...]
    position: int = dataclasses.field(default=0, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Not:
    """The negation of ``item``."""

    item: Expr
    position: int = dataclasses.field(default=0, compare=False, repr=False)


Expr = Comparison | And | Or | Not


def field_spec(field: Field) -> FieldSpec:
    """The table row of ``field``."""
    if field.kind == "trace":
        return TRACE_FIELDS[field.name]
    if field.kind == "span":
        return SPAN_FIELDS[field.name]
    if field.kind == "run":
        return RUN_FIELDS[field.name]
    if field.kind in RUN_KEYED_FIELDS:
        return RUN_KEYED_FIELDS[field.kind]
    return KEYED_FIELDS[field.kind]


def and_(*items: Expr, position: int | None = None) -> Expr:
    """``And`` of ``items`` with nested ``And`` flattened; a single item is returned as is."""
    flat: list[Expr] = []
    for item in items:
        flat.extend(item.items if isinstance(item, And) else (item,))
    if not flat:
        raise ValueError("and_() needs at least one item")
    if len(flat) == 1:
        return flat[0]
    return And(tuple(flat), position=_first_position(flat) if position is None else position)


def or_(*items: Expr, position: int | None = None) -> Expr:
    """``Or`` of ``items`` with nested ``Or`` flattened; a single item is returned as is."""
    flat: list[Expr] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Or) else (item,))
    if not flat:
        raise ValueError("or_() needs at least one item")
    if len(flat) == 1:
        return flat[0]
    return Or(tuple(flat), position=_first_position(flat) if position is None else position)


def not_(item: Expr, position: int = 0) -> Not:
    """``Not(item)``."""
    return Not(item, position=position)


def _first_position(items: list[Expr]) -> int:
    return items[0].position


def comparisons(expr: Expr) -> Iterator[Comparison]:
    """Every comparison in ``expr``, left to right."""
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Comparison):
            yield node
        elif isinstance(node, Not):
            stack.append(node.item)
        else:
            stack.extend(reversed(node.items))


# -- render -------------------------------------------------------------------------------------

def is_plain_key_segment(segment: str) -> bool:
    """Whether ``segment`` can be written unquoted after a dot (letters, digits, ``_``)."""
    return bool(segment) and all(ch.isalnum() or ch == "_" for ch in segment)


def _render_key(key: str) -> str:
    if all(is_plain_key_segment(part) for part in key.split(".")):
        return key
    return "`" + key.replace("`", "``") + "`"


def render_field(field: Field) -> str:
    """The canonical text of a field (``trace.status``, ``tags.`a b```)."""
    if field.kind == "trace":
        return f"trace.{field.name}"
    if field.kind == "span":
        return f"span.{field.name}"
    if field.kind == "run":
        return f"attributes.{field.name}"
    return f"{_KEYED_PREFIX[field.kind]}.{_render_key(field.key or '')}"


def render_value(value: Value) -> str:
    """A literal as filter text: ``'it''s'``, ``42``, ``1.5``, ``true``, ``('a', 'b')``."""
    if isinstance(value, tuple):
        return "(" + ", ".join(render_value(v) for v in value) + ")"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"not a filter literal: {value!r}")


def render(expr: Expr) -> str:
    """Filter text that parses back to ``expr`` (positions and raw text aside).

    Example:
        >>> render(parse_filter("tags.env = 'prod' and (status='OK' or status='ERROR')"))
        "tags.env = 'prod' AND (trace.status = 'OK' OR trace.status = 'ERROR')"
    """
    if isinstance(expr, Comparison):
        head = f"{render_field(expr.field)} {expr.op}"
        return head if expr.op in NULLNESS else f"{head} {render_value(expr.value)}"
    if isinstance(expr, Not):
        inner = render(expr.item)
        return f"NOT ({inner})" if isinstance(expr.item, (And, Or)) else f"NOT {inner}"
    if isinstance(expr, And):
        return " AND ".join(f"({render(i)})" if isinstance(i, (And, Or)) else render(i)
                            for i in expr.items)
    return " OR ".join(f"({render(i)})" if isinstance(i, Or) else render(i) for i in expr.items)


# -- ISO dates ----------------------------------------------------------------------------------

def _digits(text: str, start: int, count: int) -> int | None:
    part = text[start:start + count]
    if len(part) != count or not all("0" <= ch <= "9" for ch in part):
        return None
    return int(part)


def parse_iso_datetime(text: str) -> datetime | None:
    """An aware datetime for an ISO 8601 date or date-time, or ``None``.

    Accepted: ``YYYY-MM-DD``, optionally followed by ``T`` or a space and
    ``HH:MM[:SS[.fraction]]``, optionally followed by ``Z`` or ``±HH[:MM]``.
    Without an offset the time is UTC. The same on every Python version.
    """
    year, month, day = _digits(text, 0, 4), _digits(text, 5, 2), _digits(text, 8, 2)
    if year is None or month is None or day is None or text[4:5] != "-" or text[7:8] != "-":
        return None
    hour = minute = second = micro = 0
    tz = timezone.utc
    i = 10
    if i < len(text):
        if text[i] not in "Tt ":
            return None
        h, m = _digits(text, i + 1, 2), _digits(text, i + 4, 2)
        if h is None or m is None or text[i + 3:i + 4] != ":":
            return None
        hour, minute, i = h, m, i + 6
        if text[i:i + 1] == ":":
            s = _digits(text, i + 1, 2)
            if s is None:
                return None
            second, i = s, i + 3
            if text[i:i + 1] in (".", ","):
                j = i + 1
                while j < len(text) and "0" <= text[j] <= "9":
                    j += 1
                if j == i + 1:
                    return None
                micro, i = int(text[i + 1:j][:6].ljust(6, "0")), j
        rest = text[i:]
        if rest in ("Z", "z"):
            pass
        elif rest:
            oh = _digits(rest, 1, 2)
            om = 0 if len(rest) == 3 else (_digits(rest, 4, 2) if rest[3:4] == ":"
                                           else _digits(rest, 3, 2))
            if rest[0] not in "+-" or oh is None or om is None \
                    or len(rest) not in (3, 5, 6) or (len(rest) == 5 and rest[3] == ":") \
                    or oh > 23 or om > 59:
                return None
            offset = timedelta(hours=oh, minutes=om)
            tz = timezone(offset if rest[0] == "+" else -offset)
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError:
        return None


def iso_to_epoch_ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO date or date-time (naive means UTC).

    Raises:
        ValueError: ``text`` is not an ISO date (the parser has already
            rejected such strings for timestamp fields).
    """
    dt = parse_iso_datetime(text)
    if dt is None:
        raise ValueError(f"not an ISO 8601 date: {text!r}")
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
