"""Columns that copy what another table holds, so that one read or one index
answers a search, and the statements that keep them equal to it.

- ``traces.tags_json``/``metadata_json``: the trace's pairs from ``trace_tags`` and
  ``trace_metadata``, so that a page reads them with the trace row.
- ``assessments.experiment``/``trace_timestamp_ms``: the experiment and timestamp
  of the assessed trace, so that the (kind, name, value, experiment, timestamp)
  indexes give the newest traces with a feedback value in page order, without
  reading the traces that lack it (NULL while the trace is not stored).

Every write of the source refreshes the copy in the same transaction. On
PostgreSQL, assessments logged for traces not stored yet lock the traces
table against writers until they commit (:func:`assessed_traces`), so that
spans arriving at the same moment cannot leave a copy NULL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

__all__ = ["assessed_traces", "refresh_assessed_traces", "refresh_pairs"]


def _matching(conn: Connection, trace_ids: Sequence[str] | None) -> tuple[str, tuple[Any, ...]]:
    """``WHERE`` text (and its parameters) for rows of these traces; every row for
    ``None``."""
    if trace_ids is None:
        return "", ()
    if conn.dialect.name == "postgresql":
        return " WHERE trace_id = ANY(%s)", (list(trace_ids),)
    # The ids as one JSON array: any number of them, in one parameter.
    return " WHERE trace_id IN (SELECT value FROM json_each(?))", (json.dumps(list(trace_ids)),)


def refresh_pairs(conn: Connection, trace_ids: Sequence[str] | None) -> None:
    """Set ``traces.tags_json``/``metadata_json`` from ``trace_tags``/``trace_metadata``
    for these traces (``None``: every trace that has a pair)."""
    pg = conn.dialect.name == "postgresql"
    group = "json_object_agg(key, value)::text" if pg else "json_group_object(key, value)"
    sets = ", ".join(
        f"{column} = coalesce((SELECT {group} FROM {table} p "
        f"WHERE p.trace_id = traces.trace_id), '{{}}')"
        for column, table in (("tags_json", "trace_tags"), ("metadata_json", "trace_metadata")))
    if trace_ids is None:
        conn.exec_driver_sql(f"UPDATE traces SET {sets} WHERE trace_id IN "
                             "(SELECT trace_id FROM trace_tags UNION "
                             "SELECT trace_id FROM trace_metadata)")
        return
    where, params = _matching(conn, trace_ids)
    conn.exec_driver_sql(f"UPDATE traces SET {sets}{where}", params)


_ASSESSED = ", ".join(
    f"{column} = (SELECT t.{source} FROM traces t WHERE t.trace_id = assessments.trace_id)"
    for column, source in (("experiment", "experiment"), ("trace_timestamp_ms", "timestamp_ms")))


def refresh_assessed_traces(conn: Connection, trace_ids: Sequence[str] | None) -> None:
    """Set ``assessments.experiment``/``trace_timestamp_ms`` from the rows of these
    traces (``None``: of every assessment), after those rows were written. An
    assessment of a trace with no row gets NULL."""
    where, params = _matching(conn, trace_ids)
    conn.exec_driver_sql(f"UPDATE assessments SET {_ASSESSED}{where}", params)


def assessed_traces(conn: Connection, trace_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
    """The experiment and timestamp of each of these traces that is stored, for
    assessments about to be written in this transaction.

    On PostgreSQL the trace rows found are locked against change until the
    transaction ends (a writer changing one waits, then refreshes the copies
    with the assessments in view); when some are not stored yet, the traces
    table is locked against every writer first and the rows read after, so
    that none can be added unseen in between. SQLite's writers take turns."""
    where, params = _matching(conn, trace_ids)
    sql = f"SELECT trace_id, experiment, timestamp_ms FROM traces{where}"
    if conn.dialect.name != "postgresql":
        return {tid: (exp, ts) for tid, exp, ts in conn.exec_driver_sql(sql, params)}
    found = {tid: (exp, ts) for tid, exp, ts in conn.exec_driver_sql(sql, params)}
    if len(found) < len(set(trace_ids)):
        # Before any row lock of this transaction, so that no writer can hold the
        # table while waiting for a row this transaction holds.
        conn.exec_driver_sql("LOCK TABLE traces IN SHARE ROW EXCLUSIVE MODE")
    # Locked in key order, as writers lock them (no deadlock between the two).
    return {tid: (exp, ts) for tid, exp, ts in conn.exec_driver_sql(
        sql + " ORDER BY trace_id FOR SHARE", params)}
