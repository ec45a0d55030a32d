"""The trace store's tables, in one place, with the schema version they make up.

Fields that filters use are real columns; each index earns its place by a
query that needs it, since every index costs every write. Version history:

    1  traces, spans, trace_tags, trace_metadata
    2  traces.end_time_ms/client_request_id/run_id, spans.duration_ns, span_attributes
       (typed key/value), assessments, trace_text (SQLite FTS5, trigram), filter
       indexes
    3  SQLite's trace_text reads the spans' text through a view, rows keyed by the
       span's rowid (was its own copy, keyed by a hash of the span id); the trace
       state and name indexes end with trace_id (the order's tiebreak);
       span_attributes keyed (trace_id, key, span_id) (was trace, span, key)
    4  runs (with run_params, run_metrics, run_tags, run_tables) and datasets (with
       dataset_records, versioned)
    5  traces.tags_json/metadata_json: a trace's tags and metadata as one JSON object
       each, beside the pairs in trace_tags/trace_metadata; on SQLite those two
       tables are WITHOUT ROWID (keyed by trace_id, key)
    6  the span attributes' numeric index holds numbers and booleans only (a
       partial index: two thirds of the rows, built in two thirds of the time)
    7  assessments.experiment/trace_timestamp_ms, copies of the assessed trace's
       (``copies``), ending two new (kind, name, value) indexes of the valid
       assessments: a page of the traces with a feedback value is one ordered
       index range, and their count one index range
    8  a partial index of the spans whose inputs or outputs are longer than the
       full-text index holds (``TEXT_CHARS``): a text search reads those in full;
       assay_schema.writable_by (``WRITABLE_BY``)
    9  PostgreSQL: every text column compares and sorts by code point (collation
       "C"), as on SQLite, whatever the database's collation (nothing changes on
       SQLite)

Typed values (span attributes, assessment values) are kept three ways: the
JSON text, ``num_value`` for numbers and booleans (1/0), and ``str_value``, the
value as text (a string as itself, a number or boolean as its JSON text), with
``value_kind`` saying which it was: ``s`` string, ``n`` number, ``b`` boolean,
``j`` anything else (null, list, object).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)

__all__ = ["FTS_TABLE", "LONG_TEXT", "SAME_TABLES_FROM", "SCHEMA_VERSION", "TEXT_CHARS",
           "WRITABLE_BY", "assessments", "dataset_records", "datasets", "ddl_metadata", "metadata",
           "run_metrics", "run_params", "run_tables", "run_tags", "runs", "schema_version",
           "span_attributes", "spans", "trace_metadata", "trace_tags", "traces"]

SCHEMA_VERSION = 9
#: The oldest schema version whose assay may still read and write a store of
#: this version: a version that only adds (an index, a nullable column) leaves
#: the assays before it working, so that the processes sharing a store can be
#: upgraded one at a time after ``assay db upgrade``. Version 8 only adds an
#: index, version 9 changes only how PostgreSQL sorts text.
WRITABLE_BY = 7
#: Per database, the oldest schema version whose tables there are this
#: version's: a store of that version or later is opened as it is, without
#: ``assay db upgrade`` (version 9 changed PostgreSQL's tables only).
SAME_TABLES_FROM = {"sqlite": 8, "postgresql": 9}

#: How much of each span's inputs and of its outputs the full-text index holds;
#: a text search reads the spans with more (``LONG_TEXT``) in full.
TEXT_CHARS = 65_536
#: The spans whose text the full-text index holds only the start of (a constant
#: condition, so that a query stating it can read the partial index over it).
LONG_TEXT = f"length(inputs) > {TEXT_CHARS} OR length(outputs) > {TEXT_CHARS}"

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
})

schema_version = Table(
    "assay_schema", metadata,
    Column("version", Integer, primary_key=True),
    # The store's WRITABLE_BY (NULL: the assays of its version only); from version 8.
    Column("writable_by", Integer),
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
    Column("end_time_ms", BigInteger),
    Column("client_request_id", String(256)),
    Column("run_id", String(64)),
    # The tags and metadata as one JSON object each, so that a page reads them with
    # the trace. The pairs in trace_tags/trace_metadata stay what filters and
    # orderings use; every write of pairs refreshes these (``copies.refresh_pairs``).
    Column("tags_json", Text, nullable=False, server_default="{}"),
    Column("metadata_json", Text, nullable=False, server_default="{}"),
    Index(None, "experiment", "timestamp_ms", "trace_id"),
    Index(None, "timestamp_ms", "trace_id"),
    Index(None, "experiment", "state", "timestamp_ms", "trace_id"),
    Index(None, "experiment", "name", "timestamp_ms", "trace_id"),
    Index(None, "experiment", "execution_time_ms"),
    Index(None, "run_id"),
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
    Column("duration_ns", BigInteger),
    Index(None, "name", "trace_id"),
    Index(None, "span_type", "trace_id"),
    Index(None, "status", "trace_id"),
    Index(None, "duration_ns", "trace_id"),
    # The few spans a text search reads in full; empty while no text is that long.
    Index("ix_spans_long_text", "trace_id",
          sqlite_where=text(LONG_TEXT), postgresql_where=text(LONG_TEXT)),
)

span_attributes = Table(
    "span_attributes", metadata,
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value_kind", String(1), nullable=False),
    Column("num_value", Float),
    Column("str_value", Text),
    # Keyed (trace, key, span): a search probing one trace for one key seeks
    # straight to it.
    PrimaryKeyConstraint("trace_id", "key", "span_id"),
    # Numbers and booleans only: every comparison this index serves is on
    # num_value, and so finds no row without one.
    Index(None, "key", "value_kind", "num_value", "trace_id",
          sqlite_where=text("num_value IS NOT NULL"),
          postgresql_where=text("num_value IS NOT NULL")),
    Index(None, "key", "str_value", "trace_id"),
    sqlite_with_rowid=False,
)

assessments = Table(
    "assessments", metadata,
    Column("assessment_id", String(32), primary_key=True),
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16)),
    Column("name", String(250), nullable=False),
    Column("kind", String(16), nullable=False),  # feedback | expectation
    Column("value_json", Text),
    Column("value_kind", String(1), nullable=False),
    Column("num_value", Float),
    Column("str_value", Text),
    Column("rationale", Text),
    Column("source_type", String(32), nullable=False),
    Column("source_id", String(250)),
    Column("metadata_json", Text, nullable=False),
    Column("error", Text),
    Column("created_time_ms", BigInteger, nullable=False),
    Column("overridden_by", String(32)),
    # The assessed trace's experiment and timestamp (NULL while it is not
    # stored), kept equal to its row's by ``copies.refresh_assessed_traces``.
    Column("experiment", String(256)),
    Column("trace_timestamp_ms", BigInteger),
    Index(None, "trace_id"),
    # A value's traces (a filter's subquery; a walk's probe of one trace)...
    Index(None, "kind", "name", "value_kind", "num_value", "trace_id"),
    Index(None, "kind", "name", "str_value", "trace_id"),
    # ...and the valid ones in an experiment in page order (the newest 100
    # traces with a value, read from the start of a range; their count, from
    # the index alone).
    # (overridden_by, NULL in every entry, lets SQLite read no row for it.)
    Index("ix_assessments_num_page", "kind", "name", "value_kind", "num_value", "experiment",
          "trace_timestamp_ms", "trace_id", "overridden_by",
          sqlite_where=text("overridden_by IS NULL"),
          postgresql_where=text("overridden_by IS NULL")),
    Index("ix_assessments_str_page", "kind", "name", "str_value", "experiment",
          "trace_timestamp_ms", "trace_id", "overridden_by",
          sqlite_where=text("overridden_by IS NULL"),
          postgresql_where=text("overridden_by IS NULL")),
)

#: Full-text index of span inputs and outputs (SQLite: an FTS5 table with the
#: trigram tokenizer, which also serves LIKE '%...%'). Created by the store.
FTS_TABLE = "trace_text"


def fts_table() -> Table:
    """A lightweight description of the full-text table, for queries."""
    from sqlalchemy import column, table

    return table(FTS_TABLE, column("trace_id"), column("content"))  # type: ignore[return-value]

# Without a rowid on SQLite: the pairs are kept in (trace_id, key) order, so a
# search probing one trace for a tag reads one entry, and the (key, value) index,
# which then holds the primary key, gives the trace ids of a value by itself.
trace_tags = Table(
    "trace_tags", metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Index(None, "key", "value"),
    sqlite_with_rowid=False,
)

trace_metadata = Table(
    "trace_metadata", metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Index(None, "key", "value"),
    sqlite_with_rowid=False,
)

# -- runs: an evaluation (or any logged experiment run) ------------------------

runs = Table(
    "runs", metadata,
    Column("run_id", String(32), primary_key=True),
    Column("experiment", String(256), nullable=False),
    Column("name", Text),
    Column("status", String(16), nullable=False),  # RUNNING FINISHED FAILED KILLED
    Column("start_time_ms", BigInteger, nullable=False),
    Column("end_time_ms", BigInteger),
    Index(None, "experiment", "start_time_ms", "run_id"),
)

run_params = Table(
    "run_params", metadata,
    Column("run_id", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

#: Every logged value of a metric, by step; a run's value of a metric is its
#: latest step's (the last logged at that step).
run_metrics = Table(
    "run_metrics", metadata,
    Column("run_id", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("value", Float),
    Column("timestamp_ms", BigInteger, nullable=False),
)

run_tags = Table(
    "run_tags", metadata,
    Column("run_id", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Index(None, "key", "value"),
)

#: Tables logged with a run (an evaluation's per-row results): JSON, one
#: object per row.
run_tables = Table(
    "run_tables", metadata,
    Column("run_id", String(32), primary_key=True),
    Column("name", String(250), primary_key=True),
    Column("content", Text, nullable=False),
)

# -- datasets: evaluation records kept in the store, versioned ----------------

datasets = Table(
    "datasets", metadata,
    Column("dataset_id", String(32), primary_key=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("experiment", String(256)),
    Column("version", Integer, nullable=False),
    Column("digest", String(64)),
    Column("tags_json", Text),
    Column("created_time_ms", BigInteger, nullable=False),
    Column("last_update_time_ms", BigInteger, nullable=False),
)

#: One row per version of a record: a record is live in versions
#: ``version_from <= v < version_to`` (``version_to`` NULL while current).
#: ``record_id`` is a hash of the record's inputs; ``seq`` the record's place in
#: the order records were first added (kept by its later row versions).
dataset_records = Table(
    "dataset_records", metadata,
    Column("dataset_id", String(32), primary_key=True),
    Column("record_id", String(64), primary_key=True),
    Column("version_from", Integer, primary_key=True),
    Column("version_to", Integer),
    Column("inputs_json", Text, nullable=False),
    Column("expectations_json", Text),
    Column("tags_json", Text),
    Column("source_type", String(32)),
    Column("source_id", String(256)),
    Column("created_time_ms", BigInteger, nullable=False),
    Column("seq", BigInteger),
)


def ddl_metadata(dialect: str) -> MetaData:
    """The tables as this assay creates them on ``dialect``: on PostgreSQL every
    text column compares and sorts by code point (collation "C"), as SQLite's
    do. With the database's collation (often a language's, such as en_US),
    ``order_by=["name"]`` or ``["tags.user"]`` ordered traces differently on the
    two, and an index could not serve ``LIKE 'prefix%'``. Only the tables'
    definitions say so: the statements, built on :data:`metadata`, name no
    collation. Case-insensitive matching (``ILIKE``) still folds case by the
    database's collation (see ``filter_sql``)."""
    if dialect != "postgresql":
        return metadata
    global _pg_metadata
    if _pg_metadata is None:
        copied = MetaData(naming_convention=metadata.naming_convention)
        for table in metadata.tables.values():
            table.to_metadata(copied)
        for table in copied.tables.values():
            for column in table.columns:
                if isinstance(column.type, String) and column.type.collation is None:
                    column.type = type(column.type)(column.type.length, collation="C")
        _pg_metadata = copied
    return _pg_metadata


_pg_metadata: MetaData | None = None
