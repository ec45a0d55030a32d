"""Evaluation datasets kept in the trace store, versioned.

A dataset is a named set of records, each with ``inputs`` (what the app is
asked), ``expectations`` (ground truth by name) and ``tags``. Records are keyed
by their inputs: merging a record whose inputs are already in the dataset
merges its expectations and tags into that record instead of adding a second
one. Every merge that changes something makes a new version (1, 2, ...; an
empty dataset is version 0), and every version stays readable as it was::

    ds = assay.create_dataset("support-qa")
    ds.merge_records([{"inputs": {"question": "Opening hours?"},
                       "expectations": {"expected_response": "9 to 5"}}])
    ds.merge_records(assay.search_traces("feedback.correct = false"))
    assay.get_dataset("support-qa", version=1).to_df()

Records can come from dicts, a pandas DataFrame, :class:`~assay.Trace` objects,
the frame ``search_traces`` returns, or another dataset. Datasets live in the
same SQLite or PostgreSQL store as the traces; deleting traces leaves them be.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import pydantic_core

from assay.errors import AssayError, InvalidData
from assay.evaluate.data import check_mapping, is_missing, preview
from assay.tracing.models import Trace

if TYPE_CHECKING:
    import pandas as pd

    from assay.store import LazyStore
    from assay.store import _dataset_sql as q

__all__ = ["Dataset", "DatasetExists", "DatasetNotFound", "DatasetRecord",
           "DatasetRecordSource", "RECORD_COLUMNS", "create_dataset", "delete_dataset",
           "get_dataset", "search_datasets"]

#: Columns of :meth:`Dataset.to_df`, one row per record.
RECORD_COLUMNS = ("inputs", "expectations", "tags", "source_type", "source_id", "record_id",
                  "created_time_ms")

#: The keys a record dict may have (``trace``: an :class:`~assay.Trace` it comes from;
#: ``source``: MLflow's form, ``{"source_type": ..., "source_data": {...}}``).
RECORD_KEYS = ("inputs", "expectations", "tags", "source_type", "source_id", "source", "trace")
_IGNORED_COLUMNS = ("record_id", "created_time_ms")  # to_df() output merges back as is
_MAX_NAME = 256
_MAX_SOURCE_ID = 256


class DatasetNotFound(AssayError, LookupError):
    """No dataset has this name, or the dataset has no such version."""


class DatasetExists(AssayError, ValueError):
    """A dataset with this name already exists."""


class DatasetRecordSource(str, Enum):
    """Where a dataset record came from."""

    UNSPECIFIED = "UNSPECIFIED"
    TRACE = "TRACE"
    HUMAN = "HUMAN"
    DOCUMENT = "DOCUMENT"
    CODE = "CODE"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    """One record of a dataset version.

    Attributes:
        record_id: the sha256 (hex) of the canonical JSON of ``inputs``; the
            same inputs always have the same id.
        inputs: the app's arguments by name (``predict_fn(**inputs)``).
        expectations: ground truth by name, e.g. ``{"expected_response": "..."}``.
        tags: string key/values.
        source_type: a :class:`DatasetRecordSource` value (``"TRACE"`` for a
            record made from a trace).
        source_id: the trace id for a ``TRACE`` record; else whatever id was given.
        created_time_ms: when the record was first added to the dataset.
    """

    record_id: str
    inputs: dict[str, Any]
    expectations: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    source_type: str | None = None
    source_id: str | None = None
    created_time_ms: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (the keys of :data:`RECORD_COLUMNS`)."""
        return {"inputs": self.inputs, "expectations": self.expectations, "tags": self.tags,
                "source_type": self.source_type, "source_id": self.source_id,
                "record_id": self.record_id, "created_time_ms": self.created_time_ms}


class Dataset:
    """A stored dataset, as of one version.

    ``records``, ``len()``, iteration and :meth:`to_df` show the records of
    :attr:`version` (read on first use, then kept). :meth:`merge_records` always
    merges into the dataset's latest version and moves this object to the
    version it made; to keep a version at hand, fetch it with
    ``get_dataset(name, version=n)``.

    Attributes:
        dataset_id: 32 hex characters, fixed for the dataset's life.
        name: unique in the store.
        experiment: the experiment the dataset belongs to.
        version: this object's version (0: empty, before any merge).
        digest: sha256 (hex) of this version's content (see :meth:`merge_records`).
        tags: the dataset's string key/values, given at creation.
        created_time_ms: when the dataset was created.
        last_update_time_ms: when the dataset last changed (its latest version).
    """

    _digest: str | None
    _records: list[DatasetRecord] | None

    def __init__(self, row: q.DatasetRow, store: LazyStore, *, version: int | None = None
                 ) -> None:
        self._store = store
        self._set(row)
        if version is not None and version != row.version:
            self.version = version
            self._digest = None  # an older version's: computed from its records

    def _set(self, row: q.DatasetRow) -> None:
        self.dataset_id = row.dataset_id
        self.name = row.name
        self.experiment = row.experiment
        self.version = row.version
        self._digest = row.digest
        self.tags: dict[str, str] = json.loads(row.tags_json) if row.tags_json else {}
        self.created_time_ms = row.created_time_ms
        self.last_update_time_ms = row.last_update_time_ms
        self._records = None

    def __repr__(self) -> str:
        digest = "" if self._digest is None else f", digest={self._digest[:12]!r}"
        return f"Dataset(name={self.name!r}, version={self.version}{digest})"

    @property
    def digest(self) -> str:
        """sha256 (hex) of this version's content: every record's inputs,
        expectations and tags, in record-id order (not sources or times)."""
        if self._digest is None:
            self._load()
        assert self._digest is not None
        return self._digest

    @property
    def records(self) -> list[DatasetRecord]:
        """The records of this version, in the order they were first added."""
        if self._records is None:
            self._load()
        assert self._records is not None
        return self._records

    def _load(self) -> None:
        rows = _q().read_records(self._store.sql, self.dataset_id, self.version)
        if not rows and self.version > 0 and _q().find_dataset(
                self._store.sql, dataset_id=self.dataset_id) is None:
            raise DatasetNotFound(f"the dataset {self.name!r} was deleted")
        self._records = [DatasetRecord(
            record_id=r.record_id, inputs=json.loads(r.inputs_json),
            expectations=json.loads(r.expectations_json), tags=json.loads(r.tags_json),
            source_type=r.source_type, source_id=r.source_id,
            created_time_ms=r.created_time_ms) for r in rows]
        if self._digest is None:
            self._digest = _q().content_digest(rows)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[DatasetRecord]:
        return iter(self.records)

    def to_df(self) -> pd.DataFrame:
        """The records of this version as a pandas DataFrame, one row per record,
        with the columns in :data:`RECORD_COLUMNS` (``inputs``, ``expectations``
        and ``tags`` hold dicts).

        The frame merges back unchanged: ``other.merge_records(ds.to_df())``.

        Example:
            >>> assay.get_dataset("support-qa").to_df()[["inputs", "expectations"]]
        """
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self.records], columns=list(RECORD_COLUMNS))

    def merge_records(self, records: Any) -> Dataset:
        """Merge records into the dataset's latest version; returns this object,
        moved to the version the merge made.

        A record whose inputs are new is added. A record whose inputs (compared
        as canonical JSON) are already in the dataset is merged into it: its
        expectations and tags are added to the record's, a key given again taking
        the new value; the record keeps its source. When anything changed, one
        new version is written (a single transaction, however many records);
        when nothing changed, no version is made. Every record is checked first:
        on any problem nothing of the merge is stored.

        Args:
            records: any of

                - a list of dicts with ``inputs`` (a dict, required unless a
                  ``trace`` is given), and optionally ``expectations`` (a dict),
                  ``tags`` (string key/values), ``source_type``
                  (a :class:`DatasetRecordSource` value), ``source_id``, ``trace``;
                - a pandas DataFrame with those columns (what :meth:`to_df`
                  returns merges back as is);
                - a list of :class:`~assay.Trace`, or the DataFrame
                  ``search_traces`` returns (its ``trace`` column): inputs are the
                  root span's inputs, expectations the trace's valid expectation
                  assessments, the source ``TRACE`` with the trace id;
                - another :class:`Dataset` (its records at its version).

        Returns:
            This dataset, now at the merge's version (``version`` and ``digest``
            updated, ``records`` read afresh on next use).

        Raises:
            InvalidData: a record has no inputs, non-dict inputs or expectations,
                a value that cannot be stored as JSON, an unknown key, or a bad
                source; the message names the record by its position.
            DatasetNotFound: the dataset was deleted.

        Example:
            >>> ds = assay.get_dataset("support-qa")
            >>> ds.merge_records([{"inputs": {"question": "Refunds?"},
            ...                    "expectations": {"expected_facts": ["30 days"]}}])
            >>> ds.version
            4
        """
        incoming = _prepare(records)
        row = _q().merge(self._store.sql, self.dataset_id, incoming, _now_ms())
        if row is None:
            raise DatasetNotFound(f"the dataset {self.name!r} was deleted")
        self._set(row)
        return self


# -- the public functions ----------------------------------------------------------

def create_dataset(name: str, *, experiment: str | None = None,
                   tags: Mapping[str, Any] | None = None) -> Dataset:
    """Create an empty dataset (version 0) in the configured store.

    Args:
        name: unique in the store (1 to 256 characters).
        experiment: the experiment it belongs to (default: the configured one).
        tags: string key/values describing the dataset (values are turned into
            strings).

    Returns:
        The new :class:`Dataset`.

    Raises:
        DatasetExists: a dataset with this name exists.
        ValueError: a bad name, experiment or tags.

    Example:
        >>> ds = assay.create_dataset("support-qa", tags={"team": "support"})
        >>> ds.version, len(ds)
        (0, 0)
    """
    _check_name(name, "create_dataset")
    if experiment is None:
        from assay.tracing import _runtime

        experiment = _runtime.current().experiment
    if not isinstance(experiment, str) or not experiment or len(experiment) > _MAX_NAME:
        raise ValueError(f"create_dataset(experiment={experiment!r}): expected a non-empty "
                         f"string of at most {_MAX_NAME} characters")
    if tags is not None and not isinstance(tags, Mapping):
        raise ValueError(f"create_dataset(tags={tags!r}): expected a dict of strings")
    tag_values = {str(k): str(v) for k, v in (tags or {}).items()}
    now = _now_ms()
    sql = _q()
    row = sql.DatasetRow(dataset_id=uuid.uuid4().hex, name=name, experiment=experiment,
                         version=0, digest=sql.content_digest(()),
                         tags_json=sql.canonical_json(tag_values), created_time_ms=now,
                         last_update_time_ms=now)
    lazy = _store()
    if not _q().insert_dataset(lazy.sql, row):
        raise DatasetExists(f"a dataset named {name!r} already exists: read it with "
                            f"assay.get_dataset({name!r}), or pick another name")
    return Dataset(row, lazy)


def get_dataset(name: str, *, version: int | None = None) -> Dataset:
    """A stored dataset, at its latest version or at an older one.

    Args:
        name: the dataset's name.
        version: which version (0 to the latest); default the latest.

    Returns:
        The :class:`Dataset` (its records are read on first use).

    Raises:
        DatasetNotFound: no dataset has this name (the message lists some that
            exist), or it has no such version (the message says which exist).
        ValueError: a bad name or version.

    Example:
        >>> assay.get_dataset("support-qa", version=2).records[0].inputs
        {'question': 'Opening hours?'}
    """
    _check_name(name, "get_dataset")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise ValueError(f"get_dataset(version={version!r}): expected an integer")
    lazy = _store()
    row = _q().find_dataset(lazy.sql, name=name)
    if row is None:
        raise DatasetNotFound(_not_found(lazy, name))
    if version is not None and not 0 <= version <= row.version:
        which = ("its only version is 0 (it is empty)" if row.version == 0
                 else f"its versions are 0 to {row.version}")
        raise DatasetNotFound(f"the dataset {name!r} has no version {version}: {which}")
    return Dataset(row, lazy, version=version)


def delete_dataset(name: str) -> None:
    """Delete a dataset with all its versions. Traces are not touched.

    Raises:
        DatasetNotFound: no dataset has this name.

    Example:
        >>> assay.delete_dataset("support-qa")
    """
    _check_name(name, "delete_dataset")
    lazy = _store()
    if not _q().delete_dataset(lazy.sql, name):
        raise DatasetNotFound(_not_found(lazy, name))


def search_datasets(experiment: str | None = None, *, max_results: int = 1000
                    ) -> list[Dataset]:
    """The stored datasets of an experiment, the most recently changed first,
    each at its latest version.

    Args:
        experiment: the experiment (default: the configured one); ``"*"`` for all.
        max_results: at most this many (1 to 50,000).

    Returns:
        The :class:`Dataset` objects (their records are read on first use).

    Raises:
        ValueError: a bad ``max_results``.

    Example:
        >>> [ds.name for ds in assay.search_datasets("*")]
        ['support-qa', 'refunds']
    """
    if isinstance(max_results, bool) or not isinstance(max_results, int) \
            or not 1 <= max_results <= 50_000:
        raise ValueError(f"max_results must be an integer from 1 to 50000, got {max_results!r}")
    if experiment is None:
        from assay.tracing import _runtime

        experiment = _runtime.current().experiment
    lazy = _store()
    rows = _q().list_datasets(lazy.sql, None if experiment == "*" else experiment, max_results)
    return [Dataset(row, lazy) for row in rows]


def _store() -> LazyStore:
    from assay.store.query import store

    return store()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME:
        raise ValueError(f"{where}(name={name!r}): expected a non-empty string of at most "
                         f"{_MAX_NAME} characters")


def _not_found(lazy: LazyStore, name: str) -> str:
    known = _q().names(lazy.sql, 11)
    if not known:
        return f"no dataset named {name!r}: the store has none (create it with create_dataset)"
    shown = ", ".join(repr(n) for n in known[:10]) + (", ..." if len(known) > 10 else "")
    return f"no dataset named {name!r}; datasets in the store: {shown}"


# -- checking records ----------------------------------------------------------------

class _NotJson(Exception):
    """A value of a type that has no JSON form."""


def _strict_fallback(obj: Any) -> Any:
    """JSON forms of numpy and pandas values; anything else is refused (a
    dataset stores values, never their ``repr``)."""
    module = type(obj).__module__ or ""
    if module.startswith("numpy") and hasattr(obj, "tolist"):
        return obj.tolist()
    if module.startswith("pandas"):
        if hasattr(obj, "isoformat") and not _is_na(obj):
            return obj.isoformat()
        if _is_na(obj):
            return None
    raise _NotJson(type(obj).__name__)


def _is_na(obj: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(obj))
    except (TypeError, ValueError, ImportError):
        return False


def _json_dict(value: Any, what: str, where: str, *, required: bool) -> dict[str, Any]:
    """A JSON-safe copy of a dict field, or an :class:`InvalidData` naming what is wrong."""
    checked = check_mapping(value, what, where, required=required, noun="record")
    try:
        converted = _jsonable(checked)
    except (_NotJson, ValueError):
        for key, item in checked.items():  # which value it was
            _check_value(item, f"{what}[{key!r}]", where)
        raise InvalidData(f"{where}: {what} cannot be stored as JSON") from None
    return converted


def _jsonable(value: Any) -> Any:
    return pydantic_core.to_jsonable_python(value, fallback=_strict_fallback,
                                            bytes_mode="base64")


def _check_value(value: Any, what: str, where: str) -> None:
    """Raise :class:`InvalidData` if ``value`` has no canonical JSON form."""
    try:
        _q().canonical_json(_jsonable(value))
    except _NotJson as exc:
        raise InvalidData(f"{where}: {what} holds a value of type {exc}, which cannot be "
                          f"stored as JSON; convert it to a string, number, list or "
                          f"dict") from None
    except ValueError as exc:
        reason = ("NaN or infinity, which JSON cannot hold" if "float" in str(exc)
                  else str(exc))
        raise InvalidData(f"{where}: {what} cannot be stored as JSON: {reason}") from None


def _canonical(value: dict[str, Any], what: str, where: str) -> str:
    """The canonical JSON of a checked dict field (NaN and infinities refused)."""
    try:
        return _q().canonical_json(value)
    except ValueError:
        for key, item in value.items():
            _check_value(item, f"{what}[{key!r}]", where)
        raise InvalidData(f"{where}: {what} cannot be stored as JSON") from None


def _tags(value: Any, where: str) -> dict[str, str]:
    checked = check_mapping(value, "tags", where, required=False, noun="record")
    return {k: v if isinstance(v, str) else str(v) for k, v in checked.items()}


def _source_type(value: Any, where: str) -> str:
    try:
        return DatasetRecordSource(str(value).upper()).value
    except ValueError:
        raise InvalidData(f"{where}: source_type {value!r} is not one of "
                          f"{', '.join(s.value for s in DatasetRecordSource)}") from None


def _source_id(value: Any, where: str) -> str | None:
    if is_missing(value):
        return None
    if not isinstance(value, str) or len(value) > _MAX_SOURCE_ID:
        raise InvalidData(f"{where}: source_id must be a string of at most {_MAX_SOURCE_ID} "
                          f"characters, got {preview(value)}")
    return value


def _mlflow_source(value: Any, where: str) -> tuple[str | None, str | None]:
    """``{"source_type": "TRACE", "source_data": {"trace_id": "..."}}`` (MLflow's form)."""
    if is_missing(value):
        return None, None
    if not isinstance(value, Mapping) or "source_type" not in value:
        raise InvalidData(f"{where}: source must be a dict with source_type and "
                          f"source_data, got {preview(value)}")
    data = value.get("source_data") or {}
    if not isinstance(data, Mapping):
        raise InvalidData(f"{where}: source_data must be a dict, got {preview(data)}")
    found = next((data[k] for k in ("trace_id", "doc_uri", "user_name", "source_id")
                  if data.get(k) is not None), None)
    return _source_type(value["source_type"], where), _source_id(found, where)


def _from_trace(trace: Trace, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trace's record: its root span's inputs and its valid expectations."""
    from assay.evaluate.data import row_from_trace

    if trace.root_span is None:
        raise InvalidData(f"{where}: the trace has no root span yet (still in progress?)")
    row = row_from_trace(trace)
    return row["inputs"], row["expectations"]


def _record(item: Any, index: int) -> q.Incoming:
    """One checked record to merge."""
    where = f"record {index}"
    source_type: str | None = None
    source_id: str | None = None
    if isinstance(item, DatasetRecord):
        inputs = _json_dict(item.inputs, "inputs", where, required=True)
        expectations = _json_dict(item.expectations, "expectations", where, required=False)
        tags = _tags(item.tags, where)
        source_type, source_id = item.source_type, item.source_id
    elif isinstance(item, Trace):
        where = f"record {index} (trace {item.trace_id})"
        raw_inputs, raw_expectations = _from_trace(item, where)
        inputs = _json_dict(raw_inputs, "inputs", where, required=True)
        expectations = _json_dict(raw_expectations, "expectations", where, required=False)
        tags = {}
        source_type, source_id = DatasetRecordSource.TRACE.value, item.trace_id
    elif isinstance(item, Mapping):
        unknown = [k for k in item if k not in RECORD_KEYS]
        if unknown:
            hint = (" (a dataset keeps inputs and expectations; outputs are what evaluate() "
                    "produces)" if unknown[0] == "outputs" else "")
            raise InvalidData(f"{where}: unknown key {unknown[0]!r}; a record has "
                              f"{', '.join(RECORD_KEYS)}{hint}")
        trace = item.get("trace")
        given_inputs: Any = item.get("inputs")
        traced_expectations: dict[str, Any] = {}
        if not is_missing(trace):
            if not isinstance(trace, Trace):
                raise InvalidData(f"{where}: trace must be an assay.Trace, got "
                                  f"{type(trace).__name__}")
            traced_inputs, traced_expectations = _from_trace(trace, where)
            if is_missing(given_inputs):
                given_inputs = traced_inputs
            source_type, source_id = DatasetRecordSource.TRACE.value, trace.trace_id
        inputs = _json_dict(given_inputs, "inputs", where, required=True)
        expectations = {**_json_dict(traced_expectations, "expectations", where,
                                     required=False),
                        **_json_dict(item.get("expectations"), "expectations", where,
                                     required=False)}
        tags = _tags(item.get("tags"), where)
        given_type, given_id = _mlflow_source(item.get("source"), where)
        if not is_missing(item.get("source_type")):
            given_type = _source_type(item["source_type"], where)
        if not is_missing(item.get("source_id")):
            given_id = _source_id(item["source_id"], where)
        if given_type is not None:
            source_type, source_id = given_type, given_id
        elif given_id is not None:
            source_id = given_id
    else:
        raise InvalidData(f"{where}: expected a dict, an assay.Trace or a DatasetRecord, got "
                          f"{type(item).__name__} {preview(item)}")
    inputs_json = _canonical(inputs, "inputs", where)
    sql = _q()
    return sql.Incoming(record_id=sql.record_id_of(inputs_json), inputs_json=inputs_json,
                        expectations=expectations, tags=tags,
                        expectations_json=_canonical(expectations, "expectations", where),
                        tags_json=sql.canonical_json(tags),
                        source_type=source_type or DatasetRecordSource.UNSPECIFIED.value,
                        source_id=source_id)


def _items(records: Any) -> list[Any]:
    """The records given, as a list of dicts, traces or dataset records."""
    if isinstance(records, Dataset):
        return list(records.records)
    if type(records).__module__.startswith("pandas"):
        import pandas as pd

        if isinstance(records, pd.DataFrame):
            return _frame_items(records)
    if isinstance(records, (str, bytes, Mapping)) or not hasattr(records, "__iter__"):
        raise InvalidData(f"records must be a list of dicts, a pandas DataFrame, a list of "
                          f"traces or a dataset, got {type(records).__name__}")
    return list(records)


def _frame_items(frame: pd.DataFrame) -> list[Any]:
    columns = [str(c) for c in frame.columns]
    if "inputs" not in columns:
        if "trace" in columns:  # the frame search_traces returns
            return list(frame["trace"])
        raise InvalidData(f"the DataFrame has no 'inputs' or 'trace' column (it has "
                          f"{', '.join(columns) or 'none'})")
    unknown = [c for c in columns if c not in RECORD_KEYS and c not in _IGNORED_COLUMNS]
    if unknown:
        raise InvalidData(f"the DataFrame has an unknown column {unknown[0]!r}; a record has "
                          f"{', '.join(RECORD_KEYS)}")
    keep = [c for c in columns if c in RECORD_KEYS]
    return [{c: row[c] for c in keep if not is_missing(row[c])}
            for row in frame[keep].to_dict("records")]


def _prepare(records: Any) -> list[q.Incoming]:
    """Every record checked and made canonical, before anything is written."""
    return [_record(item, index) for index, item in enumerate(_items(records))]


def _q() -> Any:
    """The dataset SQL module, imported on first use (SQLAlchemy stays off ``import assay``)."""
    from assay.store import _dataset_sql

    return _dataset_sql
