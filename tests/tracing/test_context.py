"""Context across threads, asyncio tasks and W3C traceparent."""

from __future__ import annotations

import asyncio
import threading

import assay
from assay.tracing import TracedThreadPoolExecutor, continue_trace, inject_traceparent, wrap


@assay.trace
def child(i):
    return i


def test_a_plain_thread_does_not_inherit_the_span(tracing, fetch):
    with assay.start_span("parent") as parent:
        t = threading.Thread(target=child, args=(1,))
        t.start()
        t.join()
    assert [s.name for s in fetch(parent.trace_id).spans] == ["parent"]


def test_wrap_carries_the_span_into_a_thread(tracing, fetch):
    with assay.start_span("parent") as parent:
        threads = [threading.Thread(target=wrap(child), args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    trace = fetch(parent.trace_id)
    kids = trace.search_spans(name="child")
    assert len(kids) == 3
    assert {k.parent_id for k in kids} == {parent.span_id}


def test_traced_thread_pool_executor(tracing, fetch):
    with assay.start_span("fan-out") as parent, TracedThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(child, range(8))) == list(range(8))
        assert pool.submit(child, 9).result() == 9
    kids = fetch(parent.trace_id).search_spans(name="child")
    assert len(kids) == 9
    assert {k.parent_id for k in kids} == {parent.span_id}


def test_threads_are_isolated_from_each_other(tracing):
    results = {}

    @assay.trace
    def worker(i):
        span = assay.get_current_span()
        results[i] = (span.trace_id, assay.get_current_span() is span)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({tid for tid, _ in results.values()}) == 6
    assert all(same for _, same in results.values())


def test_asyncio_tasks_inherit_and_stay_isolated(tracing, fetch):
    @assay.trace
    async def job(i):
        await asyncio.sleep(0.001 * (5 - i))
        return assay.get_current_span().span_id

    @assay.trace
    async def root(tag):
        ids = await asyncio.gather(*(job(i) for i in range(5)))
        return assay.get_current_span().trace_id, ids

    async def main():
        return await asyncio.gather(root("a"), root("b"))

    (tid_a, _), (tid_b, _) = asyncio.run(main())
    assert tid_a != tid_b
    for tid in (tid_a, tid_b):
        trace = fetch(tid)
        (r,) = trace.search_spans(name="root")
        jobs = trace.search_spans(name="job")
        assert len(jobs) == 5
        assert {j.parent_id for j in jobs} == {r.span_id}


def test_traceparent_round_trip_in_process(tracing, fetch):
    with assay.start_span("client") as client:
        headers = inject_traceparent({"Content-Type": "json"})
    assert headers["traceparent"].startswith(f"00-{client.trace_id}-{client.span_id}-01")
    with continue_trace({"TraceParent": headers["traceparent"]}):
        child(1)
    trace = fetch(client.trace_id)
    (server,) = trace.search_spans(name="child")
    assert server.parent_id == client.span_id
    assert trace.info.name == "client"


def test_inject_without_a_span_adds_nothing():
    assert inject_traceparent() == {}


def test_continue_trace_with_garbage_headers_starts_a_new_trace(tracing, fetch):
    with continue_trace({"traceparent": "not-a-traceparent"}):
        child(1)
    trace = fetch()
    assert trace.spans[0].parent_id is None
