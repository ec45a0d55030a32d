"""search_traces: experiments, ordering, the two return types, cursor pagination,
and argument validation."""

from __future__ import annotations

import base64
import gc
import time
from collections.abc import Iterator

import pandas as pd
import pytest

import assay
from assay.store import SpanRecord, TraceStore, open_store
from assay.store.query import FRAME_COLUMNS

T0_MS = 1_700_000_000_000


@pytest.fixture
def writer(tracing_any: str) -> Iterator[TraceStore]:
    """A second store object on the file the configured runtime reads."""
    store = open_store(tracing_any)
    yield store
    store.close()


def root_record(trace_id: str, ts_ms: int, *, name: str = "root",
                experiment: str = "test") -> SpanRecord:
    start = ts_ms * 1_000_000
    return SpanRecord(
        trace_id=trace_id, span_id="1" * 16, parent_id=None, name=name, span_type="CHAIN",
        start_time_ns=start, end_time_ns=start + 3_000_000, status="OK", status_message=None,
        inputs_json='{"x": 1}', outputs_json='"y"', attributes={}, events=[],
        experiment=experiment, root_rank=2)


def tid(n: int) -> str:
    return f"{n:032x}"


def walk(max_results: int, *, between_pages=None) -> tuple[list[str], list[int]]:
    """Follow next_page_token from the first page to the last: (trace ids, page sizes)."""
    seen: list[str] = []
    sizes: list[int] = []
    token = None
    for page_no in range(1000):
        page = assay.search_traces(max_results=max_results, page_token=token,
                                   return_type="list")
        seen.extend(t.info.trace_id for t in page)
        sizes.append(len(page))
        token = page.next_page_token
        if token is None:
            return seen, sizes
        assert isinstance(token, str) and token
        if between_pages is not None:
            between_pages(page_no)
    raise AssertionError("pagination did not end")


@assay.trace(span_type="CHAIN")
def answer(question: str, n: int = 0) -> dict[str, object]:
    return {"text": f"re: {question}", "n": n}


def traced_calls(count: int) -> list[str]:
    """``count`` traces, each in a later millisecond than the one before; their ids."""
    ids = []
    for i in range(count):
        answer(f"q{i}", n=i)
        trace_id = assay.get_last_trace_id()
        assert trace_id is not None
        ids.append(trace_id)
        time.sleep(0.003)
    assert assay.flush(timeout_s=30)
    return ids


# -- listing --------------------------------------------------------------------------


def test_search_lists_the_configured_experiment_newest_first(tracing_any):
    ids = traced_calls(5)
    found = assay.search_traces(return_type="list")
    assert [t.info.trace_id for t in found] == list(reversed(ids))
    assert [t.info.timestamp_ms for t in found] == sorted(
        (t.info.timestamp_ms for t in found), reverse=True)
    assert {t.info.experiment for t in found} == {"test"}


def test_other_experiments_are_excluded_and_star_lists_every_experiment(store_uri):
    assay.configure(store=store_uri, experiment="alpha", flush_interval_ms=50)
    alpha = traced_calls(2)
    assay.configure(store=store_uri, experiment="beta", flush_interval_ms=50)
    beta = traced_calls(3)

    def ids(**kwargs: object) -> list[str]:
        return [t.info.trace_id for t in assay.search_traces(return_type="list", **kwargs)]

    assert ids() == list(reversed(beta))
    assert ids(experiment="alpha") == list(reversed(alpha))
    assert ids(experiment="*") == list(reversed(alpha + beta))
    assert ids(experiment="gamma") == []


def test_a_list_of_experiments_searches_counts_and_deletes_in_those(store_uri):
    """Several experiments at once (MLflow's searches take a list): every plan a
    filter may take, pages, counts and deletes keep to them."""
    names = ("alpha", "beta", "gamma")
    ids: dict[str, list[str]] = {}
    for name in names:
        assay.configure(store=store_uri, experiment=name, flush_interval_ms=50)
        ids[name] = traced_calls(4)
        for trace_id in ids[name][::2]:
            assay.log_feedback(trace_id, "correct", True)
    order = {t: i for i, t in enumerate(ids["alpha"] + ids["beta"] + ids["gamma"])}
    both = sorted(ids["alpha"] + ids["gamma"], key=order.__getitem__, reverse=True)

    def found(flt: str | None = None, **kwargs: object) -> list[str]:
        listed = [t.info.trace_id for t in assay.search_traces(flt, return_type="list",
                                                               **kwargs)]
        assert assay.count_traces(flt, experiment=kwargs.get("experiment")) == len(listed)
        return listed

    for experiment in (["alpha", "gamma"], ("gamma", "alpha", "gamma"), {"alpha", "gamma"}):
        assert found(experiment=experiment) == both
    for flt in ("feedback.correct = true", "span.name = 'answer'", "trace.text LIKE '%q1%'",
                "feedback.correct = true AND span.type = 'CHAIN'"):
        matching = set(found(flt, experiment="*"))
        assert found(flt, experiment=["alpha", "gamma"]) == [t for t in both if t in matching]
    assert found(experiment=["beta"]) == list(reversed(ids["beta"]))  # one: a name
    assert found(experiment=["beta", "*"]) == found(experiment="*")

    pages: list[str] = []
    token = None
    while True:
        page = assay.search_traces(experiment=["alpha", "gamma"], max_results=3,
                                   page_token=token, return_type="list")
        pages += [t.info.trace_id for t in page]
        token = page.next_page_token
        if token is None:
            break
    assert pages == both
    assert assay.delete_traces("feedback.correct = true", experiment=["alpha", "beta"]) == 4
    assert set(found(experiment="*")) == set(ids["alpha"][1::2] + ids["beta"][1::2]
                                             + ids["gamma"])


@pytest.mark.parametrize("bad", [[], [""], ["alpha", 3], 5, "", ("alpha", None)])
def test_a_malformed_experiment_raises_value_error_naming_it(tracing_any, bad):
    for call in (lambda: assay.search_traces(experiment=bad),
                 lambda: assay.count_traces(experiment=bad),
                 lambda: assay.delete_traces("trace.status = 'OK'", experiment=bad)):
        with pytest.raises(ValueError, match=r"experiment=.*expected an experiment name"):
            call()


def test_order_by_given_as_one_string_is_refused_with_the_list_it_should_be(tracing_any):
    with pytest.raises(assay.InvalidFilter, match=r"order_by must be a list of strings, "
                                                  r"e\.g\. \['timestamp_ms DESC'\]"):
        assay.search_traces(order_by="timestamp_ms ASC")


def test_list_return_type_gives_traces_with_a_next_page_token(tracing_any):
    ids = traced_calls(4)

    everything = assay.search_traces(return_type="list")
    assert isinstance(everything, list)
    assert all(isinstance(t, assay.Trace) for t in everything)
    assert everything.next_page_token is None
    assert [s.name for s in everything[0].spans] == ["answer"]

    first = assay.search_traces(return_type="list", max_results=3)
    assert len(first) == 3
    assert isinstance(first.next_page_token, str)
    rest = assay.search_traces(return_type="list", max_results=3,
                               page_token=first.next_page_token)
    assert [t.trace_id for t in first + rest] == list(reversed(ids))
    assert rest.next_page_token is None


def test_frame_has_the_frame_columns_and_one_row_per_trace(tracing_any):
    @assay.trace
    def handler(question: str, k: int = 2) -> str:
        assay.update_current_trace(tags={"route": "/ask"}, metadata={"user": "ann"})
        answer(question)
        return f"final {question}"

    for q in ("a", "b", "c"):
        handler(q)
        time.sleep(0.003)
    assert assay.flush(timeout_s=30)

    frame = assay.search_traces()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert len(frame) == 3
    assert frame.attrs["next_page_token"] is None
    assert list(frame["request"]) == [{"question": q, "k": 2} for q in ("c", "b", "a")]
    assert list(frame["response"]) == [f"final {q}" for q in ("c", "b", "a")]
    assert list(frame["name"]) == ["handler"] * 3
    assert list(frame["state"]) == ["OK"] * 3
    assert list(frame["experiment"]) == ["test"] * 3
    assert list(frame["tags"]) == [{"route": "/ask"}] * 3
    assert list(frame["metadata"]) == [{"user": "ann"}] * 3
    for _, row in frame.iterrows():
        trace = row["trace"]
        assert isinstance(trace, assay.Trace)
        assert trace.trace_id == row["trace_id"]
        assert {s.name for s in trace.spans} == {"handler", "answer"}
        assert trace.root_span is not None and trace.root_span.inputs == row["request"]
        assert row["timestamp_ms"] == trace.info.timestamp_ms


def test_frame_of_an_empty_store_has_the_columns_and_no_rows(tracing_any):
    frame = assay.search_traces()
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert len(frame) == 0
    assert frame.attrs["next_page_token"] is None
    empty = assay.search_traces(return_type="list")
    assert list(empty) == [] and empty.next_page_token is None


def test_include_spans_false_lists_traces_without_their_spans(tracing_any):
    ids = traced_calls(2)
    found = assay.search_traces(return_type="list", include_spans=False)
    assert [t.trace_id for t in found] == list(reversed(ids))
    assert all(t.spans == [] and t.info.name == "answer" for t in found)


@pytest.mark.parametrize("enabled", [True, False])
def test_a_search_leaves_the_garbage_collector_as_it_was(enabled, writer):
    """Pages are built with the collector paused (assay._gc); after a search,
    one that failed included, it is on or off as before."""
    writer.write_spans([root_record(tid(i), T0_MS + i) for i in range(5)])
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        assert len(assay.search_traces(return_type="list")) == 5
        assert gc.isenabled() is enabled
        with pytest.raises(assay.InvalidFilter):
            assay.search_traces("trace.status = ", return_type="list")
        assert gc.isenabled() is enabled
        assert writer.get_trace(tid(0)) is not None
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


# -- pagination -----------------------------------------------------------------------


def test_following_next_page_token_visits_every_trace_once_in_order(writer):
    writer.write_spans([root_record(tid(i), T0_MS + i) for i in range(10)])
    seen, sizes = walk(3)
    assert seen == [tid(i) for i in reversed(range(10))]
    assert sizes == [3, 3, 3, 1]


def test_pagination_over_traces_sharing_one_timestamp_visits_each_once(writer):
    writer.write_spans([root_record(tid(i), T0_MS) for i in range(10)])
    seen, _ = walk(3)
    assert sorted(seen) == [tid(i) for i in range(10)]
    assert len(seen) == 10


def test_page_count_that_divides_evenly_ends_with_a_none_token(writer):
    writer.write_spans([root_record(tid(i), T0_MS + i) for i in range(9)])
    seen, sizes = walk(3)
    assert seen == [tid(i) for i in reversed(range(9))]
    assert sizes == [3, 3, 3]


def test_traces_added_between_pages_do_not_make_the_walk_repeat_or_skip(writer):
    originals = [tid(i) for i in range(10)]
    writer.write_spans([root_record(t, T0_MS + i) for i, t in enumerate(originals)])
    added: list[str] = []

    def add_newer(page_no: int) -> None:
        batch = [tid(1000 + 10 * page_no + j) for j in range(4)]
        writer.write_spans([root_record(t, T0_MS + 100 + 10 * page_no + j)
                            for j, t in enumerate(batch)])
        added.extend(batch)

    seen, _ = walk(3, between_pages=add_newer)
    assert seen == list(reversed(originals))
    assert added, "traces were added while paging"
    everything, _ = walk(50)
    assert sorted(everything) == sorted(originals + added)


@pytest.mark.parametrize("token", [
    "garbage!!",
    "",
    base64.urlsafe_b64encode(b"not json").decode(),
    base64.urlsafe_b64encode(b'["x", 1]').decode(),
    base64.urlsafe_b64encode(b'{"ts": 1}').decode(),
])
def test_a_page_token_not_returned_by_search_raises_value_error(token, tracing_any):
    with pytest.raises(ValueError, match="page_token"):
        assay.search_traces(page_token=token)


def test_max_results_none_returns_every_match_page_by_page(writer, monkeypatch):
    """As MLflow's ``max_results=None``: every match, read ALL_PAGE_SIZE at a time."""
    from assay.store import LazyStore, query

    writer.write_spans([root_record(tid(n), T0_MS + n, name="even" if n % 2 else "odd")
                        for n in range(1, 12)])
    reads: list[int] = []
    search = LazyStore.search

    def counted(self, **kwargs):
        reads.append(kwargs["max_results"])
        return search(self, **kwargs)

    monkeypatch.setattr(query, "ALL_PAGE_SIZE", 3)
    monkeypatch.setattr(LazyStore, "search", counted)
    every = assay.search_traces(max_results=None, return_type="list")
    assert [t.info.trace_id for t in every] == [tid(n) for n in range(11, 0, -1)]
    assert every.next_page_token is None and reads == [3, 3, 3, 3]
    frame = assay.search_traces("trace.name = 'even'", max_results=None,
                                order_by=["timestamp_ms ASC"])
    assert list(frame["trace_id"]) == [tid(n) for n in (1, 3, 5, 7, 9, 11)]
    assert frame.attrs["next_page_token"] is None
    first = assay.search_traces(max_results=4, return_type="list")
    rest = assay.search_traces(max_results=None, page_token=first.next_page_token,
                               return_type="list")
    assert [t.info.trace_id for t in first + rest] == [t.info.trace_id for t in every]


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, True, "3", 3.0, 50_001])
def test_max_results_must_be_a_positive_integer(bad, tracing_any):
    with pytest.raises(ValueError, match="max_results"):
        assay.search_traces(max_results=bad)


def test_unknown_return_type_raises_value_error(tracing_any):
    with pytest.raises(ValueError, match="return_type"):
        assay.search_traces(return_type="dict")  # type: ignore[arg-type]


@pytest.mark.parametrize("flt", ["trace.status = ", "tags.route == '/ask'", "garbage",
                                 "trace.stauts = 'OK'"])
def test_a_malformed_filter_string_raises_invalid_filter(flt, tracing_any):
    with pytest.raises(assay.InvalidFilter) as err:
        assay.search_traces(filter_string=flt)
    assert err.value.filter_string == flt
    assert isinstance(err.value.position, int)
    assert isinstance(err.value, ValueError)
