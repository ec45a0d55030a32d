"""What ``evaluate()`` accepts as data, turned into checked rows.

Every accepted form becomes a list of :class:`EvalRow`:

- a list of dicts with ``inputs`` (a dict), and optionally ``outputs``,
  ``expectations`` (a dict), ``tags`` (string key/values) and ``trace`` (a
  :class:`~assay.Trace`);
- a pandas DataFrame with those columns;
- the DataFrame or the list ``search_traces`` returns (a ``trace`` column, or
  :class:`~assay.Trace` objects);
- a stored dataset (``assay.get_dataset``).

From a trace, ``inputs`` and ``outputs`` come from its root span and
``expectations`` from its valid expectation assessments. Every problem is found
before anything runs and is raised as :class:`~assay.errors.InvalidData` naming
the row by its position.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assay.errors import InvalidData
from assay.tracing.models import Trace
from assay.tracing.serialize import to_jsonable

__all__ = ["EvalRow", "MISSING", "check_mapping", "data_digest", "expectations_of",
           "is_missing", "preview", "row_from_trace", "to_rows"]

#: The keys a data row may have.
ROW_KEYS = ("inputs", "outputs", "expectations", "tags", "trace")


class _Missing:
    """A row field that was not given (``None`` is a value an app may return)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass
class EvalRow:
    """One row to evaluate.

    Attributes:
        index: the row's position in the data (0-based), used in every message.
        inputs: the keyword arguments of ``predict_fn`` / what the app was asked.
        outputs: what the app answered, :data:`MISSING` until predicted.
        expectations: ground truth by name.
        tags: string key/values set on the row's trace.
        trace: the row's trace: given with the data, or made by the evaluation.
        source_trace_id: the stored trace the row came from, if any; its
            feedback is attached to that trace when no ``predict_fn`` runs.
    """

    index: int
    inputs: dict[str, Any]
    outputs: Any = MISSING
    expectations: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    trace: Trace | None = None
    source_trace_id: str | None = None


def expectations_of(trace: Trace) -> dict[str, Any]:
    """The valid (not overridden) expectation assessments of a trace, by name.

    Example:
        >>> expectations_of(assay.get_trace(trace_id))
        {'expected_response': 'Paris'}
    """
    found: dict[str, Any] = {}
    latest: dict[str, int] = {}
    for a in trace.info.assessments:
        if a.kind != "expectation" or a.overridden_by is not None or a.error is not None:
            continue
        if a.created_time_ms >= latest.get(a.name, -1):
            found[a.name] = a.value
            latest[a.name] = a.created_time_ms
    return found


def row_from_trace(trace: Trace) -> dict[str, Any]:
    """The row a stored trace stands for: ``inputs``/``outputs`` of its root span,
    ``expectations`` from its expectation assessments, and the trace itself.

    Inputs recorded by ``@assay.trace`` are the bound arguments by name, a
    dict; any other value (a span from another instrumentation) is wrapped as
    ``{"input": value}``.

    Example:
        >>> row_from_trace(trace)["inputs"]
        {'question': 'What is assay?'}
    """
    root = trace.root_span
    inputs = root.inputs if root is not None else None
    if inputs is None:
        inputs = {}
    elif not isinstance(inputs, dict):
        inputs = {"input": inputs}
    return {
        "inputs": inputs,
        "outputs": root.outputs if root is not None else None,
        "expectations": expectations_of(trace),
        "trace": trace,
    }


def is_missing(value: Any) -> bool:
    """An empty cell: absent, ``None``, a float NaN or pandas' NA (a frame's missing value)."""
    return value is MISSING or value is None or (
        isinstance(value, float) and math.isnan(value)) or type(value).__name__ in (
        "NAType", "NaTType")


def check_mapping(value: Any, what: str, where: str, *, required: bool,
                  noun: str = "row") -> dict[str, Any]:
    """A dict field (``inputs``, ``expectations``, ``tags``) checked: a mapping with
    string keys, or empty when missing and not ``required``.

    Raises:
        InvalidData: naming ``where`` (``"row 3"``) and what is wrong.
    """
    if is_missing(value):
        if required:
            raise InvalidData(f"{where}: no {what}; every {noun} needs {what} (a dict of the "
                              f"app's arguments by name) or a trace")
        return {}
    if not isinstance(value, Mapping):
        raise InvalidData(f"{where}: {what} must be a dict, got {type(value).__name__} "
                          f"{preview(value)}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise InvalidData(f"{where}: {what} keys must be strings, got {bad[0]!r}")
    return dict(value)


def preview(value: Any) -> str:
    """``repr(value)``, cut to 60 characters, for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _row_from_dict(index: int, item: Mapping[str, Any]) -> EvalRow:
    where = f"row {index}"
    unknown = [k for k in item if k not in ROW_KEYS]
    if unknown:
        raise InvalidData(f"{where}: unknown key {unknown[0]!r}; a row has "
                          f"{', '.join(ROW_KEYS)}")
    expectations = check_mapping(item.get("expectations", MISSING), "expectations", where,
                                 required=False)
    trace = item.get("trace", MISSING)
    if not is_missing(trace):
        if not isinstance(trace, Trace):
            raise InvalidData(f"{where}: trace must be an assay.Trace, got "
                              f"{type(trace).__name__}")
        from_trace = row_from_trace(trace)
        inputs = item.get("inputs", MISSING)
        row = EvalRow(
            index=index,
            inputs=(from_trace["inputs"] if is_missing(inputs)
                    else check_mapping(inputs, "inputs", where, required=True)),
            outputs=from_trace["outputs"] if "outputs" not in item else item["outputs"],
            expectations={**from_trace["expectations"], **expectations},
            trace=trace, source_trace_id=trace.trace_id)
    else:
        row = EvalRow(
            index=index,
            inputs=check_mapping(item.get("inputs", MISSING), "inputs", where, required=True),
            outputs=item.get("outputs", MISSING), expectations=expectations)
    tags = check_mapping(item.get("tags", MISSING), "tags", where, required=False)
    row.tags = {k: str(v) for k, v in tags.items()}
    return row


def _items(data: Any) -> list[Any]:
    """The data as a list of items (dicts, traces or dataset records)."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        if "trace" not in data.columns and "inputs" not in data.columns:
            raise InvalidData(f"the DataFrame has no 'inputs' or 'trace' column (it has "
                              f"{', '.join(map(str, data.columns)) or 'none'})")
        columns = [c for c in data.columns if c in ROW_KEYS]
        from_search = "trace" in data.columns and "trace_id" in data.columns
        # search_traces' frame: the trace gives the row, and row columns added to
        # it (expectations labelled by hand, say) are used; its own columns are not.
        unknown = [c for c in data.columns if c not in ROW_KEYS]
        if unknown and not from_search:
            raise InvalidData(f"the DataFrame has an unknown column {unknown[0]!r}; a row has "
                              f"{', '.join(ROW_KEYS)}")
        return [{c: row[c] for c in columns if not is_missing(row[c])}
                for row in data[columns].to_dict("records")]
    records = getattr(data, "records", None)
    if records is not None and hasattr(data, "digest") and hasattr(data, "merge_records"):
        return [{"inputs": r.inputs, "expectations": r.expectations, "tags": r.tags}
                for r in records]
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Sequence):
        raise InvalidData(f"data must be a list of dicts, a pandas DataFrame, a list of "
                          f"traces or a dataset, got {type(data).__name__}")
    return list(data)


def to_rows(data: Any, *, has_predict_fn: bool) -> list[EvalRow]:
    """Check ``data`` and turn it into rows; raises before anything runs.

    Raises:
        InvalidData: the data is empty or of no accepted form, or a row has no
            inputs and no trace, non-dict inputs or expectations, outputs
            together with ``predict_fn``, or (without ``predict_fn``) neither
            outputs nor a trace. The message names the row.

    Example:
        >>> to_rows([{"inputs": {"q": "hi"}, "outputs": "hello"}], has_predict_fn=False)[0].outputs
        'hello'
    """
    items = _items(data)
    if not items:
        raise InvalidData("data is empty: there is nothing to evaluate")
    rows: list[EvalRow] = []
    for index, item in enumerate(items):
        if isinstance(item, Trace):
            item = {"trace": item}
        elif not isinstance(item, Mapping):
            raise InvalidData(f"row {index}: expected a dict or an assay.Trace, got "
                              f"{type(item).__name__} {preview(item)}")
        if has_predict_fn and not is_missing(item.get("outputs", MISSING)) \
                and "trace" not in item:
            raise InvalidData(f"row {index} has outputs, and predict_fn was given: "
                              f"predict_fn produces the outputs; drop one of them")
        row = _row_from_dict(index, item)
        if has_predict_fn:
            row.outputs = MISSING  # predicted afresh (a trace's old outputs are not kept)
        elif row.outputs is MISSING:
            raise InvalidData(f"row {index} has no outputs and no trace: give outputs or "
                              f"a trace, or pass predict_fn to produce them")
        rows.append(row)
    return rows


def canonical_text(value: Any) -> str:
    """JSON text of a value that is the same in every process: sets sorted, and
    memory addresses in ``repr`` text (``<Obj at 0x7f...>``) left out."""
    text = json.dumps(to_jsonable(_sorted_sets(value)), sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"), default=str)
    return _ADDRESS.sub("", text)


def _sorted_sets(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted((_sorted_sets(v) for v in value), key=repr)
    if isinstance(value, Mapping):
        return {k: _sorted_sets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sorted_sets(v) for v in value]
    return value


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def data_digest(rows: Sequence[EvalRow]) -> str:
    """A short hash of the rows' inputs, expectations and given outputs: the same
    data gives the same digest, whatever object it came in."""
    h = hashlib.sha256()
    for row in rows:
        record = {"inputs": row.inputs, "expectations": row.expectations,
                  "outputs": None if row.outputs is MISSING else row.outputs}
        h.update(canonical_text(record).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
