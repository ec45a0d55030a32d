#!/usr/bin/env python
"""How fast does assay find traces in a large store?  Run by hand:

    python bench/search.py             # 100,000 traces of 10 spans, 7 runs per query
    python bench/search.py --quick     # 10,000 traces, 3 runs per query, for a smoke test
    python bench/search.py --json out.json --keep-db /tmp/search.db
    python bench/search.py --postgres-uri postgresql://postgres@127.0.0.1:5432/test

Loads N traces of 10 spans each into a fresh SQLite store through the store's bulk
path (``SpanRecord``s built first, then handed to ``store.bulk_load``), logs feedback
on about 10% of them with ``store.log_assessment``, and reports the bulk load rate.
Then it times nine queries with ``max_results=100`` (status, tag, time range, span
name, span attribute equality, numeric span attribute range, feedback value, an OR
of two tags, full text), each three ways:
``store.search(..., include_spans=False)``, ``assay.search_traces(...,
return_type="list")`` with spans, and ``assay.count_traces(...)``. Every figure is
the median of R runs after one warm-up run; the runs of all queries are
interleaved, round robin.

The same data and queries run on PostgreSQL when a server is given
(``--postgres-uri``, default ``$ASSAY_BENCH_PG``, else the CI server at
127.0.0.1:5432/test), in a scratch schema that is dropped afterwards; if this
assay cannot open ``postgresql://`` stores, that column says so. When ``import
mlflow`` works, the first tenth of the same traces (10,000 in a full run) go into
an MLflow SQLite tracking store, the queries that MLflow's filter language can
express run through ``mlflow.search_traces``, and assay's speed-up is printed per
query. See bench/README.md for the method and the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    base_environment,
    dist_version,
    load_average,
    print_run_footer,
    print_summary,
    say,
    verdict,
)

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = "bench-search"
SEED = 20261125
SPANS_PER_TRACE = 10
BATCH_SPANS = 2_000                     # spans per MLflow log_spans call
BATCH_TRACES = BATCH_SPANS // SPANS_PER_TRACE
FEEDBACK_SHARE = 0.10                   # traces with feedback
PG_SCHEMA = "assay_bench_search"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"

TARGET_QUERY_MS = 50.0
TARGET_TEXT_MS = 300.0
TARGET_LOAD_RATE = 20_000.0
TARGET_SPEEDUP = 10.0
SLOW_MS = 5_000.0       # a query whose first call takes this long is measured by that call only


@dataclass(frozen=True)
class Sizes:
    traces: int           # assay traces (10 spans each)
    mlflow_traces: int    # the first this-many of the same traces go into MLflow
    runs: int             # timed runs per query and path, after one warm-up


FULL = Sizes(traces=100_000, mlflow_traces=10_000, runs=7)
QUICK = Sizes(traces=10_000, mlflow_traces=1_000, runs=3)


# -- the data ------------------------------------------------------------------------------------
#
# Deterministic: one random.Random(SEED) draws every trace in order, so trace i is the same
# in every run and in every store (the MLflow store gets traces 0 .. mlflow_traces-1).

DAY_MS = 86_400_000
BASE_MS = int(_dt.datetime(2026, 10, 1, tzinfo=_dt.timezone.utc).timestamp() * 1000)
SPREAD_DAYS = 30

ROOT_NAMES = [
    "chat", "answer_question", "summarize_document", "classify_ticket", "extract_entities",
    "translate", "draft_reply", "search_kb", "plan_trip", "code_review", "sql_agent",
    "research_agent", "rag_pipeline", "support_bot", "moderate_content", "generate_title",
    "route_request", "evaluate_answer", "rewrite_query", "onboarding_flow",
]
ROOT_TYPES = ["CHAIN", "AGENT"]
SPAN_KINDS: dict[str, list[str]] = {
    "LLM": ["llm_call", "generate_answer", "generate_summary", "classify", "extract",
            "rewrite", "grade", "plan", "reflect", "critique"],
    "CHAT_MODEL": ["chat_completion", "chat_openai", "chat_anthropic", "chat_mistral",
                   "chat_local", "chat_followup"],
    "RETRIEVER": ["retrieve_docs", "vector_search", "keyword_search", "hybrid_search",
                  "fetch_context", "kb_lookup"],
    "TOOL": ["web_search", "calculator", "get_weather", "send_email", "lookup_order",
             "issue_refund", "create_ticket", "run_sql", "http_get", "read_file"],
    "EMBEDDING": ["embed_query", "embed_documents", "embed_batch"],
    "RERANKER": ["rerank_documents", "rerank_cross_encoder"],
    "PARSER": ["parse_json", "parse_output", "validate_schema"],
    "CHAIN": ["format_prompt", "build_context", "postprocess", "merge_results"],
    "AGENT": ["agent_step", "tool_router", "planner_agent"],
    "UNKNOWN": ["cache_lookup", "guardrail", "log_metrics"],
}
SPAN_NAMES = [(name, kind) for kind, names in SPAN_KINDS.items() for name in names]  # 50
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini", "claude-sonnet-4", "claude-haiku-3-5",
          "gemini-2.5-flash", "llama-3.1-70b"]
MODEL_WEIGHTS = [25, 25, 10, 8, 10, 8, 9, 5]
EMBED_MODELS = ["text-embedding-3-small", "text-embedding-3-large", "bge-m3"]
ENVS = ["prod", "staging", "dev"]
ENV_WEIGHTS = [70, 20, 10]
ROUTES = ["/v1/chat", "/v1/search", "/v1/summarize", "/v1/tickets", "/v1/orders",
          "/v1/refunds", "/v1/agents", "/v1/translate"]
ROUTE_WEIGHTS = [30, 20, 12, 12, 10, 3, 8, 5]
USERS = 500
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1"]
CLIENTS = ["web", "mobile", "api", "slack"]
WORDS = (  # noqa: SIM905 - a paragraph is easier to read than a list of 190 strings
    "account access address agent answer api app balance bill billing book booking browser "
    "budget cache calendar card cart change charge chat check city client code config contact "
    "contract cost country customer data database date deadline delivery deploy detail device "
    "discount document draft email error estimate event export feature fee file filter flight "
    "form format hotel import invoice issue item key language latency limit link list login "
    "manager meeting message metric model month name network note notification offer order "
    "package page password payment plan policy price product profile project query quota rate "
    "receipt record region release report request reservation result review route schedule "
    "search server service session setting shipment size status storage subscription summary "
    "support table task team ticket time token total trip update upload usage user version "
    "warehouse week window workflow"
).split()
TEXT_WORD = "refund"        # the full-text query's word; the vocabulary above does not hold it
TEXT_SHARE = 0.02           # of root questions that mention it (plus /v1/refunds traffic)


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _attributes(rng: random.Random, kind: str, name: str) -> dict[str, Any]:
    if kind in ("LLM", "CHAT_MODEL"):
        return {
            "gen_ai.request.model": rng.choices(MODELS, MODEL_WEIGHTS)[0],
            "gen_ai.usage.input_tokens": min(int(rng.lognormvariate(6.5, 1.0)), 128_000),
            "gen_ai.usage.output_tokens": min(int(rng.lognormvariate(5.0, 0.8)), 16_000),
            "gen_ai.request.temperature": round(rng.uniform(0.0, 1.2), 2),
            "gen_ai.request.stream": rng.random() < 0.4,
        }
    if kind == "RETRIEVER":
        return {"retrieval.top_k": rng.choice((3, 5, 10, 20)),
                "retrieval.index": rng.choice(("docs-v3", "faq", "tickets", "products")),
                "retrieval.reranked": rng.random() < 0.5}
    if kind == "TOOL":
        return {"tool.name": name, "tool.cached": rng.random() < 0.2,
                "tool.timeout_ms": rng.choice((1000, 5000, 30000))}
    if kind == "EMBEDDING":
        return {"gen_ai.request.model": rng.choice(EMBED_MODELS),
                "embedding.dimensions": rng.choice((384, 1024, 1536, 3072))}
    if kind == "RERANKER":
        return {"rerank.model": "cross-encoder-ms-marco", "rerank.top_n": rng.choice((3, 5))}
    return {"component": name, "cached": rng.random() < 0.1}


def _io(rng: random.Random, kind: str, name: str) -> tuple[Any, Any]:
    if kind in ("LLM", "CHAT_MODEL"):
        return ({"messages": [{"role": "user", "content": _sentence(rng, 6, 14)}]},
                {"content": _sentence(rng, 6, 16)})
    if kind == "RETRIEVER":
        return ({"query": _sentence(rng, 3, 6)},
                [{"doc_id": f"doc-{rng.randrange(50_000)}", "text": _sentence(rng, 4, 8)}
                 for _ in range(2)])
    if kind == "TOOL":
        return {"args": {"q": _sentence(rng, 2, 5)}}, {"result": _sentence(rng, 3, 8)}
    if kind == "EMBEDDING":
        return {"texts": [_sentence(rng, 3, 6)]}, {"dimensions": 1536}
    return {"input": _sentence(rng, 2, 6)}, {"output": _sentence(rng, 2, 6)}


@dataclass(slots=True)
class GenSpan:
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    error: bool
    inputs: Any
    outputs: Any
    attributes: dict[str, Any]


@dataclass(slots=True)
class GenTrace:
    trace_id: str
    name: str
    start_ms: int
    duration_ms: int
    error: bool
    tags: dict[str, str]
    metadata: dict[str, str]
    spans: list[GenSpan]
    feedback: list[tuple[str, Any, str, int]]  # (name, value, source, created_time_ms)


def gen_trace(rng: random.Random) -> GenTrace:
    """One trace of SPANS_PER_TRACE spans: a root and nine children."""
    trace_id = f"{rng.getrandbits(128):032x}"
    name = rng.choice(ROOT_NAMES)
    start_ms = BASE_MS + rng.randrange(SPREAD_DAYS * DAY_MS)
    duration_ms = int(rng.lognormvariate(7.0, 0.7)) + 20      # median about 1.1 s
    error = rng.random() < 0.05
    route = rng.choices(ROUTES, ROUTE_WEIGHTS)[0]
    tags = {"env": rng.choices(ENVS, ENV_WEIGHTS)[0], "user": f"user-{rng.randrange(USERS):04d}",
            "route": route, "app_version": f"2.{rng.randrange(12)}.{rng.randrange(4)}"}
    metadata = {"session_id": f"s-{rng.getrandbits(40):010x}", "client": rng.choice(CLIENTS),
                "region": rng.choice(REGIONS)}
    question = _sentence(rng, 6, 16)
    if route == "/v1/refunds" or rng.random() < TEXT_SHARE:
        words = question.split()
        words.insert(rng.randrange(len(words) + 1), rng.choice((TEXT_WORD, TEXT_WORD + "s")))
        question = " ".join(words)
    start_ns = start_ms * 1_000_000
    end_ns = start_ns + duration_ms * 1_000_000
    root_id = f"{rng.getrandbits(64):016x}"
    root = GenSpan(root_id, None, name, rng.choice(ROOT_TYPES), start_ns, end_ns, error,
                   {"question": question}, None if error else {"answer": _sentence(rng, 8, 20)},
                   {"app.version": tags["app_version"], "app.cache_hit": rng.random() < 0.1,
                    "user.tier": rng.choice(("free", "pro", "enterprise"))})
    spans = [root]
    n_children = SPANS_PER_TRACE - 1
    slot = (end_ns - start_ns) // n_children
    error_child = rng.randrange(n_children) if error else -1
    for k in range(n_children):
        child_name, kind = rng.choice(SPAN_NAMES)
        parent = root_id if k == 0 or rng.random() < 0.6 else rng.choice(spans[1:]).span_id
        c_start = start_ns + k * slot + rng.randrange(max(slot // 4, 1))
        c_end = c_start + max(slot // 2, 1)
        inputs, outputs = _io(rng, kind, child_name)
        spans.append(GenSpan(f"{rng.getrandbits(64):016x}", parent, child_name, kind, c_start,
                             c_end, k == error_child, inputs,
                             None if k == error_child else outputs,
                             _attributes(rng, kind, child_name)))
    feedback: list[tuple[str, Any, str, int]] = []
    if rng.random() < FEEDBACK_SHARE:
        at = start_ms + duration_ms + rng.randrange(1, 3_600_000)
        correct = rng.random() >= 0.3
        if rng.random() < 0.1:   # an older judgement, overridden by the newer one below
            feedback.append(("correctness", not correct, "LLM_JUDGE", at - 60_000))
        feedback.append(("correctness", correct, "LLM_JUDGE", at))
        if rng.random() < 0.5:
            feedback.append(("helpfulness", rng.randint(1, 5), "HUMAN", at + 1_000))
    return GenTrace(trace_id, name, start_ms, duration_ms, error, tags, metadata, spans, feedback)


def gen_traces(n: int) -> Iterator[GenTrace]:
    rng = random.Random(SEED)
    for _ in range(n):
        yield gen_trace(rng)


# -- the queries ---------------------------------------------------------------------------------

TIME_FROM = BASE_MS + 12 * DAY_MS
TIME_TO = BASE_MS + 13 * DAY_MS


@dataclass(frozen=True)
class Query:
    key: str
    label: str
    assay: str
    mlflow: str | None      # the closest MLflow filter, or None when MLflow cannot express it
    target_ms: float
    note: str = ""


QUERIES = [
    Query("status", "status equality", "trace.status = 'ERROR'", "trace.status = 'ERROR'",
          TARGET_QUERY_MS),
    Query("tag", "tag equality", "tags.user = 'user-0042'", "tags.user = 'user-0042'",
          TARGET_QUERY_MS),
    Query("time", "time range (1 day of 30)",
          f"trace.timestamp_ms >= {TIME_FROM} AND trace.timestamp_ms < {TIME_TO}",
          f"trace.timestamp_ms >= {TIME_FROM} AND trace.timestamp_ms < {TIME_TO}",
          TARGET_QUERY_MS),
    Query("span_name", "span name", "span.name = 'rerank_documents'",
          "span.name = 'rerank_documents'", TARGET_QUERY_MS),
    Query("attr_eq", "span attribute equality",
          "span.attributes.gen_ai.request.model = 'claude-sonnet-4'",
          "span.attributes.gen_ai.request.model LIKE '%claude-sonnet-4%'", TARGET_QUERY_MS,
          "MLflow: LIKE, since its '=' on span attributes matches nothing"),
    Query("attr_range", "numeric span attribute range",
          "span.attributes.gen_ai.usage.input_tokens > 4000", None, TARGET_QUERY_MS,
          "MLflow compares span attributes as text only"),
    Query("feedback", "feedback value", "feedback.correctness = false",
          "feedback.correctness = 'false'", TARGET_QUERY_MS,
          "MLflow: the value quoted, as its parser requires"),
    Query("tag_or", "OR of two tags", "tags.route = '/v1/refunds' OR tags.user = 'user-0042'",
          None, TARGET_QUERY_MS, "MLflow has no OR"),
    Query("text", "full text", f"trace.text LIKE '%{TEXT_WORD}%'",
          f"trace.text LIKE '%{TEXT_WORD}%'", TARGET_TEXT_MS,
          "MLflow matches each span's whole JSON (its name and attributes too, such as "
          "the tool issue_refund), assay the spans' inputs and outputs: more traces match "
          "in MLflow"),
]


# -- timing --------------------------------------------------------------------------------------

@dataclass
class Timed:
    """One (query, path): a warm-up call, then R timed calls."""

    key: str
    fn: Callable[[], Any]
    result: Any = None
    times_ms: list[float] = field(default_factory=list)
    error: str | None = None

    single: bool = False      # the first call was so slow that it is the only measurement

    def run(self, timed: bool = True) -> None:
        if self.error is not None or self.single:
            return
        t0 = time.perf_counter()
        try:
            self.result = self.fn()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            return
        elapsed_ms = (time.perf_counter() - t0) * 1000
        if timed:
            self.times_ms.append(elapsed_ms)
        elif elapsed_ms >= SLOW_MS:
            # Repeating a call of several seconds would not change its figure by much, and
            # R of them would take minutes: the warm-up call is the single measurement.
            self.times_ms.append(elapsed_ms)
            self.single = True

    @property
    def median(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms and not self.error else None

    def to_json(self) -> dict[str, Any]:
        return {"median_ms": self.median, "runs_ms": self.times_ms, "error": self.error,
                "single_slow_run": self.single}


def run_interleaved(items: list[Timed], runs: int) -> None:
    """One warm-up of each, then ``runs`` rounds over all of them, starting each round from
    a different item, so that a slow patch of the machine hits all items alike."""
    for item in items:
        item.run(timed=False)
    for r in range(runs):
        k = (r * 7) % len(items) if items else 0
        for item in items[k:] + items[:k]:
            gc.collect()
            item.run()
        say(f"    round {r + 1}/{runs} done")


# -- assay ---------------------------------------------------------------------------------------

def to_records(t: GenTrace) -> list[Any]:
    from assay.store import SpanRecord

    dumps = json.dumps
    out = []
    for sp in t.spans:
        is_root = sp.parent_id is None
        out.append(SpanRecord(
            trace_id=t.trace_id, span_id=sp.span_id, parent_id=sp.parent_id, name=sp.name,
            span_type=sp.kind, start_time_ns=sp.start_ns, end_time_ns=sp.end_ns,
            status="ERROR" if sp.error else "OK",
            status_message="upstream timeout" if sp.error else None,
            inputs_json=dumps(sp.inputs, ensure_ascii=False),
            outputs_json=None if sp.outputs is None else dumps(sp.outputs, ensure_ascii=False),
            attributes=sp.attributes, events=[], experiment=EXPERIMENT,
            root_rank=2 if is_root else 0, trace_name=t.name if is_root else None,
            trace_tags=t.tags if is_root else {}, trace_metadata=t.metadata if is_root else {}))
    return out


def load_assay(store: Any, n: int) -> dict[str, Any]:
    """Build n traces' span records, load them through the store's bulk path, then
    log their feedback."""
    from assay.tracing.models import Assessment

    store.open()
    feedback: list[tuple[str, tuple[str, Any, str, int]]] = []
    t0 = time.perf_counter()
    records: list[Any] = []
    for t in gen_traces(n):
        records.extend(to_records(t))
        feedback.extend((t.trace_id, fb) for fb in t.feedback)
    generate_s = time.perf_counter() - t0
    spans = len(records)
    say(f"    generated {spans:,} span records in {generate_s:.1f} s")
    gc.collect()
    t0 = time.perf_counter()
    store.bulk_load(records)
    write_s = time.perf_counter() - t0
    del records
    total_s = generate_s + write_s

    # Feedback through the store's own method, one transaction per assessment, as
    # assay.log_feedback does: the id comes from the seeded generator, the rest as logged.
    rng = random.Random(SEED + 1)
    t0 = time.perf_counter()
    for trace_id, (name, value, source, created) in feedback:
        store.log_assessment(Assessment(
            assessment_id=f"{rng.getrandbits(128):032x}", trace_id=trace_id, name=name,
            kind="feedback", value=value, source_type=source,
            source_id="judge-v1" if source == "LLM_JUDGE" else "reviewer-1",
            created_time_ms=created))
    feedback_s = time.perf_counter() - t0
    return {"traces": n, "spans": spans, "write_s": write_s, "load_s": total_s,
            "rate": spans / write_s, "rate_with_generation": spans / total_s,
            "assessments": len(feedback), "assessment_s": feedback_s,
            "assessment_rate": len(feedback) / feedback_s if feedback_s else None}


def capture_sql(store: Any) -> Callable[[], list[tuple[str, Any]]]:
    """Record the statements the store's reader runs (for EXPLAIN)."""
    from sqlalchemy import event

    reader = store.sql._get_engines()[1]
    seen: list[tuple[str, Any]] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    event.listen(reader, "before_cursor_execute", before)

    def stop() -> list[tuple[str, Any]]:
        event.remove(reader, "before_cursor_execute", before)
        return seen

    return stop


def explain(store: Any, filter_string: str, *, count: bool = False) -> list[str]:
    """The plan of the main statement of store.search (or store.count) for this filter."""
    stop = capture_sql(store)
    try:
        if count:
            store.count(experiment=EXPERIMENT, filter_string=filter_string)
        else:
            store.search(experiment=EXPERIMENT, filter_string=filter_string, max_results=100,
                         include_spans=False)
    finally:
        seen = stop()
    selects = [(st, p) for st, p in seen if st.lstrip().upper().startswith("SELECT")]
    if not selects:
        return ["(no statement captured)"]
    statement, params = selects[0]
    reader = store.sql._get_engines()[1]
    dialect = reader.dialect.name
    prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
    with reader.connect() as conn:
        rows = conn.exec_driver_sql(prefix + statement, params).fetchall()
    if dialect == "sqlite":
        depth: dict[int, int] = {0: 0}
        out = []
        for node, parent, _, detail in rows:
            depth[node] = depth.get(parent, 0) + 1
            out.append("  " * (depth[node] - 1) + str(detail))
        return out
    return [str(r[0]) for r in rows]


def bench_assay(label: str, uri: str, sizes: Sizes, *, configure_global: bool,
                explain_all: bool) -> dict[str, Any]:
    """Load the data into the store at ``uri`` and time every query three ways."""
    import assay
    from assay.store import open_store

    store = open_store(uri)          # ConfigurationError: this assay cannot open it
    say(f"  loading {sizes.traces:,} traces x {SPANS_PER_TRACE} spans into {label} "
        "through store.bulk_load")
    load = load_assay(store, sizes.traces)
    say(f"  bulk_load: {load['spans']:,} spans in {load['write_s']:.1f} s = "
        f"{load['rate']:,.0f} spans/s (with data generation: {load['load_s']:.1f} s, "
        f"{load['rate_with_generation']:,.0f} spans/s)")
    say(f"  log_assessment: {load['assessments']:,} feedback in {load['assessment_s']:.1f} s "
        f"({load['assessment_rate']:,.0f}/s, one transaction each)")
    fts = getattr(store.sql, "_fts", None)
    say(f"  full-text index in use: {fts}")
    if configure_global:
        # search_traces/count_traces read through the configured store: a second store
        # object on the same database, with its own connections.
        assay.configure(store=uri, experiment=EXPERIMENT)
    searcher = assay if configure_global else None

    items: list[Timed] = []
    by: dict[tuple[str, str], Timed] = {}
    for q in QUERIES:
        paths: dict[str, Callable[[], Any]] = {
            "store": (lambda q=q: store.search(experiment=EXPERIMENT, filter_string=q.assay,
                                               max_results=100, include_spans=False)),
            "count": (lambda q=q: store.count(experiment=EXPERIMENT, filter_string=q.assay)),
        }
        if searcher is not None:
            paths["api"] = (lambda q=q: searcher.search_traces(
                q.assay, experiment=EXPERIMENT, max_results=100, return_type="list"))
            paths["count"] = (lambda q=q: searcher.count_traces(q.assay, experiment=EXPERIMENT))
        for path, fn in paths.items():
            item = Timed(f"{q.key}/{path}", fn)
            items.append(item)
            by[(q.key, path)] = item
    say(f"  timing {len(QUERIES)} queries x {len(items) // len(QUERIES)} paths: "
        f"1 warm-up + {sizes.runs} runs each, interleaved")
    gc.collect()
    run_interleaved(items, sizes.runs)

    out: dict[str, Any] = {"load": load, "fts": fts, "queries": {}}
    for q in QUERIES:
        row: dict[str, Any] = {"filter": q.assay, "target_ms": q.target_ms}
        for path in ("store", "api", "count"):
            item = by.get((q.key, path))
            if item is None:
                continue
            row[path] = item.to_json()
            if path == "store" and item.result is not None:
                row["returned"] = len(item.result.traces)
            if path == "api" and item.result is not None:
                row["returned_api"] = len(item.result)
                row["spans_returned_api"] = sum(len(t.spans) for t in item.result)
            if path == "count" and item.result is not None:
                row["matches"] = int(item.result)
        slow = any((row.get(p) or {}).get("median_ms") is not None
                   and row[p]["median_ms"] >= q.target_ms for p in ("store", "api"))
        if slow or explain_all:
            with contextlib.suppress(Exception):
                row["plan_search"] = explain(store, q.assay)
            with contextlib.suppress(Exception):
                row["plan_count"] = explain(store, q.assay, count=True)
        out["queries"][q.key] = row
    if configure_global:
        assay.shutdown()
    store.close()
    return out


# -- PostgreSQL ----------------------------------------------------------------------------------

def pg_scratch(uri: str, drop: bool) -> tuple[str, Callable[[], None]]:
    """A URI for a fresh scratch schema in the database of ``uri`` and its cleanup."""
    import psycopg

    conninfo = uri.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {PG_SCHEMA}")
    option = urllib.parse.quote(f"-csearch_path={PG_SCHEMA},public")
    scoped = uri + ("&" if "?" in uri else "?") + f"options={option}"

    def cleanup() -> None:
        if drop:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")

    return scoped, cleanup


def bench_postgres(uri: str | None, sizes: Sizes, keep: bool,
                   explain_all: bool) -> tuple[dict[str, Any] | None, str]:
    if not uri:
        return None, "skipped: no PostgreSQL URI (--postgres-uri or ASSAY_BENCH_PG)"
    from assay.errors import ConfigurationError
    from assay.store import open_store

    try:
        open_store(uri)
    except ConfigurationError as exc:
        return None, ("skipped: PostgreSQL store not available in this version "
                      f"({str(exc).splitlines()[0]})")
    try:
        scoped, cleanup = pg_scratch(uri, drop=not keep)
    except Exception as exc:
        return None, f"skipped: cannot prepare the scratch schema ({type(exc).__name__}: {exc})"
    try:
        return bench_assay(f"PostgreSQL (schema {PG_SCHEMA})", scoped, sizes,
                           configure_global=True, explain_all=explain_all), ""
    except Exception as exc:
        return None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    finally:
        with contextlib.suppress(Exception):
            cleanup()


# -- MLflow --------------------------------------------------------------------------------------

def bench_mlflow(tmp: Path, sizes: Sizes, assay_uri: str) -> tuple[dict[str, Any] | None, str]:
    try:
        import mlflow  # noqa: F401
    except Exception as exc:
        return None, f"skipped: mlflow is not importable ({type(exc).__name__}: {exc})"
    try:
        return _bench_mlflow(tmp, sizes, assay_uri), ""
    except Exception as exc:
        return None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"


def _bench_mlflow(tmp: Path, sizes: Sizes, assay_uri: str) -> dict[str, Any]:
    """Load MLflow, then time its queries and assay's (on the SQLite store at
    ``assay_uri``) in the same interleaved rounds, so that the speed-ups compare
    figures taken under the same machine conditions."""
    import mlflow
    from mlflow.entities import Span, TraceInfo, TraceLocation, TraceState
    from mlflow.entities.assessment import AssessmentSource, Feedback
    from mlflow.tracing.utils import build_otel_context
    from mlflow.tracking._tracking_service.utils import _get_store
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Status, StatusCode

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    exp_id = mlflow.create_experiment(EXPERIMENT,
                                      artifact_location=(tmp / "mlflow-artifacts").as_uri())
    store = _get_store()
    empty = Resource.get_empty()
    dumps = json.dumps
    n = sizes.mlflow_traces
    say(f"  loading the first {n:,} of the same traces into an MLflow SQLite tracking store "
        f"({type(store).__name__}.start_trace per trace, log_spans per {BATCH_SPANS:,} spans, "
        "create_assessment per feedback)")

    def spans_of(t: GenTrace, mlflow_id: str) -> list[Any]:
        out = []
        tid = int(t.trace_id, 16)
        for sp in t.spans:
            # As mlflow's LiveSpan records them: every attribute value JSON-encoded.
            attrs = {"mlflow.traceRequestId": dumps(mlflow_id),
                     "mlflow.spanType": dumps(sp.kind),
                     "mlflow.spanInputs": dumps(sp.inputs, ensure_ascii=False),
                     "mlflow.spanOutputs": dumps(sp.outputs, ensure_ascii=False)}
            attrs.update({k: dumps(v) for k, v in sp.attributes.items()})
            status = Status(StatusCode.ERROR, "upstream timeout") if sp.error \
                else Status(StatusCode.OK)
            otel = ReadableSpan(
                name=sp.name, context=build_otel_context(tid, int(sp.span_id, 16)),
                parent=None if sp.parent_id is None
                else build_otel_context(tid, int(sp.parent_id, 16)),
                start_time=sp.start_ns, end_time=sp.end_ns, attributes=attrs, status=status,
                resource=empty, events=[])
            out.append(Span(otel))
        return out

    start_s = spans_s = fb_s = 0.0
    pending: list[Any] = []
    n_spans = n_fb = 0
    t_all = time.perf_counter()
    next_report = time.perf_counter() + 15
    for i, t in enumerate(gen_traces(n)):
        mlflow_id = f"tr-{t.trace_id}"
        root = t.spans[0]
        info = TraceInfo(
            trace_id=mlflow_id, trace_location=TraceLocation.from_experiment_id(exp_id),
            request_time=t.start_ms, execution_duration=t.duration_ms,
            state=TraceState.ERROR if t.error else TraceState.OK,
            request_preview=dumps(root.inputs)[:1000],
            response_preview=None if root.outputs is None else dumps(root.outputs)[:1000],
            trace_metadata=dict(t.metadata), tags={**t.tags, "mlflow.traceName": t.name})
        t0 = time.perf_counter()
        store.start_trace(info)
        start_s += time.perf_counter() - t0
        pending.extend(spans_of(t, mlflow_id))
        if len(pending) >= BATCH_SPANS or i == n - 1:
            t0 = time.perf_counter()
            store.log_spans(exp_id, pending)
            spans_s += time.perf_counter() - t0
            n_spans += len(pending)
            pending = []
        last: dict[tuple[str, str], str] = {}
        for name, value, source, created in t.feedback:
            t0 = time.perf_counter()
            # A newer judgement of the same name and source overrides the older one, as in
            # assay's store: in MLflow that is an explicit `overrides`, which marks it invalid.
            logged = store.create_assessment(Feedback(
                name=name, value=value, trace_id=mlflow_id, create_time_ms=created,
                overrides=last.get((name, source)),
                source=AssessmentSource(source_type=source,
                                        source_id="judge-v1" if source == "LLM_JUDGE"
                                        else "reviewer-1")))
            last[(name, source)] = logged.assessment_id
            fb_s += time.perf_counter() - t0
            n_fb += 1
        if time.perf_counter() > next_report:
            say(f"    {i + 1:,}/{n:,} traces")
            next_report = time.perf_counter() + 15
    load = {"traces": n, "spans": n_spans, "assessments": n_fb,
            "start_trace_s": start_s, "log_spans_s": spans_s, "create_assessment_s": fb_s,
            "load_s": time.perf_counter() - t_all,
            "rate": n_spans / (start_s + spans_s)}
    say(f"  MLflow load: {n:,} traces / {n_spans:,} spans in {load['load_s']:.0f} s "
        f"(start_trace {start_s:.0f} s, log_spans {spans_s:.0f} s, create_assessment "
        f"{fb_s:.0f} s for {n_fb:,}); {load['rate']:,.0f} spans/s through the store")

    import assay
    from assay.store import open_store

    # For information: the same n traces MLflow holds, in an assay store of their own.
    say(f"  loading the same {n:,} traces into a second assay SQLite store, for the "
        "same-data comparison (information only)")
    same = open_store(f"sqlite:///{tmp / 'same-data.db'}")
    load_assay(same, n)
    astore = open_store(assay_uri)
    assay.configure(store=assay_uri, experiment=EXPERIMENT)
    items: list[Timed] = []
    by: dict[tuple[str, str], Timed] = {}
    for q in QUERIES:
        if q.mlflow is None:
            continue
        paths: dict[str, Callable[[], Any]] = {}
        for path, spans in (("nospans", False), ("api", True)):
            paths[path] = (lambda q=q, spans=spans: mlflow.search_traces(
                locations=[exp_id], filter_string=q.mlflow, max_results=100,
                return_type="list", include_spans=spans))
        paths["assay_store"] = (lambda q=q: astore.search(
            experiment=EXPERIMENT, filter_string=q.assay, max_results=100, include_spans=False))
        paths["assay_api"] = (lambda q=q: assay.search_traces(
            q.assay, experiment=EXPERIMENT, max_results=100, return_type="list"))
        paths["same_store"] = (lambda q=q: same.search(
            experiment=EXPERIMENT, filter_string=q.assay, max_results=100, include_spans=False))
        paths["same_spans"] = (lambda q=q: same.search(
            experiment=EXPERIMENT, filter_string=q.assay, max_results=100, include_spans=True))
        for path, fn in paths.items():
            item = Timed(f"mlflow/{q.key}/{path}", fn)
            items.append(item)
            by[(q.key, path)] = item
    say(f"  timing {len(items) // 6} MLflow-expressible queries x 2 (with and without spans) "
        f"in MLflow, in assay and in assay on the same {n:,} traces, in the same rounds: "
        f"1 warm-up + {sizes.runs} runs each, interleaved")
    gc.collect()
    try:
        run_interleaved(items, sizes.runs)
    finally:
        assay.shutdown()
        astore.close()
        same.close()
    queries: dict[str, Any] = {}
    for q in QUERIES:
        if q.mlflow is None:
            continue
        row: dict[str, Any] = {"filter": q.mlflow}
        for path in ("nospans", "api", "assay_store", "assay_api", "same_store", "same_spans"):
            item = by[(q.key, path)]
            row[path] = item.to_json()
            if path == "nospans" and item.result is not None:
                row["returned"] = len(item.result)
            if path == "same_store" and item.result is not None:
                row["returned_same"] = len(item.result.traces)
        queries[q.key] = row
    return {"load": load, "queries": queries, "experiment_id": exp_id}


# -- output --------------------------------------------------------------------------------------

def fmt_ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.1f}" if v < 100 else f"{v:.0f}")


def environment() -> dict[str, Any]:
    import sqlite3

    return {**base_environment(), "sqlite": sqlite3.sqlite_version,
            "psycopg": dist_version("psycopg"),
            "mlflow": dist_version("mlflow") or dist_version("mlflow-skinny")}


def print_results(title: str, res: dict[str, Any]) -> None:
    say(f"\n  {title}: median ms of the runs (max_results=100)")
    say(f"  {'query':<30} {'target':>7} {'store.search':>13} {'search_traces':>14} "
        f"{'count_traces':>13} {'returned':>9} {'matches':>8}")
    for q in QUERIES:
        row = res["queries"][q.key]
        cells = []
        for path in ("store", "api", "count"):
            part = row.get(path)
            if part is None:
                cells.append("-")
            elif part["error"]:
                cells.append("error")
            else:
                cells.append(fmt_ms(part["median_ms"]))
        say(f"  {q.label:<30} {'<' + fmt_ms(q.target_ms):>7} {cells[0]:>13} {cells[1]:>14} "
            f"{cells[2]:>13} {row.get('returned', '-'):>9} {row.get('matches', '-'):>8}")
        for path in ("store", "api", "count"):
            part = row.get(path)
            if part and part["error"]:
                say(f"      {path}: {part['error']}")
    say("  (store.search: include_spans=False; search_traces: return_type='list', with the "
        "spans; count_traces: the number of matches)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="10,000 traces (1,000 in MLflow), 3 runs per query")
    parser.add_argument("--traces", type=int, metavar="N", help="assay traces to load")
    parser.add_argument("--mlflow-traces", type=int, metavar="N",
                        help="MLflow traces to load (default: a tenth of --traces)")
    parser.add_argument("--runs", type=int, metavar="R", help="timed runs per query")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    parser.add_argument("--keep-db", metavar="PATH",
                        help="write the SQLite store to PATH (which must not exist) and keep it; "
                             "also keeps the PostgreSQL scratch schema")
    parser.add_argument("--postgres-uri", metavar="URI",
                        default=os.environ.get("ASSAY_BENCH_PG", DEFAULT_PG),
                        help="PostgreSQL server for the second column (default: $ASSAY_BENCH_PG, "
                             f"else {DEFAULT_PG}); 'none' skips it")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow comparison")
    parser.add_argument("--explain", action="store_true",
                        help="print the query plan of every query, not only of the slow ones")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    traces = args.traces or base.traces
    mlflow_traces = args.mlflow_traces or (max(traces // 10, 1) if args.traces
                                           else base.mlflow_traces)
    sizes = Sizes(traces=traces, mlflow_traces=mlflow_traces, runs=args.runs or base.runs)
    json_path = Path(args.json).resolve() if args.json else None
    keep_db = Path(args.keep_db).resolve() if args.keep_db else None
    if keep_db is not None and keep_db.exists():
        parser.error(f"--keep-db {keep_db}: the file exists; the store must be fresh")
    pg_uri = None if (args.postgres_uri or "").lower() in ("", "none") else args.postgres_uri

    started = time.perf_counter()
    env = environment()
    env["load_average_start"] = load_average()
    say(f"assay search benchmark ({'quick' if args.quick else 'full'} run), {env['date']}")
    say(f"python {env['python']} on {env['platform']}, {env['cpus']} CPUs; SQLite "
        f"{env['sqlite']}; assay {env['assay']} [{env['assay_commit']}], SQLAlchemy "
        f"{env['sqlalchemy']}, psycopg {env['psycopg'] or 'not installed'}, "
        f"mlflow {env['mlflow'] or 'not installed'}")
    say(f"sizes: {sizes.traces:,} traces x {SPANS_PER_TRACE} spans in assay, "
        f"{sizes.mlflow_traces:,} in MLflow; {sizes.runs} timed runs per query")
    cpus = env["cpus"] or 1
    if (env["load_average_start"] or [0])[0] >= cpus:
        say(f"warning: the 1-minute load average is {env['load_average_start'][0]} on {cpus} "
            "CPUs: other work competes for the CPUs and the figures will be noisier")

    results: dict[str, Any] = {"sizes": sizes.__dict__, "queries": [q.__dict__ for q in QUERIES]}
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="assay-bench-search-") as tmp_name:
        tmp = Path(tmp_name)
        os.chdir(tmp)
        try:
            db = keep_db or tmp / "search.db"
            say(f"\n[1/3] assay on SQLite: {db}")
            results["sqlite"] = bench_assay("SQLite", f"sqlite:///{db}", sizes,
                                            configure_global=True, explain_all=args.explain)
            results["sqlite"]["db_mb"] = sum(
                p.stat().st_size for p in db.parent.glob(db.name + "*")) / 1e6
            say(f"  store file: {results['sqlite']['db_mb']:,.0f} MB (with its WAL)")
            print_results("SQLite", results["sqlite"])

            say(f"\n[2/3] assay on PostgreSQL: {pg_uri or '(none)'}")
            pg, pg_note = bench_postgres(pg_uri, sizes, keep=keep_db is not None,
                                         explain_all=args.explain)
            results["postgres"] = pg
            results["postgres_note"] = pg_note or None
            if pg is None:
                say(f"  {pg_note}")
            else:
                print_results("PostgreSQL", pg)

            say("\n[3/3] MLflow")
            ml, ml_note = (None, "skipped: --no-mlflow") if args.no_mlflow \
                else bench_mlflow(tmp, sizes, f"sqlite:///{db}")
            results["mlflow"] = ml
            results["mlflow_note"] = ml_note or None
            if ml is None:
                say(f"  {ml_note}")
        finally:
            os.chdir(old_cwd)
    env["load_average_end"] = load_average()
    results["environment"] = env
    results["elapsed_s"] = time.perf_counter() - started
    results["targets"] = summarize(results, sizes)
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        say(f"figures written to {json_path}")
    return 0


def print_same_data(ml: dict[str, Any], sizes: Sizes) -> None:
    """For information (the targets use assay's figures on the 10x larger store):
    assay and MLflow on the same traces, so that both return the same pages."""
    rows = [(q, ml["queries"][q.key]) for q in QUERIES if q.key in ml["queries"]]
    if not rows or "same_store" not in rows[0][1]:
        return
    say(f"\n  For information, the same {sizes.mlflow_traces:,} traces in both (assay: "
        "store.search without and with spans, on a store holding only those traces)")
    say(f"  {'query':<30} {'mlflow, no spans':>17} {'assay':>8} {'x':>6} "
        f"{'mlflow, spans':>14} {'assay':>8} {'x':>6} {'returned':>9}")
    for q, mrow in rows:
        cells = []
        for mpath, apath in (("nospans", "same_store"), ("api", "same_spans")):
            m, a = mrow[mpath]["median_ms"], mrow[apath]["median_ms"]
            x = "-" if m is None or not a else f"{m / a:.1f}"
            cells.append(f"{fmt_ms(m):>{17 if mpath == 'nospans' else 14}} {fmt_ms(a):>8} "
                         f"{x:>6}")
        say(f"  {q.label:<30} {cells[0]} {cells[1]} "
            f"{mrow.get('returned', '-')}/{mrow.get('returned_same', '-'):>5}")
    say("  (returned: MLflow's page / assay's page)")


def summarize(results: dict[str, Any], sizes: Sizes) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def target(figure: str, value: str, goal: str, ok: bool | None) -> None:
        rows.append({"figure": figure, "value": value, "target": goal, "ok": ok,
                     "result": verdict(ok)})

    sq = results["sqlite"]
    pg = results.get("postgres")
    ml = results.get("mlflow")

    target("SQLite bulk load (store.bulk_load)", f"{sq['load']['rate']:,.0f} spans/s",
           f">= {TARGET_LOAD_RATE:,.0f}/s", sq["load"]["rate"] >= TARGET_LOAD_RATE)
    if pg is not None:
        target("PostgreSQL bulk load (info)", f"{pg['load']['rate']:,.0f} spans/s", "(info)",
               None)
    for q in QUERIES:
        for db_label, res in (("SQLite", sq), ("PostgreSQL", pg)):
            if res is None:
                continue
            row = res["queries"][q.key]
            for path, path_label in (("store", "store.search"), ("api", "search_traces")):
                part = row.get(path)
                if part is None:
                    continue
                med = part["median_ms"]
                goal = f"< {q.target_ms:.0f} ms" if db_label == "SQLite" else "(info)"
                ok = None if db_label != "SQLite" else (med is not None and med < q.target_ms)
                target(f"{db_label} {q.label}, {path_label}",
                       "error" if med is None else f"{fmt_ms(med)} ms", goal, ok)

    if ml is not None:
        say("\n  MLflow comparison: assay on "
            f"{sizes.traces:,} traces against MLflow on {sizes.mlflow_traces:,} traces "
            "(10x fewer, as the issue asks); speed-up = MLflow median / assay median, "
            "both timed in the same interleaved rounds")
        say(f"  {'query':<30} {'mlflow, no spans':>17} {'assay store.search':>19} "
            f"{'x':>6} {'mlflow, spans':>14} {'assay search_traces':>20} {'x':>6} "
            f"{'returned':>9}")
    for q in QUERIES:
        if ml is None:
            break
        mrow = ml["queries"].get(q.key)
        if mrow is None:
            say(f"  {q.label:<30} not expressible in MLflow ({q.note})")
            target(f"speed-up vs MLflow, {q.label}", "n/a", f">= {TARGET_SPEEDUP:.0f}x", None)
            continue
        parts = []
        for mpath, apath in (("nospans", "assay_store"), ("api", "assay_api")):
            m = mrow[mpath]["median_ms"]
            a = (mrow.get(apath) or {}).get("median_ms")
            x = m / a if (m is not None and a) else None
            parts.append((m, a, x))
            label = "without spans" if mpath == "nospans" else "with spans"
            target(f"speed-up vs MLflow, {q.label}, {label}",
                   "error" if x is None else f"{x:.1f}x", f">= {TARGET_SPEEDUP:.0f}x",
                   None if x is None else x >= TARGET_SPEEDUP)
        (m0, a0, x0), (m1, a1, x1) = parts
        star = ["*" if mrow[p].get("single_slow_run") else "" for p in ("nospans", "api")]
        x0s = "-" if x0 is None else f"{x0:.1f}"
        x1s = "-" if x1 is None else f"{x1:.1f}"
        say(f"  {q.label:<30} {fmt_ms(m0) + star[0]:>17} {fmt_ms(a0):>19} {x0s:>6} "
            f"{fmt_ms(m1) + star[1]:>14} {fmt_ms(a1):>20} {x1s:>6} "
            f"{mrow.get('returned', '-'):>9}")
        for mpath in ("nospans", "api", "assay_store", "assay_api"):
            if mrow[mpath]["error"]:
                say(f"      {mpath}: {mrow[mpath]['error']}")
        if q.note:
            say(f"      note: {q.note}; MLflow filter: {q.mlflow}")
    if ml is not None:
        say(f"  (*: the first call took {SLOW_MS / 1000:.0f} s or more, so that call is the only "
            "measurement; every other MLflow figure is a median like assay's)")
        print_same_data(ml, sizes)
    if ml is None:
        target("speed-up vs MLflow", "skipped", f">= {TARGET_SPEEDUP:.0f}x", None)

    # query plans of the slow ones (or of all with --explain)
    for db_label, res in (("SQLite", sq), ("PostgreSQL", pg)):
        if res is None:
            continue
        for q in QUERIES:
            row = res["queries"][q.key]
            if "plan_search" not in row:
                continue
            say(f"\n  plan on {db_label}, {q.label}: {q.assay}")
            for line in row["plan_search"]:
                say(f"    {line}")
            if "plan_count" in row:
                say("   count_traces:")
                for line in row["plan_count"]:
                    say(f"    {line}")

    say("\nSummary")
    if results.get("postgres_note"):
        say(f"  PostgreSQL: {results['postgres_note']}")
    if results.get("mlflow_note"):
        say(f"  MLflow: {results['mlflow_note']}")
    print_summary(rows)
    fails = [r for r in rows if r["ok"] is False]
    passes = [r for r in rows if r["ok"] is True]
    say(f"  {len(passes)} PASS, {len(fails)} FAIL")
    print_run_footer(results["environment"], results["elapsed_s"])
    return rows


if __name__ == "__main__":
    sys.exit(main())
