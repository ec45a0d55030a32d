"""``order_by`` for trace searches, and the cursor that pages through any ordering.

An ordering is a list of ``"<field> [ASC|DESC]"`` items over trace fields
(``timestamp_ms``, ``execution_time_ms``, ``end_time_ms``, ``name``,
``status``, ``request_id``, ...), ``tags.<key>`` and ``metadata.<key>``; the
trace id is always appended as the tiebreak. The page token records the last
row's sort values, so pages continue after it however many traces arrive in
between (a cursor, not an offset).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, literal, or_, select
from sqlalchemy.sql.elements import BindParameter

from assay.errors import InvalidFilter
from assay.store import schema as s
from assay.store.filter_ast import Comparison, Field
from assay.store.filter_parser import parse_filter

__all__ = ["SortKey", "decode_token", "encode_token", "keyset_condition", "order_field",
           "parse_order_by"]

_T = s.traces.c
_NUMERIC = {"timestamp_ms": _T.timestamp_ms, "execution_time_ms": _T.execution_time_ms,
            "end_time_ms": _T.end_time_ms}
_NOT_NULL = {"timestamp_ms": _T.timestamp_ms, "request_id": _T.trace_id, "status": _T.state}
_TEXT = {"name": _T.name, "status": _T.state, "request_id": _T.trace_id,
         "client_request_id": _T.client_request_id, "run_id": _T.run_id}


@dataclass(frozen=True)
class SortKey:
    label: str
    expr: Any  # a SQL expression, never NULL
    descending: bool


def order_field(text: str, item: str, parse: Callable[[str], Any], what: str = "") -> Field:
    """The field an ``order_by`` item names (``text``, without its direction),
    read by a filter parser as the left side of ``<field> IS NULL``.

    Raises:
        InvalidFilter: ``text`` names no field ``parse`` knows; the message
            begins "cannot order ``what`` by".
    """
    try:
        parsed = parse(f"{text} IS NULL")
    except InvalidFilter as exc:
        raise InvalidFilter(f"cannot order {what}by {text!r}: {exc.message}",
                            filter_string=item, position=0) from None
    assert isinstance(parsed, Comparison)
    return parsed.field


def _key_expr(text: str, position_hint: str) -> tuple[str, Any]:
    field = order_field(text, position_hint, parse_filter)
    if field.kind == "trace" and field.name in _NOT_NULL:
        # A plain column, so that an index can deliver the order and the search
        # stops at the page size.
        return field.name, _NOT_NULL[field.name]
    if field.kind == "trace" and field.name in _NUMERIC:
        return field.name, func.coalesce(_NUMERIC[field.name], -1)
    if field.kind == "trace" and field.name in _TEXT:
        return field.name, func.coalesce(_TEXT[field.name], "")
    if field.kind in ("tag", "metadata"):
        table = (s.trace_tags if field.kind == "tag" else s.trace_metadata).alias()
        value = (select(table.c.value)
                 .where(table.c.trace_id == _T.trace_id, table.c.key == field.key)
                 .scalar_subquery())
        prefix = "tags" if field.kind == "tag" else "metadata"
        return f"{prefix}.{field.key}", func.coalesce(value, "")
    raise InvalidFilter(f"cannot order by {text!r}: order by a trace field (timestamp_ms, "
                        "execution_time_ms, end_time_ms, name, status, request_id), "
                        "tags.<key> or metadata.<key>", filter_string=position_hint, position=0)


def order_items(order_by: Any, default: str) -> list[tuple[str, bool, str]]:
    """``(field, descending, item as given)`` for each ``order_by`` item (``"field"``,
    ``"field ASC"`` or ``"field DESC"``); ``[default]`` when there is none.

    Raises:
        InvalidFilter: ``order_by`` is a bare string, or an item is not a field.
    """
    if order_by is None or len(order_by) == 0:
        items: list[Any] = [default]
    elif isinstance(order_by, str):
        raise InvalidFilter(f"order_by must be a list of strings, e.g. [{default!r}]",
                            filter_string=order_by, position=0)
    else:
        items = list(order_by)
    parsed: list[tuple[str, bool, str]] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise InvalidFilter(f"order_by item {item!r} is not a field name",
                                filter_string=str(item), position=0)
        text = item.strip()
        descending = False
        head, _, last = text.rpartition(" ")
        if head and last.upper() in ("ASC", "DESC"):
            text, descending = head.strip(), last.upper() == "DESC"
        parsed.append((text, descending, item))
    return parsed


def parse_order_by(order_by: list[str] | None) -> list[SortKey]:
    """Sort keys for ``order_by`` (default: newest first), the trace id last."""
    keys: list[SortKey] = []
    for text, descending, item in order_items(order_by, "timestamp_ms DESC"):
        label, expr = _key_expr(text, item)
        keys.append(SortKey(label, expr, descending))
    keys.append(SortKey("trace_id", _T.trace_id, keys[0].descending))
    return keys


def order_clauses(keys: list[SortKey]) -> list[Any]:
    return [k.expr.desc() if k.descending else k.expr.asc() for k in keys]


def keyset_condition(keys: list[SortKey], values: list[Any]) -> Any:
    """Rows strictly after ``values`` in the ordering ``keys`` (values, or bound
    parameters supplied when the statement runs)."""
    bound = [v if isinstance(v, BindParameter) else literal(v) for v in values]
    ors = []
    for i, key in enumerate(keys):
        equal = [keys[j].expr == bound[j] for j in range(i)]
        after = key.expr < bound[i] if key.descending else key.expr > bound[i]
        ors.append(and_(*equal, after))
    if len(keys) == 1:
        return ors[0]
    # Implied by the OR, and what lets an index on the first key start its range
    # at the token: without it SQLite and PostgreSQL read the index from its
    # first entry, and the 500th page of a walk reads the 49,900 entries before.
    first = keys[0]
    start = first.expr <= bound[0] if first.descending else first.expr >= bound[0]
    return and_(start, or_(*ors))


def _signature(keys: list[SortKey]) -> str:
    return ",".join(f"{k.label}:{'d' if k.descending else 'a'}" for k in keys)


def encode_token(keys: list[SortKey], values: list[Any]) -> str:
    raw = json.dumps({"o": _signature(keys), "v": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, keys: list[SortKey], where: str = "search_traces") -> list[Any]:
    """The sort values a page token carries. Raises ValueError for a foreign token."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        values = data["v"]
        if data["o"] != _signature(keys) or not isinstance(values, list) \
                or len(values) != len(keys):
            raise ValueError
        return values
    except Exception:
        raise ValueError(f"page_token {token!r} is not a token returned by {where} "
                         "with this order_by") from None
