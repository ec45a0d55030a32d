"""Filter strings to :mod:`~assay.store.filter_ast` trees: tokenizer and recursive descent.

Grammar (keywords are case-insensitive)::

    expr       := term (OR term)*
    term       := factor (AND factor)*
    factor     := NOT factor | '(' expr ')' | comparison
    comparison := field op value | field [NOT] IN '(' value (',' value)* ')'
                | field IS [NOT] NULL
    op         := = | != | <> | < | <= | > | >= | LIKE | NOT LIKE | ILIKE | NOT ILIKE | RLIKE
    value      := 'string' | "string" | number | TRUE | FALSE

Lexical rules:

- Strings are single- or double-quoted; the quote is doubled inside
  (``'it''s'``, ``"a ""b"" c"``). A backslash is an ordinary character, so
  regular expressions need no extra escaping (``RLIKE '^v[0-9]+\\.'``).
- Numbers: an optional sign, digits with an optional fraction, an optional
  exponent (``-1``, ``.5``, ``1.5e3``). Without fraction or exponent a number is
  an ``int`` (64-bit); otherwise a ``float`` (finite).
- A field is a dotted path. A segment is a word (letters of any script, digits,
  ``_``; the first segment starts with a letter or ``_``), a backtick-quoted
  key (```` `mlflow.traceName` ````, backticks doubled inside) or, after a dot,
  a double-quoted key (``tags."my key"``). No spaces around the dots.
- **Double quotes, key or value?** Position decides: a double-quoted token
  where a comparison starts (left of the operator) names a field (``"status" =
  'OK'`` reads the trace field ``status``, as a backtick-quoted one would);
  after the operator or inside an ``IN`` list it is a string value. After a
  dot it is always a key segment.

The same tokenizer and grammar read run filters (:func:`parse_run_filter`,
MLflow's run-search syntax) over the run fields of
:mod:`~assay.store.filter_ast`: what differs is only which fields a path
names, so each field table comes with its own resolver (a :class:`_Grammar`).

Limits: a filter is at most :data:`MAX_FILTER_LENGTH` characters, nests
parentheses and ``NOT`` at most :data:`MAX_DEPTH` deep, and an ``IN`` list
holds at most :data:`MAX_IN_ITEMS` values. Every failure raises
:class:`assay.errors.InvalidFilter` with the 0-based position and what was
expected there; nothing else is ever raised.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import NoReturn, cast

from assay.errors import InvalidFilter
from assay.store.filter_ast import (
    KEYED_FIELDS,
    ORDERING,
    PATTERN,
    PREFIXES,
    RUN_FIELDS,
    RUN_KEYED_FIELDS,
    RUN_PREFIXES,
    SPAN_FIELDS,
    TRACE_FIELDS,
    Comparison,
    Expr,
    Field,
    FieldKind,
    FieldSpec,
    Not,
    Scalar,
    Value,
    and_,
    or_,
    parse_iso_datetime,
    render_field,
)

__all__ = ["MAX_DEPTH", "MAX_FILTER_LENGTH", "MAX_IN_ITEMS", "parse_filter", "parse_run_filter"]

MAX_FILTER_LENGTH = 10_000
MAX_DEPTH = 50
MAX_IN_ITEMS = 10_000

_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ILIKE", "RLIKE",
                       "TRUE", "FALSE"})
_OPERATORS_HINT = ("operators: =, !=, <, <=, >, >=, LIKE, NOT LIKE, ILIKE, NOT ILIKE, RLIKE, "
                   "IN (...), NOT IN (...), IS NULL, IS NOT NULL")
_FIELDS_HINT = ("fields: " + ", ".join(TRACE_FIELDS) + " (bare or after trace.); "
                + ", ".join(f"span.{n}" for n in SPAN_FIELDS)
                + ", span.attributes.<key>; tags.<key>, metadata.<key>, feedback.<name>, "
                  "expectation.<name>")
_KEYED_PREFIX_TEXT = {"tag": "tags", "metadata": "metadata", "feedback": "feedback",
                      "expectation": "expectation"}
_RUN_FIELDS_HINT = ("fields: " + ", ".join(f"attributes.{n}" for n in RUN_FIELDS)
                    + " (attributes. may be left out); metrics.<key>, params.<key>, tags.<key>; "
                      "quote keys with special characters: metrics.`accuracy/mean`")


# -- tokens -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Segment:
    text: str
    quoted: bool
    position: int


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str        # name, string, dqstring, number, op, (, ), ",", eof
    position: int
    end: int
    value: str = ""  # decoded string, canonical operator, number text
    segments: tuple[_Segment, ...] = ()

    @property
    def keyword(self) -> str | None:
        """The keyword this token spells (an unquoted ASCII word), or ``None``."""
        if self.kind != "name" or len(self.segments) != 1 or self.segments[0].quoted:
            return None
        word = self.segments[0].text
        return word.upper() if word.isascii() and word.upper() in _KEYWORDS else None


def _is_ident_start(ch: str) -> bool:
    return ch.isalpha() or ch == "_"


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _scan_number(text: str, i: int) -> int:
    """The end of the number starting at ``i``, or -1 if none starts there."""
    n, j = len(text), i
    if j < n and text[j] in "+-":
        j += 1
    start = j
    while j < n and _is_digit(text[j]):
        j += 1
    whole = j - start
    frac = 0
    if j < n and text[j] == ".":
        k = j + 1
        while k < n and _is_digit(text[k]):
            k += 1
        frac = k - j - 1
        if whole or frac:
            j = k
    if not (whole or frac):
        return -1
    if j < n and text[j] in "eE":
        k = j + 1
        if k < n and text[k] in "+-":
            k += 1
        digits = k
        while k < n and _is_digit(text[k]):
            k += 1
        if k > digits:
            j = k
    return j


class _Tokenizer:
    def __init__(self, text: str, key_example: str = "tags.`my/key`") -> None:
        self.text = text
        self.key_example = key_example

    def fail(self, message: str, position: int, hint: str | None = None) -> NoReturn:
        raise InvalidFilter(message, filter_string=self.text, position=position, hint=hint)

    def tokens(self) -> list[_Token]:
        text, n, i = self.text, len(self.text), 0
        out: list[_Token] = []
        while True:
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                out.append(_Token("eof", n, n))
                return out
            ch = text[i]
            if ch in "(),":
                out.append(_Token(ch, i, i + 1, ch))
                i += 1
            elif ch in "=!<>":
                out.append(self._operator(i))
                i = out[-1].end
            elif ch == "'" or ch == '"':
                value, end = self._quoted(i, ch, "string")
                out.append(_Token("string" if ch == "'" else "dqstring", i, end, value))
                i = end
            elif _is_digit(ch) or ch in "+-.":
                end = _scan_number(text, i)
                if end < 0:
                    self.fail(f"unexpected {ch!r}", i,
                              None if ch == "." else "a sign must be followed by a number")
                if end < n and (_is_ident_char(text[end]) or text[end] == "."):
                    while end < n and (_is_ident_char(text[end]) or text[end] == "."):
                        end += 1
                    self.fail(f"malformed number {text[i:end]!r}", i,
                              "numbers look like 42, -1, 0.5 or 1.5e3")
                out.append(_Token("number", i, end, text[i:end]))
                i = end
            elif ch == "`" or _is_ident_start(ch):
                out.append(self._path(i))
                i = out[-1].end
            else:
                hint = None
                if i and (_is_ident_char(text[i - 1]) or text[i - 1] == "`"):
                    hint = f"quote a key with special characters in backticks: {self.key_example}"
                self.fail(f"unexpected character {ch!r}", i, hint)

    def _operator(self, i: int) -> _Token:
        two = self.text[i:i + 2]
        if two in ("!=", "<=", ">=", "<>"):
            return _Token("op", i, i + 2, "!=" if two == "<>" else two)
        if two == "==":
            self.fail("'==' is not an operator", i, "use '=' to test equality")
        if two[0] == "!":
            self.fail("unexpected '!'", i, "use '!=' for 'not equal', or NOT before a comparison")
        return _Token("op", i, i + 1, two[0])

    def _quoted(self, i: int, quote: str, what: str) -> tuple[str, int]:
        """The content of the quoted token at ``i`` (doubled quotes undone) and its end."""
        text, parts, j = self.text, [], i + 1
        while True:
            k = text.find(quote, j)
            if k < 0:
                label = "backtick-quoted key" if quote == "`" else what
                self.fail(f"unterminated {label} starting", i,
                          f"close it with {quote}; write {quote}{quote} for a {quote} inside")
            parts.append(text[j:k])
            if text[k + 1:k + 2] == quote:
                parts.append(quote)
                j = k + 2
                continue
            return "".join(parts), k + 1

    def _path(self, i: int) -> _Token:
        text, n = self.text, len(self.text)
        segment, j = self._segment(i)
        segments = [segment]
        while j < n and text[j] == ".":
            if j + 1 >= n or not (text[j + 1] in "`\"" or _is_ident_char(text[j + 1])):
                self.fail(f"expected a key after '{text[i:j + 1]}'", j + 1,
                          "quote keys with special characters: tags.`my key`")
            segment, j = self._segment(j + 1)
            segments.append(segment)
        return _Token("name", i, j, text[i:j], tuple(segments))

    def _segment(self, i: int) -> tuple[_Segment, int]:
        """The path segment starting at ``i`` and its end."""
        text, n = self.text, len(self.text)
        if text[i] in "`\"":
            value, end = self._quoted(i, text[i], "double-quoted key")
            if not value:
                self.fail("empty key", i, "a quoted key needs at least one character")
            return _Segment(value, True, i), end
        j = i + 1
        while j < n and _is_ident_char(text[j]):
            j += 1
        return _Segment(text[i:j], False, i), j


# -- parser -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Grammar:
    """What a filter's paths may name: the resolver of a field table, its
    did-you-mean suggestions, the list of fields for hints, and an example."""

    resolve: Callable[[tuple[_Segment, ...], int], Field | None]
    suggest: Callable[[tuple[_Segment, ...]], list[str]]
    fields_hint: str
    example: str
    key_example: str


def parse_filter(text: str) -> Expr | None:
    """Parse a search filter into an AST; ``None`` for an empty or blank filter.

    Args:
        text: the filter, e.g. ``"trace.status = 'ERROR' AND span.type = 'LLM'"``.
            Every MLflow ``search_traces`` filter string is accepted.

    Returns:
        The :data:`~assay.store.filter_ast.Expr`, or ``None``.

    Raises:
        InvalidFilter: the filter is malformed, names an unknown field, uses
            an operator or literal the field does not take, or exceeds a limit.
            The error carries the position and what was expected there.

    Example:
        >>> parse_filter("tags.env = 'prod' AND trace.execution_time_ms > 1000")
        And(items=(Comparison(...), Comparison(...)))
    """
    return _parse(text, _TRACES)


def parse_run_filter(text: str) -> Expr | None:
    """Parse a run-search filter (MLflow's ``search_runs`` syntax) into an AST.

    Same grammar, literals and limits as :func:`parse_filter`, over the run
    fields: ``metrics.<key>``, ``params.<key>``, ``tags.<key>`` and the run
    attributes ``status``, ``run_name``, ``run_id``, ``start_time``,
    ``end_time``, ``experiment`` (bare or after ``attributes.``).

    Args:
        text: the filter, e.g. ``"metrics.`correctness/mean` >= 0.8 AND
            params.model = 'gpt-4o'"``.

    Returns:
        The :data:`~assay.store.filter_ast.Expr`, or ``None`` for an empty filter.

    Raises:
        InvalidFilter: the filter is malformed or names an unknown field; the
            error carries the position and what was expected there.

    Example:
        >>> parse_run_filter("attributes.status = 'FINISHED' AND metrics.loss < 0.5")
        And(items=(Comparison(...), Comparison(...)))
    """
    return _parse(text, _RUNS)


def _parse(text: str, grammar: _Grammar) -> Expr | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidFilter(f"a filter must be a string, not {type(text).__name__}")
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(f"the filter is {len(text)} characters long; the limit is "
                            f"{MAX_FILTER_LENGTH}", filter_string=text[:MAX_FILTER_LENGTH],
                            position=MAX_FILTER_LENGTH,
                            hint="split the search, or use IN (...) instead of many ORs")
    if not text.strip():
        return None
    return _Parser(text, _Tokenizer(text, grammar.key_example).tokens(), grammar).parse()


def _describe(tok: _Token, text: str) -> str:
    if tok.kind == "eof":
        return "the end of the filter"
    source = text[tok.position:tok.end]
    return source if tok.kind in ("string", "dqstring") else f"'{source}'"


def _found(tok: _Token, text: str) -> str:
    """``, found 'x'`` for a message, or nothing at the end of the filter."""
    return "" if tok.kind == "eof" else f", found {_describe(tok, text)}"


class _Parser:
    def __init__(self, text: str, tokens: list[_Token], grammar: _Grammar) -> None:
        self.grammar = grammar
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    # helpers

    def fail(self, message: str, position: int, hint: str | None = None) -> NoReturn:
        raise InvalidFilter(message, filter_string=self.text, position=position, hint=hint)

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        tok = self.tokens[self.index]
        if tok.kind != "eof":
            self.index += 1
        return tok

    def source(self, tok: _Token) -> str:
        return self.text[tok.position:tok.end]

    def enter(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"the filter nests deeper than {MAX_DEPTH} levels", tok.position,
                      "flatten the parentheses and NOTs")

    # grammar

    def parse(self) -> Expr:
        expr = self.parse_or()
        tok = self.peek()
        if tok.kind == ")":
            self.fail("unmatched ')'", tok.position)
        if tok.kind != "eof":
            self.fail("expected AND, OR or the end of the filter"
                      f"{_found(tok, self.text)}", tok.position,
                      "join comparisons with AND or OR")
        return expr

    def parse_or(self) -> Expr:
        items = [self.parse_and()]
        while self.peek().keyword == "OR":
            self.advance()
            items.append(self.parse_and())
        return or_(*items)

    def parse_and(self) -> Expr:
        items = [self.parse_factor()]
        while self.peek().keyword == "AND":
            self.advance()
            items.append(self.parse_factor())
        return and_(*items)

    def parse_factor(self) -> Expr:
        tok = self.peek()
        if tok.keyword == "NOT":
            self.enter(tok)
            self.advance()
            item = self.parse_factor()
            self.depth -= 1
            return Not(item, position=tok.position)
        if tok.kind == "(":
            self.enter(tok)
            self.advance()
            expr = self.parse_or()
            close = self.peek()
            if close.kind != ")":
                self.fail(f"expected ')'{_found(close, self.text)}", close.position,
                          f"the '(' at position {tok.position} is not closed")
            self.advance()
            self.depth -= 1
            return expr
        return self.parse_comparison()

    def parse_comparison(self) -> Comparison:
        tok = self.peek()
        if tok.kind == "name" and tok.keyword is None:
            field = self.resolve(tok)
        elif tok.kind == "dqstring":
            field = self.resolve(dataclasses.replace(
                tok, segments=(_Segment(tok.value, True, tok.position),)))
        else:
            before = self.tokens[self.index - 1] if self.index else None
            after = f" after {_describe(before, self.text)}" if before else ""
            hint = self.grammar.fields_hint
            if tok.kind in ("string", "number") or tok.keyword in ("TRUE", "FALSE", "NULL"):
                hint = f"a comparison starts with the field: {self.grammar.example}"
            self.fail(f"expected a field, '(' or NOT{after}{_found(tok, self.text)}",
                      tok.position, hint)
        self.advance()
        op_tok = self.peek()
        op = self.parse_operator(tok)
        spec = field.spec
        if op not in spec.operators:
            self.fail(f"{field.path} does not take {op}", op_tok.position,
                      f"{field.path} takes {_ops_text(spec)}")
        items = self.parse_value(op)
        checked = [self.check_scalar(field, spec, op, v, r, p) for v, r, p in items or ()]
        value: Value
        raw: str | tuple[str, ...] | None
        if items is None:
            value, raw = None, None
        elif op in ("IN", "NOT IN"):
            value, raw = tuple(checked), tuple(r for _, r, _ in items)
        else:
            value, raw = checked[0], items[0][1]
        return Comparison(field, op, value, position=tok.position, raw=raw)

    def parse_operator(self, field_tok: _Token) -> str:
        tok = self.peek()
        if tok.kind == "op":
            self.advance()
            return tok.value
        kw = tok.keyword
        if kw in ("LIKE", "ILIKE", "RLIKE", "IN"):
            self.advance()
            return kw
        if kw == "NOT":
            self.advance()
            nxt = self.peek()
            if nxt.keyword in ("LIKE", "ILIKE", "IN"):
                self.advance()
                return f"NOT {nxt.keyword}"
            hint = ("write NOT (field RLIKE '...')" if nxt.keyword == "RLIKE"
                    else "NOT goes before a comparison, or in NOT IN, NOT LIKE, NOT ILIKE")
            self.fail(f"expected IN, LIKE or ILIKE after NOT{_found(nxt, self.text)}",
                      nxt.position, hint)
        if kw == "IS":
            self.advance()
            nxt = self.peek()
            if nxt.keyword == "NULL":
                self.advance()
                return "IS NULL"
            if nxt.keyword == "NOT":
                self.advance()
                last = self.peek()
                if last.keyword == "NULL":
                    self.advance()
                    return "IS NOT NULL"
                self.fail(f"expected NULL after IS NOT{_found(last, self.text)}",
                          last.position)
            self.fail(f"expected NULL or NOT NULL after IS{_found(nxt, self.text)}",
                      nxt.position, "IS only tests for NULL; compare values with = or !=")
        self.fail(f"expected an operator after '{self.source(field_tok)}'"
                  f"{_found(tok, self.text)}", tok.position, _OPERATORS_HINT)

    def parse_value(self, op: str) -> list[tuple[Scalar, str, int]] | None:
        """The literal(s) after ``op`` as (value, source text, position); ``None`` for IS NULL."""
        if op in ("IS NULL", "IS NOT NULL"):
            return None
        if op not in ("IN", "NOT IN"):
            return [self.parse_scalar(f"'{op}'")]
        tok = self.peek()
        if tok.kind != "(":
            self.fail(f"expected '(' after {op}{_found(tok, self.text)}",
                      tok.position, f"{op} takes a list: {op} ('a', 'b')")
        self.advance()
        items: list[tuple[Scalar, str, int]] = []
        after = "'('"
        while True:
            if len(items) >= MAX_IN_ITEMS:
                self.fail(f"an IN list holds at most {MAX_IN_ITEMS} values", self.peek().position)
            items.append(self.parse_scalar(after))
            sep = self.peek()
            if sep.kind == ")":
                self.advance()
                return items
            if sep.kind != ",":
                self.fail(f"expected ',' or ')' in the {op} list"
                          f"{_found(sep, self.text)}", sep.position)
            self.advance()
            after = "','"

    def parse_scalar(self, after: str) -> tuple[Scalar, str, int]:
        tok = self.peek()
        raw = self.source(tok)
        if tok.kind in ("string", "dqstring"):
            self.advance()
            return tok.value, raw, tok.position
        if tok.kind == "number":
            self.advance()
            return self.number(tok.value, tok.position), raw, tok.position
        if tok.keyword in ("TRUE", "FALSE"):
            self.advance()
            return tok.keyword == "TRUE", raw, tok.position
        if tok.keyword == "NULL":
            self.fail(f"expected a value after {after}{_found(tok, self.text)}", tok.position,
                      "test for a missing value with IS NULL or IS NOT NULL")
        hint = None
        if tok.kind == "name" and not any(s.quoted for s in tok.segments):
            hint = f"quote text values: '{raw}'"
        elif tok.kind == "name":
            hint = "backticks quote keys; quote values with ' or \""
        self.fail(f"expected a value after {after}{_found(tok, self.text)}",
                  tok.position, hint)

    def number(self, text: str, position: int) -> int | float:
        """The value of number text that :func:`_scan_number` accepted."""
        if any(ch in text for ch in ".eE"):
            value = float(text)
            if value in (float("inf"), float("-inf")):
                self.fail(f"number {text} is out of range", position)
            return value
        digits = text.lstrip("+-").lstrip("0")
        if len(digits) > 19 or not _INT64_MIN <= int(text) <= _INT64_MAX:
            self.fail(f"integer {text} is out of the 64-bit range", position,
                      "write it as a float (1e20) if an approximate value will do")
        return int(text)

    # fields

    def resolve(self, tok: _Token) -> Field:
        field = self.grammar.resolve(tok.segments, tok.position)
        if field is None:
            self.unknown_field(tok)
        return field

    def unknown_field(self, tok: _Token) -> NoReturn:
        name = self.source(tok)
        suggestions = list(dict.fromkeys(self.grammar.suggest(tok.segments)))
        message = f"unknown field '{name}'"
        if suggestions:
            quoted = [f"'{s}'" for s in suggestions]
            either = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
            message += f" — did you mean {either}?"
        self.fail(message, tok.position, self.grammar.fields_hint)

    # values

    def check_scalar(self, field: Field, spec: FieldSpec, op: str, value: Scalar, raw: str,
                     position: int) -> Scalar:
        vtype, path = spec.value_type, field.path
        kind = _literal_kind(value)
        if vtype in ("number", "timestamp"):
            if isinstance(value, str):
                if _is_number_text(value):
                    return self.number(value, position)
                if vtype == "timestamp" and parse_iso_datetime(value) is not None:
                    return value
                what = "a number or an ISO date" if vtype == "timestamp" else "a number"
                example = (" (1767225600000, '2026-01-01' or '2026-01-01T12:00:00Z')"
                           if vtype == "timestamp" else "")
                self.fail(f"{path} takes {what}, not the string {raw}", position,
                          f"write {what}{example}")
            if isinstance(value, bool):
                self.fail(f"{path} takes a number, not the boolean {raw}", position)
            return value
        if vtype == "typed":
            if op in ORDERING and isinstance(value, str) and _is_number_text(value):
                return self.number(value, position)
            if op in ORDERING and kind != "number":
                self.fail(f"{op} compares numbers; {path} was given the {kind} {raw}", position)
            if op in PATTERN and kind != "string":
                self.fail(f"{op} matches strings; {path} was given the {kind} {raw}", position,
                          f"quote the pattern: '{raw}'")
            return value
        if not isinstance(value, str):
            self.fail(f"{path} takes a quoted string, not the {kind} {raw}", position,
                      f"quote it: '{raw}'")
        if vtype == "prompt":
            name, _, version = value.partition("/")
            if not name or not version or "/" in version:
                self.fail(f"{path} takes 'name/version', not {raw}", position,
                          "e.g. prompt = 'qa-system-prompt/4'")
        return value


def _is_number_text(text: str) -> bool:
    return bool(text) and _scan_number(text, 0) == len(text)


def _literal_kind(value: Scalar) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def _ops_text(spec: FieldSpec) -> str:
    order = ["=", "!=", "<", "<=", ">", ">=", "LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE", "RLIKE",
             "IN", "NOT IN", "IS NULL", "IS NOT NULL"]
    return ", ".join(op for op in order if op in spec.operators)


def _by_name(table: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
    return {n: spec for spec in table.values() for n in (spec.name, *spec.aliases)}


_TRACE_NAMES = _by_name(TRACE_FIELDS)
_SPAN_NAMES = _by_name(SPAN_FIELDS)


def _resolve(segments: tuple[_Segment, ...], position: int = 0) -> Field | None:
    """The field a dotted path names (prefixes and names case-insensitive), or ``None``."""
    head, rest = segments[0].text.lower(), segments[1:]
    if not rest:
        spec = _TRACE_NAMES.get(head)
        return Field("trace", spec.name, position=position) if spec else None
    group = PREFIXES.get(head)
    sub = rest[0].text.lower()
    if group == "trace" and len(rest) == 1 and sub in _TRACE_NAMES:
        return Field("trace", _TRACE_NAMES[sub].name, position=position)
    if group in KEYED_FIELDS:
        kind = cast(FieldKind, group)
        return Field(kind, kind, _join(rest), position=position)
    if group == "span" and sub == "attributes" and len(rest) > 1:
        return Field("span_attribute", "span_attribute", _join(rest[1:]), position=position)
    if group == "span" and len(rest) == 1 and sub in _SPAN_NAMES:
        return Field("span", _SPAN_NAMES[sub].name, position=position)
    return None


def _join(segments: tuple[_Segment, ...]) -> str:
    return ".".join(s.text for s in segments)


def _suggest(segments: tuple[_Segment, ...]) -> list[str]:
    """Did-you-mean candidates for an unknown field path."""
    close = difflib.get_close_matches
    head = segments[0].text.lower()
    rest = _join(segments[1:])
    keyed = {p: _KEYED_PREFIX_TEXT[g] for p, g in PREFIXES.items() if g in _KEYED_PREFIX_TEXT}
    if len(segments) == 1:
        if head in keyed:
            return [f"{keyed[head]}.<key>" if head in ("tag", "tags", "metadata",
                                                       "request_metadata")
                    else f"{keyed[head]}.<name>"]
        if head in ("span", "spans"):
            return ["span.name", "span.type", "span.attributes.<key>"]
        if head in ("assessment", "assessments"):
            return ["feedback.<name>", "expectation.<name>"]
        if "." in head:
            try:
                parsed = _Tokenizer(segments[0].text).tokens()
            except InvalidFilter:
                parsed = []
            if len(parsed) == 2 and parsed[0].kind == "name" and len(parsed[0].segments) > 1:
                found = _resolve(parsed[0].segments)
                if found:
                    return [render_field(found)]
        return [f"trace.{_TRACE_NAMES[m].name}" for m in close(head, _TRACE_NAMES, n=3, cutoff=0.6)]
    group = PREFIXES.get(head)
    if group == "trace":
        sub = segments[1].text.lower()
        if sub in keyed and len(segments) > 2:
            return [f"{keyed[sub]}.{_join(segments[2:])}"]
        if sub == "span" and len(segments) > 2:
            return [f"span.{_join(segments[2:])}"]
        return [f"trace.{_TRACE_NAMES[m].name}" for m in close(sub, _TRACE_NAMES, n=3, cutoff=0.6)]
    if group == "span":
        sub = segments[1].text.lower()
        if sub in ("attributes", "attribute") and len(segments) == 2:
            return ["span.attributes.<key>"]
        if sub in ("attribute", "attrs", "attr") and len(segments) > 2:
            return [f"span.attributes.{_join(segments[2:])}"]
        matches = close(sub, [*_SPAN_NAMES, "attributes"], n=3, cutoff=0.6)
        return [f"span.attributes.{_join(segments[2:]) or '<key>'}" if m == "attributes"
                else f"span.{_SPAN_NAMES[m].name}" for m in matches]
    if head in ("assessment", "assessments"):
        return [f"feedback.{rest}", f"expectation.{rest}"]
    prefixes = close(head, [*PREFIXES, "span_attributes"], n=1, cutoff=0.6)
    out = []
    for p in prefixes:
        if p == "span_attributes":
            out.append(f"span.attributes.{rest}")
        elif PREFIXES[p] == "trace":
            out.append(f"trace.{rest}")
        elif PREFIXES[p] == "span":
            out.append(f"span.{rest}")
        else:
            out.append(f"{keyed[p]}.{rest}")
    return list(dict.fromkeys(out))


# -- run filters ----------------------------------------------------------------------------------

_RUN_NAMES = _by_name(RUN_FIELDS)


def _resolve_run(segments: tuple[_Segment, ...], position: int = 0) -> Field | None:
    """The run field a dotted path names (prefixes and names case-insensitive), or ``None``."""
    head, rest = segments[0].text.lower(), segments[1:]
    if not rest:
        spec = _RUN_NAMES.get(head)
        return Field("run", spec.name, position=position) if spec else None
    group = RUN_PREFIXES.get(head)
    if group == "run" and len(rest) == 1 and rest[0].text.lower() in _RUN_NAMES:
        return Field("run", _RUN_NAMES[rest[0].text.lower()].name, position=position)
    if group in RUN_KEYED_FIELDS:
        return Field(cast(FieldKind, group), group, _join(rest), position=position)
    return None


_RUN_KEYED_TEXT = {"metric": "metrics", "param": "params", "run_tag": "tags"}


def _suggest_run(segments: tuple[_Segment, ...]) -> list[str]:
    """Did-you-mean candidates for an unknown run field path."""
    close = difflib.get_close_matches
    head = segments[0].text.lower()
    if len(segments) == 1:
        group = RUN_PREFIXES.get(head)
        if group in _RUN_KEYED_TEXT:
            return [f"{_RUN_KEYED_TEXT[group]}.<key>"]
        return [f"attributes.{_RUN_NAMES[m].name}"
                for m in close(head, _RUN_NAMES, n=3, cutoff=0.6)]
    rest = _join(segments[1:])
    if RUN_PREFIXES.get(head) == "run":
        return [f"attributes.{_RUN_NAMES[m].name}"
                for m in close(segments[1].text.lower(), _RUN_NAMES, n=3, cutoff=0.6)]
    prefixes = close(head, list(RUN_PREFIXES), n=1, cutoff=0.6)
    return [f"{_RUN_KEYED_TEXT[RUN_PREFIXES[p]]}.{rest}" if RUN_PREFIXES[p] in _RUN_KEYED_TEXT
            else f"attributes.{rest}" for p in prefixes]


_TRACES = _Grammar(_resolve, _suggest, _FIELDS_HINT, "trace.status = 'OK'", "tags.`my/key`")
_RUNS = _Grammar(_resolve_run, _suggest_run, _RUN_FIELDS_HINT, "metrics.accuracy > 0.8",
                 "metrics.`accuracy/mean`")
