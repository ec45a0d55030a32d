"""Schema upgrades, one step per version, run by ``assay db upgrade``.

Each step takes an open write transaction on a store at version ``n`` and
leaves it at ``n + 1``; a failure rolls the whole upgrade back.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import Connection, Table, inspect, select

from assay.store import copies
from assay.store import schema as s
from assay.store.values import typed_value

__all__ = ["upgrade_schema"]


def _v1_to_v2(conn: Connection) -> None:
    existing = {c["name"] for c in inspect(conn).get_columns("traces")}
    for name, sql_type in (("end_time_ms", "BIGINT"), ("client_request_id", "VARCHAR(256)"),
                           ("run_id", "VARCHAR(64)")):
        if name not in existing:
            conn.exec_driver_sql(f"ALTER TABLE traces ADD COLUMN {name} {sql_type}")
    if "duration_ns" not in {c["name"] for c in inspect(conn).get_columns("spans")}:
        conn.exec_driver_sql("ALTER TABLE spans ADD COLUMN duration_ns BIGINT")
    conn.exec_driver_sql("UPDATE spans SET duration_ns = end_time_ns - start_time_ns")
    conn.exec_driver_sql(
        "UPDATE traces SET end_time_ms = timestamp_ms + CAST(execution_time_ms AS BIGINT) "
        "WHERE execution_time_ms IS NOT NULL")
    s.metadata.create_all(conn, checkfirst=True)  # the new tables
    for table in (s.traces, s.spans):
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    rows: list[dict[str, object]] = []
    for trace_id, span_id, attributes in conn.execute(
            select(s.spans.c.trace_id, s.spans.c.span_id, s.spans.c.attributes)):
        try:
            values = json.loads(attributes or "{}")
        except ValueError:
            continue
        if isinstance(values, dict):
            rows.extend({"trace_id": trace_id, "span_id": span_id, "key": key,
                         **dict(zip(("value_kind", "num_value", "str_value"),
                                    typed_value(value), strict=True))}
                        for key, value in values.items())
    if rows:
        conn.execute(s.span_attributes.insert(), rows)


def _v2_to_v3(conn: Connection) -> None:
    # The full-text rows were keyed by a hash of the span id; they are now keyed
    # by the span's rowid (SQLite). The store rebuilds the table after the steps.
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {s.FTS_TABLE}")
    for old in ("ix_traces_experiment_state_timestamp_ms",
                "ix_traces_experiment_name_timestamp_ms"):
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {old}")
    for index in s.traces.indexes:
        index.create(conn, checkfirst=True)
    _rekey_span_attributes(conn)


def _rekey_span_attributes(conn: Connection) -> None:
    """span_attributes keyed (trace_id, key, span_id)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE span_attributes DROP CONSTRAINT pk_span_attributes, "
                             "ADD CONSTRAINT pk_span_attributes "
                             "PRIMARY KEY (trace_id, key, span_id)")
        return
    _copy_table(conn, s.span_attributes, "trace_id, span_id, key, value_kind, num_value, "
                "str_value")


def _v3_to_v4(conn: Connection) -> None:
    # Runs and datasets: new tables only.
    s.metadata.create_all(conn, checkfirst=True)


def _v4_to_v5(conn: Connection) -> None:
    existing = {c["name"] for c in inspect(conn).get_columns("traces")}
    for name in ("tags_json", "metadata_json"):
        if name not in existing:
            conn.exec_driver_sql(f"ALTER TABLE traces ADD COLUMN {name} TEXT NOT NULL "
                                 "DEFAULT '{}'")
    if conn.dialect.name == "sqlite":
        for table in (s.trace_tags, s.trace_metadata):
            _copy_table(conn, table, "trace_id, key, value")
    copies.refresh_pairs(conn, None)


def _v5_to_v6(conn: Connection) -> None:
    # The numeric index of span attributes becomes partial: same name, fewer rows.
    for index in s.span_attributes.indexes:
        if "num_value" in index.columns:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
            index.create(conn)


def _v6_to_v7(conn: Connection) -> None:
    # Assessments copy their trace's experiment and timestamp, and are indexed by
    # them after the value.
    existing = {c["name"] for c in inspect(conn).get_columns("assessments")}
    for name, sql_type in (("experiment", "VARCHAR(256)"), ("trace_timestamp_ms", "BIGINT")):
        if name not in existing:
            conn.exec_driver_sql(f"ALTER TABLE assessments ADD COLUMN {name} {sql_type}")
    copies.refresh_assessed_traces(conn, None)
    for index in s.assessments.indexes:
        index.create(conn, checkfirst=True)


def _v7_to_v8(conn: Connection) -> None:
    # The spans whose text is longer than the full-text index holds, indexed; the
    # schema says which older assays may still write the store.
    for index in s.spans.indexes:
        index.create(conn, checkfirst=True)
    existing = {c["name"] for c in inspect(conn).get_columns(s.schema_version.name)}
    if "writable_by" not in existing:
        conn.exec_driver_sql(f"ALTER TABLE {s.schema_version.name} ADD COLUMN writable_by INTEGER")


def _v8_to_v9(conn: Connection) -> None:
    # PostgreSQL: the text columns sort by code point (collation "C"), as they do
    # on SQLite. Changing a column's collation rewrites no rows; its indexes are
    # rebuilt.
    if conn.dialect.name != "postgresql":
        return
    from sqlalchemy import String

    tables = [*s.metadata.tables.values(), s.fts_table()]
    present = set(inspect(conn).get_table_names())
    for table in tables:
        if table.name not in present:
            continue
        changes = []
        for column in table.columns:
            if table.name == s.FTS_TABLE:
                if column.name != "trace_id":  # its content keeps the database's
                    continue
                declared = "VARCHAR(32)"
            elif isinstance(column.type, String):
                declared = type(column.type)(column.type.length).compile(dialect=conn.dialect)
            else:
                continue
            changes.append(f'ALTER COLUMN "{column.name}" TYPE {declared} COLLATE "C"')
        if changes:
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" {", ".join(changes)}')


def _copy_table(conn: Connection, table: Table, columns: str) -> None:
    """Rebuild a SQLite table as ``table`` now declares it (SQLite cannot change a
    table's key or rowid in place), keeping ``columns`` of its rows."""
    old = f"{table.name}_old"
    conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {old}")
    for index in table.indexes:  # index names are global: the old table's go first
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
    table.create(conn)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {old}")
    conn.exec_driver_sql(f"DROP TABLE {old}")


_STEPS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4,
                                                   4: _v4_to_v5, 5: _v5_to_v6, 6: _v6_to_v7,
                                                   7: _v7_to_v8, 8: _v8_to_v9}


def upgrade_schema(conn: Connection, version: int) -> None:
    """Run every step from ``version`` up to the current schema version."""
    while version < s.SCHEMA_VERSION:
        _STEPS[version](conn)
        version += 1
