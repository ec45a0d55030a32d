"""The SQL side of stored datasets: the ``datasets`` rows and their versioned records.

A record row is live in the versions ``version_from <= v < version_to``
(``version_to`` NULL while current). A merge that changes anything writes, in
one transaction, a new row for each new or changed record (``version_from`` =
the new version), closes the rows they replace (``version_to`` = the new
version) and moves the dataset to the new version with its new digest. Rows are
never rewritten otherwise, so every older version stays readable as it was.

Record contents are stored as canonical JSON (sorted keys, no spaces), the same
text on every database, so that digests are computed from the stored text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from assay.store import schema as s

if TYPE_CHECKING:
    from assay.store.sql import SqlTraceStore

__all__ = ["DatasetRow", "Incoming", "RecordRow", "canonical_json", "content_digest",
           "delete_dataset", "find_dataset", "insert_dataset", "list_datasets", "merge", "names",
           "read_records", "record_id_of"]

_IN_CHUNK = 500  # record ids per ``IN (...)`` list
_EMPTY = "{}"


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a JSON-safe value: sorted keys, no spaces, UTF-8
    characters as themselves; NaN and infinities are refused (``ValueError``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def record_id_of(inputs_json: str) -> str:
    """A record's id: the sha256 (hex) of its canonical inputs JSON."""
    return hashlib.sha256(inputs_json.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class DatasetRow:
    """One row of ``datasets``."""

    dataset_id: str
    name: str
    experiment: str | None
    version: int
    digest: str
    tags_json: str | None
    created_time_ms: int
    last_update_time_ms: int


@dataclass(frozen=True, slots=True)
class RecordRow:
    """One record as stored (its JSON texts canonical)."""

    record_id: str
    inputs_json: str
    expectations_json: str
    tags_json: str
    source_type: str | None
    source_id: str | None
    created_time_ms: int
    seq: int  # the record's place in the order records were first added


@dataclass(slots=True)
class Incoming:
    """A checked record to merge: canonical inputs, JSON-safe expectations and tags."""

    record_id: str
    inputs_json: str
    expectations: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    source_type: str | None = None
    source_id: str | None = None
    expectations_json: str | None = None  # canonical_json(expectations), when known
    tags_json: str | None = None


def content_digest(records: Iterable[RecordRow]) -> str:
    """The sha256 (hex) of a version's content: each record's inputs, expectations
    and tags (canonical JSON), in record-id order. Sources and times are not
    content: the same records merged from traces or by hand, in any order, on any
    database, give the same digest."""
    h = hashlib.sha256()
    for row in sorted(records, key=lambda r: r.record_id):
        h.update(f"{row.inputs_json}\t{row.expectations_json}\t{row.tags_json}\n"
                 .encode())
    return h.hexdigest()


def _dataset_row(row: Any) -> DatasetRow:
    m = row._mapping
    return DatasetRow(dataset_id=m["dataset_id"], name=m["name"], experiment=m["experiment"],
                      version=int(m["version"]), digest=m["digest"] or content_digest(()),
                      tags_json=m["tags_json"], created_time_ms=int(m["created_time_ms"]),
                      last_update_time_ms=int(m["last_update_time_ms"]))


_RECORD_COLUMNS = (s.dataset_records.c.record_id, s.dataset_records.c.inputs_json,
                   s.dataset_records.c.expectations_json, s.dataset_records.c.tags_json,
                   s.dataset_records.c.source_type, s.dataset_records.c.source_id,
                   s.dataset_records.c.created_time_ms, s.dataset_records.c.seq)


def _record_row(row: Any) -> RecordRow:
    rid, inputs, expectations, tags, source_type, source_id, created, seq = row
    return RecordRow(record_id=rid, inputs_json=inputs, expectations_json=expectations or _EMPTY,
                     tags_json=tags or _EMPTY, source_type=source_type, source_id=source_id,
                     created_time_ms=int(created), seq=int(seq or 0))


def insert_dataset(sql: SqlTraceStore, row: DatasetRow) -> bool:
    """Store a new, empty dataset; ``False`` when the name is taken."""
    d = s.datasets
    values = {"dataset_id": row.dataset_id, "name": row.name, "experiment": row.experiment,
              "version": row.version, "digest": row.digest, "tags_json": row.tags_json,
              "created_time_ms": row.created_time_ms,
              "last_update_time_ms": row.last_update_time_ms}
    try:
        with sql._write() as conn:
            taken = conn.execute(select(d.c.dataset_id).where(d.c.name == row.name)).first()
            if taken is not None:
                return False
            conn.execute(d.insert(), values)
    except IntegrityError:  # created by another process meanwhile
        return False
    return True


def find_dataset(sql: SqlTraceStore, *, name: str | None = None,
                 dataset_id: str | None = None) -> DatasetRow | None:
    """The dataset with this name (or id), or ``None``."""
    d = s.datasets
    cond = d.c.name == name if dataset_id is None else d.c.dataset_id == dataset_id
    with sql._read() as conn:
        row = conn.execute(select(d).where(cond)).first()
    return None if row is None else _dataset_row(row)


def list_datasets(sql: SqlTraceStore, experiment: str | None,
                  max_results: int) -> list[DatasetRow]:
    """Datasets of one experiment (``None``: all), the most recently changed first."""
    d = s.datasets
    query = select(d)
    if experiment is not None:
        query = query.where(d.c.experiment == experiment)
    query = query.order_by(d.c.last_update_time_ms.desc(), d.c.name).limit(max_results)
    with sql._read() as conn:
        return [_dataset_row(row) for row in conn.execute(query)]


def names(sql: SqlTraceStore, limit: int) -> list[str]:
    """Some dataset names, alphabetically (for messages)."""
    d = s.datasets
    with sql._read() as conn:
        return [n for (n,) in conn.execute(select(d.c.name).order_by(d.c.name).limit(limit))]


def delete_dataset(sql: SqlTraceStore, name: str) -> bool:
    """Delete a dataset with every version of its records; ``False`` if there is none."""
    d, r = s.datasets, s.dataset_records
    with sql._write() as conn:
        found = conn.execute(select(d.c.dataset_id).where(d.c.name == name)).first()
        if found is None:
            return False
        conn.execute(r.delete().where(r.c.dataset_id == found[0]))
        conn.execute(d.delete().where(d.c.dataset_id == found[0]))
    return True


def read_records(sql: SqlTraceStore, dataset_id: str, version: int) -> list[RecordRow]:
    """The records of one version, in the order they were first added."""
    r = s.dataset_records
    query = (select(*_RECORD_COLUMNS)
             .where(r.c.dataset_id == dataset_id, r.c.version_from <= version,
                    or_(r.c.version_to.is_(None), r.c.version_to > version))
             .order_by(r.c.seq, r.c.record_id))
    with sql._read() as conn:
        return [_record_row(row) for row in conn.execute(query)]


@dataclass(slots=True)
class _State:
    """A record being merged: its content so far and where it came from."""

    inputs_json: str
    expectations: dict[str, Any]
    tags: dict[str, str]
    source_type: str | None
    source_id: str | None
    created_time_ms: int
    seq: int
    # The content's JSON texts while they are one new record's, as given.
    texts: tuple[str, str] | None = None


def merge(sql: SqlTraceStore, dataset_id: str, incoming: Sequence[Incoming],
          now_ms: int) -> DatasetRow | None:
    """Merge checked records into the dataset's latest version, in one transaction.

    A record whose inputs are new is added; one whose inputs are already there
    has the new expectations and tags merged into its own (same keys
    overwritten) and keeps its source and first-added time. When anything
    changed, the dataset moves to the next version; otherwise nothing is
    written.

    Returns:
        The dataset's row after the merge, or ``None`` when it no longer exists.
    """
    d, r = s.datasets, s.dataset_records
    with sql._write() as conn:
        # Row lock on PostgreSQL (merges into one dataset take turns); SQLite's
        # write transaction already excludes other writers.
        head = conn.execute(select(d).where(d.c.dataset_id == dataset_id)
                            .with_for_update()).first()
        if head is None:
            return None
        current = _dataset_row(head)
        live = {row.record_id: row for row in map(_record_row, conn.execute(
            select(*_RECORD_COLUMNS).where(r.c.dataset_id == dataset_id,
                                           r.c.version_to.is_(None))))}
        pending: dict[str, _State] = {}
        next_seq = max((row.seq for row in live.values()), default=0) + 1
        for item in incoming:
            state = pending.get(item.record_id)
            if state is None:
                old = live.get(item.record_id)
                if old is None:
                    texts = (None if item.expectations_json is None or item.tags_json is None
                             else (item.expectations_json, item.tags_json))
                    state = _State(item.inputs_json, {}, {}, item.source_type, item.source_id,
                                   now_ms, next_seq, texts)
                    next_seq += 1
                else:
                    state = _State(old.inputs_json, json.loads(old.expectations_json),
                                   json.loads(old.tags_json), old.source_type, old.source_id,
                                   old.created_time_ms, old.seq)
                pending[item.record_id] = state
            elif state.texts is not None:
                state.texts = None  # given again: merged below
            state.expectations.update(item.expectations)
            state.tags.update(item.tags)
        changed: list[RecordRow] = []
        for record_id, state in pending.items():
            expectations_json, tags_json = state.texts or (
                canonical_json(state.expectations), canonical_json(state.tags))
            row = RecordRow(record_id=record_id, inputs_json=state.inputs_json,
                            expectations_json=expectations_json,
                            tags_json=tags_json, source_type=state.source_type,
                            source_id=state.source_id, created_time_ms=state.created_time_ms,
                            seq=state.seq)
            old = live.get(record_id)
            if old is not None and _same(old, row):
                continue
            changed.append(row)
        if not changed:
            return current
        version = current.version + 1
        replaced = [row.record_id for row in changed if row.record_id in live]
        for start in range(0, len(replaced), _IN_CHUNK):
            conn.execute(r.update().where(
                r.c.dataset_id == dataset_id, r.c.version_to.is_(None),
                r.c.record_id.in_(replaced[start:start + _IN_CHUNK])).values(version_to=version))
        # One executemany: SQLAlchemy sends it as multi-row INSERTs.
        conn.execute(r.insert(), [
            {"dataset_id": dataset_id, "record_id": row.record_id, "version_from": version,
             "version_to": None, "inputs_json": row.inputs_json,
             "expectations_json": row.expectations_json, "tags_json": row.tags_json,
             "source_type": row.source_type, "source_id": row.source_id,
             "created_time_ms": row.created_time_ms, "seq": row.seq} for row in changed])
        live.update((row.record_id, row) for row in changed)
        digest = content_digest(live.values())
        conn.execute(d.update().where(d.c.dataset_id == dataset_id).values(
            version=version, digest=digest, last_update_time_ms=now_ms))
    return DatasetRow(dataset_id=current.dataset_id, name=current.name,
                      experiment=current.experiment, version=version, digest=digest,
                      tags_json=current.tags_json, created_time_ms=current.created_time_ms,
                      last_update_time_ms=now_ms)


def _same(old: RecordRow, new: RecordRow) -> bool:
    """Whether a merged record's content equals the stored one's (compared as
    canonical JSON, whatever text the stored row holds)."""
    return (canonical_json(json.loads(old.expectations_json)) == new.expectations_json
            and canonical_json(json.loads(old.tags_json)) == new.tags_json)
