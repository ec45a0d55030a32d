"""The trace store's tables, in one place, with the schema version they make up.

Fields that filters use are real columns; each index earns its place by a
query that needs it, since every index costs every write. Version history:

    1  traces, spans, trace_tags, trace_metadata
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

__all__ = ["SCHEMA_VERSION", "metadata", "schema_version", "spans", "trace_metadata",
           "trace_tags", "traces"]

SCHEMA_VERSION = 1

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
})

schema_version = Table(
    "assay_schema", metadata,
    Column("version", Integer, primary_key=True),
)

traces = Table(
    "traces", metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("experiment", String(256), nullable=False),
    Column("name", Text),
    Column("state", String(16), nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("execution_time_ms", Float),
    Column("request_preview", Text),
    Column("response_preview", Text),
    Column("root_span_id", String(16)),
    Column("root_rank", SmallInteger, nullable=False),
    Index(None, "experiment", "timestamp_ms", "trace_id"),
    Index(None, "timestamp_ms", "trace_id"),
)

spans = Table(
    "spans", metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("parent_id", String(16)),
    Column("name", Text, nullable=False),
    Column("span_type", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_message", Text),
    Column("start_time_ns", BigInteger, nullable=False),
    Column("end_time_ns", BigInteger, nullable=False),
    Column("inputs", Text),
    Column("outputs", Text),
    Column("attributes", Text, nullable=False),
    Column("events", Text, nullable=False),
)

trace_tags = Table(
    "trace_tags", metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Index(None, "key", "value"),
)

trace_metadata = Table(
    "trace_metadata", metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Index(None, "key", "value"),
)
