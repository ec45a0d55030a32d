"""Datasets in the trace store: versions, merging, digests, every input form, on
SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import pytest
from sqlalchemy import event

import assay
from assay.errors import InvalidData
from assay.store import schema as s
from assay.store.datasets import (
    Dataset,
    DatasetExists,
    DatasetNotFound,
    DatasetRecordSource,
    create_dataset,
    delete_dataset,
    get_dataset,
    search_datasets,
)
from assay.store.query import store

EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()

pytestmark = pytest.mark.usefixtures("tracing_any")


@assay.trace(span_type="AGENT")
def answer(question: str, lang: str = "en") -> str:
    return f"answer to {question}"


def _content(ds: Dataset) -> dict[str, tuple[dict, dict]]:
    return {r.record_id: (r.inputs, r.expectations) for r in ds.records}


# -- create / get / delete / list ------------------------------------------------------

def test_create_get_delete():
    ds = create_dataset("qa", tags={"team": "support", "size": 3})
    assert (ds.name, ds.version, len(ds), ds.records) == ("qa", 0, 0, [])
    assert ds.experiment == "test"  # the configured experiment
    assert ds.tags == {"team": "support", "size": "3"}
    assert ds.digest == EMPTY_DIGEST
    assert len(ds.dataset_id) == 32
    assert ds.created_time_ms == ds.last_update_time_ms > 0

    got = get_dataset("qa")
    assert (got.dataset_id, got.version, got.digest, got.tags) == (
        ds.dataset_id, 0, EMPTY_DIGEST, ds.tags)
    assert list(got.to_df().columns) == ["inputs", "expectations", "tags", "source_type",
                                         "source_id", "record_id", "created_time_ms"]

    with pytest.raises(DatasetExists, match="'qa' already exists"):
        create_dataset("qa")
    delete_dataset("qa")
    with pytest.raises(DatasetNotFound, match="no dataset named 'qa'"):
        get_dataset("qa")
    with pytest.raises(DatasetNotFound, match="no dataset named 'qa'"):
        delete_dataset("qa")
    again = create_dataset("qa")  # the name is free again; a new dataset
    assert again.dataset_id != ds.dataset_id and again.version == 0


def test_not_found_lists_existing_names():
    create_dataset("refunds")
    with pytest.raises(DatasetNotFound, match=r"no dataset named 'refund'.*'refunds'"):
        get_dataset("refund")


def test_bad_arguments():
    for bad in ("", "   ", None, 3, "x" * 257):
        with pytest.raises(ValueError, match="name="):
            create_dataset(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tags="):
        create_dataset("t", tags=["a"])  # type: ignore[arg-type]
    create_dataset("t")
    with pytest.raises(ValueError, match="version="):
        get_dataset("t", version="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_results"):
        search_datasets(max_results=0)


def test_search_datasets_by_experiment():
    create_dataset("a")
    create_dataset("b", experiment="other")
    b = get_dataset("b")
    b.merge_records([{"inputs": {"q": 1}}])  # changed last: listed first
    assert [d.name for d in search_datasets()] == ["a"]
    assert [d.name for d in search_datasets("other")] == ["b"]
    assert [d.name for d in search_datasets("*")] == ["b", "a"]
    assert search_datasets("*")[0].version == 1
    assert search_datasets("nothing") == []


# -- merging: forms ----------------------------------------------------------------------

def test_merge_dicts():
    ds = create_dataset("dicts")
    returned = ds.merge_records([
        {"inputs": {"question": "hours?"}, "expectations": {"expected_response": "9 to 5"},
         "tags": {"topic": "hours"}},
        {"inputs": {"question": "refunds?", "lang": "en"}, "source_type": "human",
         "source_id": "alice"},
    ])
    assert returned is ds and ds.version == 1 and len(ds) == 2
    first, second = ds.records
    assert first.inputs == {"question": "hours?"}
    assert first.expectations == {"expected_response": "9 to 5"}
    assert first.tags == {"topic": "hours"}
    assert first.source_type == "UNSPECIFIED" and first.source_id is None
    assert second.expectations == {} and second.tags == {}
    assert (second.source_type, second.source_id) == ("HUMAN", "alice")
    assert first.record_id == hashlib.sha256(b'{"question":"hours?"}').hexdigest()
    # Reading it back gives the same.
    assert _content(get_dataset("dicts")) == _content(ds)


def test_merge_dataframe_and_round_trip_of_to_df():
    ds = create_dataset("frame")
    frame = pd.DataFrame({
        "inputs": [{"q": "a"}, {"q": "b"}],
        "expectations": [{"answer": 1}, None],
        "tags": [None, {"k": "v"}],
    })
    ds.merge_records(frame)
    assert [(r.inputs, r.expectations, r.tags) for r in ds.records] == [
        ({"q": "a"}, {"answer": 1}, {}), ({"q": "b"}, {}, {"k": "v"})]
    copy = create_dataset("frame-copy")
    copy.merge_records(ds.to_df())
    assert copy.digest == ds.digest and _content(copy) == _content(ds)
    another = create_dataset("from-dataset")
    another.merge_records(ds)
    assert another.digest == ds.digest


def _traced(questions: list[str]) -> list[str]:
    ids = []
    for q in questions:
        answer(q)
        ids.append(assay.get_last_trace_id())
    assert assay.flush(timeout_s=30)
    return ids


def test_merge_traces_and_search_traces_frame():
    ids = _traced(["hours?", "refunds?"])
    assay.log_expectation(ids[0], "expected_response", "old")
    assay.log_expectation(ids[0], "expected_response", "9 to 5")  # overrides the old one
    assay.log_expectation(ids[0], "must_mention", ["hours"])

    ds = create_dataset("from-traces")
    ds.merge_records([assay.get_trace(i) for i in ids])
    by_question = {r.inputs["question"]: r for r in ds.records}
    assert set(by_question) == {"hours?", "refunds?"}
    hours = by_question["hours?"]
    assert hours.inputs == {"question": "hours?", "lang": "en"}
    assert hours.expectations == {"expected_response": "9 to 5", "must_mention": ["hours"]}
    assert (hours.source_type, hours.source_id) == ("TRACE", ids[0])
    assert by_question["refunds?"].expectations == {}

    frame = assay.search_traces()
    assert "trace" in frame.columns
    same = create_dataset("from-frame")
    same.merge_records(frame)
    assert same.digest == ds.digest and same.version == 1
    # A trace in a dict, with expectations of its own on top.
    third = create_dataset("trace-in-dict")
    third.merge_records([{"trace": assay.get_trace(ids[1]), "expectations": {"k": 1}}])
    (record,) = third.records
    assert record.expectations == {"k": 1} and record.source_id == ids[1]


def test_a_trace_without_a_root_span_is_refused():
    from assay.tracing.models import Trace, TraceInfo

    open_trace = Trace(info=TraceInfo(trace_id="cd" * 16, experiment="test", timestamp_ms=1))
    ds = create_dataset("no-root")
    with pytest.raises(InvalidData, match=f"record 1 \\(trace {'cd' * 16}\\): the trace has "
                                          "no root span"):
        ds.merge_records([{"inputs": {"q": 1}}, open_trace])
    assert ds.version == 0 and len(get_dataset("no-root")) == 0


def test_deleting_traces_leaves_datasets():
    ids = _traced(["kept?"])
    ds = create_dataset("kept")
    ds.merge_records([assay.get_trace(ids[0])])
    assert assay.delete_traces("trace.timestamp_ms >= 0") == 1
    again = get_dataset("kept")
    assert len(again) == 1 and again.records[0].source_id == ids[0]


# -- dedup, versions, digests -----------------------------------------------------------

def test_same_inputs_merge_into_one_record():
    ds = create_dataset("dedup")
    ds.merge_records([{"inputs": {"q": "a", "n": 1}, "expectations": {"x": 1, "y": 1},
                       "tags": {"t": "1"}, "source_type": "HUMAN"}])
    created = ds.records[0].created_time_ms
    # Key order does not matter: same record. New keys added, same keys overwritten.
    ds.merge_records([{"inputs": {"n": 1, "q": "a"}, "expectations": {"y": 2, "z": 3},
                       "tags": {"u": "2"}, "source_type": "CODE"}])
    assert ds.version == 2 and len(ds) == 1
    (record,) = ds.records
    assert record.expectations == {"x": 1, "y": 2, "z": 3}
    assert record.tags == {"t": "1", "u": "2"}
    assert record.source_type == "HUMAN"  # where it first came from
    assert record.created_time_ms == created
    # The same record twice in one merge: merged in order, one version.
    ds.merge_records([{"inputs": {"q": "b"}, "expectations": {"e": 1}},
                      {"inputs": {"q": "b"}, "expectations": {"e": 2, "f": 1}}])
    assert ds.version == 3
    assert {r.inputs["q"]: r.expectations for r in ds.records} == {
        "a": {"x": 1, "y": 2, "z": 3}, "b": {"e": 2, "f": 1}}


def test_a_merge_that_changes_nothing_makes_no_version():
    ds = create_dataset("idle")
    ds.merge_records([{"inputs": {"q": "a"}, "expectations": {"x": 1}}])
    before = (ds.version, ds.digest, ds.last_update_time_ms)
    ds.merge_records([{"inputs": {"q": "a"}, "expectations": {"x": 1}}])
    ds.merge_records([{"inputs": {"q": "a"}}])  # nothing new to merge
    ds.merge_records([])
    assert (ds.version, ds.digest, ds.last_update_time_ms) == before
    assert _row_count("idle") == 1


def _row_count(name: str) -> int:
    from sqlalchemy import func, select

    ds = get_dataset(name)
    with store().sql._read() as conn:
        return int(conn.execute(select(func.count()).select_from(s.dataset_records).where(
            s.dataset_records.c.dataset_id == ds.dataset_id)).scalar() or 0)


def test_old_versions_stay_readable():
    ds = create_dataset("history")
    ds.merge_records([{"inputs": {"q": "a"}, "expectations": {"x": 1}}])  # v1
    ds.merge_records([{"inputs": {"q": "b"}}])  # v2
    ds.merge_records([{"inputs": {"q": "a"}, "expectations": {"x": 2}}])  # v3
    ds.merge_records([{"inputs": {"q": "c"}, "tags": {"k": "v"}}])  # v4
    digests = {}
    for version, expected in [
        (0, {}),
        (1, {"a": {"x": 1}}),
        (2, {"a": {"x": 1}, "b": {}}),
        (3, {"a": {"x": 2}, "b": {}}),
        (4, {"a": {"x": 2}, "b": {}, "c": {}}),
    ]:
        old = get_dataset("history", version=version)
        assert old.version == version
        assert {r.inputs["q"]: r.expectations for r in old.records} == expected
        digests[version] = old.digest
    assert len(set(digests.values())) == 5
    assert digests[4] == ds.digest == get_dataset("history").digest
    assert digests[0] == EMPTY_DIGEST
    # Only changed records got new rows: a (x2), b, c.
    assert _row_count("history") == 4
    with pytest.raises(DatasetNotFound, match=r"no version 5: its versions are 0 to 4"):
        get_dataset("history", version=5)
    with pytest.raises(DatasetNotFound, match="no version -1"):
        get_dataset("history", version=-1)
    create_dataset("empty")
    with pytest.raises(DatasetNotFound, match="its only version is 0"):
        get_dataset("empty", version=1)


def test_merging_into_an_old_version_object_merges_into_the_latest():
    ds = create_dataset("linear")
    ds.merge_records([{"inputs": {"q": "a"}}])
    ds.merge_records([{"inputs": {"q": "b"}}])
    old = get_dataset("linear", version=1)
    old.merge_records([{"inputs": {"q": "c"}}])
    assert old.version == 3
    assert {r.inputs["q"] for r in old.records} == {"a", "b", "c"}
    assert get_dataset("linear", version=1).records[0].inputs == {"q": "a"}


def test_digest_depends_on_content_not_order_or_source():
    records = [{"inputs": {"q": str(i), "n": i}, "expectations": {"e": [i, {"b": 1, "a": 2}]},
                "tags": {"i": str(i)}} for i in range(20)]
    forward = create_dataset("forward")
    forward.merge_records(records)
    backward = create_dataset("backward")
    backward.merge_records(records[10:][::-1])
    backward.merge_records([{**r, "source_type": "HUMAN"} for r in records[:10][::-1]])
    assert backward.version == 2
    assert forward.digest == backward.digest
    # The digest is that of the records as read back.
    assert get_dataset("backward", version=2).digest == forward.digest
    changed = create_dataset("changed")
    changed.merge_records([*records[:-1], {**records[-1], "expectations": {"e": 0}}])
    assert changed.digest != forward.digest
    tagged = create_dataset("tagged")
    tagged.merge_records([*records[:-1], {**records[-1], "tags": {"i": "other"}}])
    assert tagged.digest != forward.digest
    assert len({forward.digest, changed.digest, tagged.digest}) == 3


def test_digest_is_a_pinned_value():
    # Stable across databases and releases: the canonical content's sha256.
    ds = create_dataset("pinned")
    ds.merge_records([{"inputs": {"b": 2, "a": "é"}, "expectations": {"x": [1.5, None]},
                       "tags": {"t": "v"}}])
    text = '{"a":"é","b":2}\t{"x":[1.5,null]}\t{"t":"v"}\n'
    assert ds.digest == hashlib.sha256(text.encode()).hexdigest()


# -- errors --------------------------------------------------------------------------

@pytest.mark.parametrize(("records", "message"), [
    ([{"inputs": {"q": 1}}, {"expectations": {"e": 1}}], r"record 1: no inputs"),
    ([{"inputs": {"q": 1}}, {"inputs": None}], r"record 1: no inputs"),
    ([{"inputs": "what?"}], r"record 0: inputs must be a dict, got str 'what\?'"),
    ([{"inputs": {"q": 1}}, {"inputs": {"q": 2}, "expectations": ["x"]}],
     r"record 1: expectations must be a dict, got list"),
    ([{"inputs": {1: "x"}}], r"record 0: inputs keys must be strings, got 1"),
    ([{"inputs": {"q": object()}}], r"record 0: inputs\['q'\] holds a value of type object"),
    ([{"inputs": {"q": 1}, "expectations": {"e": float("nan")}}],
     r"record 0: expectations\['e'\] cannot be stored as JSON: NaN"),
    ([{"inputs": {"q": 1}, "expectation": {"e": 1}}],
     r"record 0: unknown key 'expectation'; a record has inputs, expectations"),
    ([{"inputs": {"q": 1}, "outputs": "x"}], r"unknown key 'outputs'.*evaluate\(\)"),
    ([{"inputs": {"q": 1}, "tags": "x"}], r"record 0: tags must be a dict"),
    ([{"inputs": {"q": 1}, "source_type": "ROBOT"}], r"record 0: source_type 'ROBOT' is not"),
    ([{"inputs": {"q": 1}, "trace": "abc"}], r"record 0: trace must be an assay.Trace"),
    ([{"inputs": {"q": 1}}, 42], r"record 1: expected a dict, an assay.Trace"),
    (pd.DataFrame({"inputs": [{"q": 1}, pd.NA]}), r"record 1: no inputs"),
    ({"inputs": {"q": 1}}, r"records must be a list"),
    ("inputs", r"records must be a list"),
    (pd.DataFrame({"question": ["a"]}), r"no 'inputs' or 'trace' column"),
    (pd.DataFrame({"inputs": [{"q": 1}], "expected": [1]}), r"unknown column 'expected'"),
])
def test_bad_records_are_named_and_nothing_is_stored(records, message):
    ds = create_dataset("strict")
    ds.merge_records([{"inputs": {"q": 0}, "expectations": {"e": 0}}])
    before = (ds.version, ds.digest)
    with pytest.raises(InvalidData, match=message):
        ds.merge_records(records)
    assert (ds.version, ds.digest) == before
    fresh = get_dataset("strict")
    assert (fresh.version, fresh.digest, len(fresh)) == (1, before[1], 1)


def test_values_are_stored_as_json():
    import datetime
    import enum

    import numpy as np

    class Color(enum.Enum):
        RED = "red"

    ds = create_dataset("values")
    ds.merge_records([{"inputs": {"n": np.int64(3), "a": np.arange(2),
                                  "d": datetime.date(2026, 1, 2), "c": Color.RED},
                       "expectations": {"ok": True, "nested": {"z": None}}}])
    (record,) = get_dataset("values").records
    assert record.inputs == {"n": 3, "a": [0, 1], "d": "2026-01-02", "c": "red"}
    assert record.expectations == {"ok": True, "nested": {"z": None}}


def test_source_in_mlflow_form():
    ds = create_dataset("mlflow-source")
    ds.merge_records([{"inputs": {"q": 1},
                       "source": {"source_type": "trace", "source_data": {"trace_id": "ab" * 16}}}])
    (record,) = ds.records
    assert (record.source_type, record.source_id) == (DatasetRecordSource.TRACE.value, "ab" * 16)


def test_a_deleted_dataset_cannot_be_merged_into():
    ds = create_dataset("gone")
    delete_dataset("gone")
    with pytest.raises(DatasetNotFound, match="'gone' was deleted"):
        ds.merge_records([{"inputs": {"q": 1}}])


# -- scale and concurrency -----------------------------------------------------------

@contextmanager
def _statements() -> Iterator[dict[str, int]]:
    """Count the statements sent and the transactions committed meanwhile."""
    engine = store().sql._get_engines()[0]
    counts = {"statements": 0, "commits": 0}

    def on_execute(*_args: object) -> None:
        counts["statements"] += 1

    def on_commit(_conn: object) -> None:
        counts["commits"] += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)


def test_ten_thousand_records_in_one_transaction():
    ds = create_dataset("large")
    records = [{"inputs": {"question": f"q{i}", "i": i}, "expectations": {"answer": i},
                "tags": {"batch": "1"}} for i in range(10_000)]
    with _statements() as counts:
        ds.merge_records(records)
    assert counts["commits"] == 1
    assert counts["statements"] < 60, counts  # batched, not one per record
    assert ds.version == 1 and len(ds) == 10_000
    # Updating every record: one more version, still batched.
    with _statements() as counts:
        ds.merge_records([{"inputs": r["inputs"], "expectations": {"checked": True}}
                          for r in records])
    assert counts["commits"] == 1 and counts["statements"] < 100, counts
    assert ds.version == 2 and len(ds) == 10_000
    assert ds.records[-1].expectations == {"answer": 9_999, "checked": True}
    assert len(get_dataset("large", version=1)) == 10_000
    assert get_dataset("large", version=1).records[0].expectations == {"answer": 0}


def test_concurrent_merges_each_make_a_version():
    create_dataset("busy")
    errors: list[BaseException] = []

    def merge(worker: int) -> None:
        try:
            for i in range(5):
                get_dataset("busy").merge_records([{"inputs": {"w": worker, "i": i}}])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=merge, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = get_dataset("busy")
    assert final.version == 20 and len(final) == 20
    assert [len(get_dataset("busy", version=v)) for v in range(21)] == list(range(21))


def test_evaluate_data_reads_a_dataset():
    from assay.evaluate.data import to_rows

    ds = create_dataset("for-eval")
    ds.merge_records([{"inputs": {"question": "hours?"}, "expectations": {"e": "9 to 5"}}])
    (row,) = to_rows(get_dataset("for-eval"), has_predict_fn=True)
    assert row.inputs == {"question": "hours?"} and row.expectations == {"e": "9 to 5"}
