"""Runs in the SQL store: create, log params, metrics, tags and tables, read, search.

One code path for SQLite and PostgreSQL: writes are upserts through the
store's dialect-specific ``INSERT ... ON CONFLICT`` (see
:meth:`SqlTraceStore._insert`), each call one transaction. A run's metrics
keep every logged value by step; a run's value of a metric is the one at its
highest step. A NaN is stored as NULL (SQLite cannot store a NaN) and read
back as NaN.

Runs and traces are independent: deleting traces leaves runs alone, and
deleting a run leaves the traces that carry its id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, case, func, select

from assay.errors import StoreError
from assay.store import schema as s
from assay.store.base import MetricRow, RunPage
from assay.store.runs import RUN_STATUSES

if TYPE_CHECKING:
    from assay.store.ordering import SortKey
    from assay.store.runs import Metric, Run
    from assay.store.sql import SqlTraceStore

__all__ = ["SqlRuns", "parse_run_order_by"]

_R = s.runs.c
_CHUNK = 500  # run ids per IN list when reading a page's params, metrics and tags


class SqlRuns:
    """The run half of a :class:`~assay.store.sql.SqlTraceStore` (which delegates here).

    Every method opens its own transaction through the store's ``_write()`` /
    ``_read()``; logging into a run that does not exist raises
    :class:`~assay.errors.StoreError` and writes nothing.
    """

    def __init__(self, store: SqlTraceStore) -> None:
        self._store = store

    # -- writing --------------------------------------------------------------
    def create_run(self, run_id: str, *, experiment: str, name: str | None,
                   start_time_ms: int, tags: Mapping[str, str] | None = None) -> None:
        """Create a RUNNING run.

        Raises:
            StoreError: a run with this id exists already.
        """
        with self._store._write() as conn:
            if self._exists(conn, run_id):
                raise StoreError(f"a run with id {run_id!r} exists already in {self._store.uri}")
            conn.execute(s.runs.insert(), {
                "run_id": run_id, "experiment": experiment, "name": name, "status": "RUNNING",
                "start_time_ms": start_time_ms, "end_time_ms": None})
            if tags:
                self._upsert_kv(conn, s.run_tags, run_id, tags)

    def update_run(self, run_id: str, *, status: str | None = None,
                   end_time_ms: int | None = None, name: str | None = None) -> None:
        """Change a run's status, end time or name (``None``: unchanged). Setting
        the status to RUNNING clears the end time (a resumed run).

        Raises:
            StoreError: no such run.
            ValueError: an unknown status.
        """
        values: dict[str, Any] = {}
        if status is not None:
            if status not in RUN_STATUSES:
                raise ValueError(f"run status {status!r}: expected one of {list(RUN_STATUSES)}")
            values["status"] = status
            if status == "RUNNING":
                values["end_time_ms"] = None
        if end_time_ms is not None:
            values["end_time_ms"] = end_time_ms
        if name is not None:
            values["name"] = name
        with self._store._write() as conn:
            self._require(conn, run_id)
            if values:
                conn.execute(s.runs.update().where(_R.run_id == run_id).values(**values))

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        """Set parameters of a run; a key logged again takes the new value."""
        with self._store._write() as conn:
            self._require(conn, run_id)
            if params:
                self._upsert_kv(conn, s.run_params, run_id, params)

    def log_metrics(self, run_id: str, metrics: Sequence[MetricRow]) -> None:
        """Log ``(key, value, step, timestamp_ms)`` rows in one transaction; a value
        logged again at the same key and step replaces the earlier one (the last
        row given wins)."""
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        for key, value, step, timestamp_ms in metrics:
            rows[(key, step)] = {"run_id": run_id, "key": key, "step": step,
                                 "value": None if math.isnan(value) else value,
                                 "timestamp_ms": timestamp_ms}
        with self._store._write() as conn:
            self._require(conn, run_id)
            if rows:
                ins = self._store._insert(s.run_metrics)
                conn.execute(ins.on_conflict_do_update(
                    index_elements=["run_id", "key", "step"],
                    set_={"value": ins.excluded.value,
                          "timestamp_ms": ins.excluded.timestamp_ms}), list(rows.values()))

    def set_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set tags of a run."""
        with self._store._write() as conn:
            self._require(conn, run_id)
            if tags:
                self._upsert_kv(conn, s.run_tags, run_id, tags)

    def delete_run_tag(self, run_id: str, key: str) -> None:
        """Remove a tag of a run (nothing happens if it has none)."""
        t = s.run_tags.c
        with self._store._write() as conn:
            self._require(conn, run_id)
            conn.execute(s.run_tags.delete().where(t.run_id == run_id, t.key == key))

    def log_run_table(self, run_id: str, name: str, content: str) -> None:
        """Store a table with a run (JSON text), replacing one of the same name."""
        with self._store._write() as conn:
            self._require(conn, run_id)
            ins = self._store._insert(s.run_tables)
            conn.execute(ins.on_conflict_do_update(
                index_elements=["run_id", "name"], set_={"content": ins.excluded.content}),
                {"run_id": run_id, "name": name, "content": content})

    def delete_run(self, run_id: str) -> bool:
        """Delete a run with its params, metrics, tags and tables; the traces that
        carry its id stay. Returns whether the run existed."""
        with self._store._write() as conn:
            existed = self._exists(conn, run_id)
            for table in (s.run_params, s.run_metrics, s.run_tags, s.run_tables, s.runs):
                conn.execute(table.delete().where(table.c.run_id == run_id))
        return existed

    def _upsert_kv(self, conn: Connection, table: Any, run_id: str,
                   values: Mapping[str, str]) -> None:
        ins = self._store._insert(table)
        conn.execute(ins.on_conflict_do_update(index_elements=["run_id", "key"],
                                               set_={"value": ins.excluded.value}),
                     [{"run_id": run_id, "key": k, "value": v} for k, v in values.items()])

    @staticmethod
    def _exists(conn: Connection, run_id: str) -> bool:
        return conn.execute(select(_R.run_id).where(_R.run_id == run_id)).first() is not None

    def _require(self, conn: Connection, run_id: str) -> None:
        if not self._exists(conn, run_id):
            raise StoreError(f"no run with id {run_id!r} in {self._store.uri}")

    # -- reading --------------------------------------------------------------
    def load_run_table(self, run_id: str, name: str) -> str | None:
        """The JSON text of a run's table, or ``None``."""
        t = s.run_tables.c
        with self._store._read() as conn:
            return conn.execute(select(t.content).where(t.run_id == run_id,
                                                        t.name == name)).scalar()

    def get_run(self, run_id: str) -> Run | None:
        """The run with its params, latest metrics and tags, or ``None``."""
        with self._store._read() as conn:
            row = conn.execute(select(s.runs).where(_R.run_id == run_id)).first()
            if row is None:
                return None
            return _assemble(conn, [row._mapping])[0]

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every value of metric ``key`` logged in the run, by step."""
        from assay.store.runs import Metric

        m = s.run_metrics.c
        with self._store._read() as conn:
            rows = conn.execute(select(m.key, m.value, m.step, m.timestamp_ms)
                                .where(m.run_id == run_id, m.key == key).order_by(m.step))
            return [Metric(key=k, value=_float(v), step=st, timestamp_ms=ts)
                    for k, v, st, ts in rows]

    def search_runs(self, *, experiment: str | None, filter_string: str | None = None,
                    order_by: list[str] | None = None, max_results: int = 1000,
                    page_token: str | None = None) -> RunPage:
        """One page of the runs matching ``filter_string`` (MLflow's run-search
        syntax), in ``order_by`` order (newest first by default), continuing
        after ``page_token``.

        Raises:
            InvalidFilter: the filter or the ordering is malformed.
            ValueError: the page token was not issued for this ordering.
        """
        from assay.store import ordering
        from assay.store.filter_parser import parse_run_filter
        from assay.store.filter_sql import compile_run_filter

        dialect = self._store._get_engines()[0].dialect.name
        cond = compile_run_filter(parse_run_filter(filter_string) if filter_string else None,
                                  dialect=dialect, filter_string=filter_string or "")
        if experiment is not None:
            cond = and_(_R.experiment == experiment, cond)
        keys = parse_run_order_by(order_by)
        query = select(s.runs).where(cond)
        if page_token is not None:
            query = query.where(ordering.keyset_condition(
                keys, ordering.decode_token(page_token, keys, "search_runs")))
        query = (query.add_columns(*(k.expr.label(f"_sort{i}") for i, k in enumerate(keys)))
                 .order_by(*ordering.order_clauses(keys)).limit(max_results + 1))
        with self._store._read() as conn:
            rows = [r._mapping for r in conn.execute(query)]
            more = len(rows) > max_results
            rows = rows[:max_results]
            runs = _assemble(conn, rows)
        token = None
        if more:
            last = rows[-1]
            token = ordering.encode_token(keys, [last[f"_sort{i}"] for i in range(len(keys))])
        return RunPage(runs, token)


# -- ordering -------------------------------------------------------------------

_ATTRIBUTE_ORDER = {"start_time": _R.start_time_ms, "run_id": _R.run_id,
                    "status": _R.status, "experiment": _R.experiment}


def parse_run_order_by(order_by: list[str] | None) -> list[SortKey]:
    """Sort keys for a run search (default: newest first), the run id last.

    Items are ``"<field> [ASC|DESC]"`` over the run attributes (``start_time``,
    ``end_time``, ``run_name``, ``status``, ``run_id``, ``experiment``),
    ``metrics.<key>``, ``params.<key>`` and ``tags.<key>``, keys in backticks
    as in filters. Runs without the metric, param or tag (or with a NaN) come
    last in either direction.

    Raises:
        InvalidFilter: an item names no such field.
    """
    from assay.store.filter_parser import parse_run_filter
    from assay.store.filter_sql import latest_metric_value
    from assay.store.ordering import SortKey, order_field, order_items

    keys: list[SortKey] = []
    for text, descending, item in order_items(order_by, "start_time DESC"):
        field = order_field(text, item, parse_run_filter, "runs ")
        if field.kind == "run" and field.name in _ATTRIBUTE_ORDER:
            keys.append(SortKey(field.name, _ATTRIBUTE_ORDER[field.name], descending))
            continue
        if field.kind == "run":
            column = _R.end_time_ms if field.name == "end_time" else _R.name
            value: Any = column
            label = field.name
        else:
            table = {"param": s.run_params, "run_tag": s.run_tags}.get(field.kind)
            if table is None:
                value = latest_metric_value(_R.run_id, field.key or "")
            else:
                kv = table.alias()
                value = (select(kv.c.value).where(kv.c.run_id == _R.run_id,
                                                  kv.c.key == field.key).scalar_subquery())
            label = field.path
        # Missing values last in either direction, then the values themselves;
        # both expressions are never NULL, as the page cursor needs.
        filler = 0 if field.kind == "metric" or field.name == "end_time" else ""
        keys.append(SortKey(f"{label}:missing", case((value.is_(None), 1), else_=0), False))
        keys.append(SortKey(label, func.coalesce(value, filler), descending))
    keys.append(SortKey("run_id", _R.run_id, keys[0].descending))
    return keys


# -- assembling -----------------------------------------------------------------

def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _assemble(conn: Connection, rows: Sequence[Any]) -> list[Run]:
    """:class:`Run` models for ``runs`` rows, with their params, tags and latest metrics."""
    from assay.store.runs import Run

    ids = [r["run_id"] for r in rows]
    params: dict[str, dict[str, str]] = {i: {} for i in ids}
    tags: dict[str, dict[str, str]] = {i: {} for i in ids}
    metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
    p, t, m = s.run_params.c, s.run_tags.c, s.run_metrics.c
    for chunk in _chunks(ids):
        for run_id, key, value in conn.execute(
                select(p.run_id, p.key, p.value).where(p.run_id.in_(chunk))):
            params[run_id][key] = value
        for run_id, key, value in conn.execute(
                select(t.run_id, t.key, t.value).where(t.run_id.in_(chunk))):
            tags[run_id][key] = value
        top = (select(m.run_id, m.key, func.max(m.step).label("step"))
               .where(m.run_id.in_(chunk)).group_by(m.run_id, m.key).subquery())
        latest = select(m.run_id, m.key, m.value).join(
            top, and_(m.run_id == top.c.run_id, m.key == top.c.key, m.step == top.c.step))
        for run_id, key, value in conn.execute(latest):
            metrics[run_id][key] = _float(value)
    return [Run(run_id=r["run_id"], experiment=r["experiment"], name=r["name"],
                status=r["status"], start_time_ms=r["start_time_ms"],
                end_time_ms=r["end_time_ms"], params=dict(sorted(params[r["run_id"]].items())),
                metrics=dict(sorted(metrics[r["run_id"]].items())),
                tags=dict(sorted(tags[r["run_id"]].items())))
            for r in rows]
