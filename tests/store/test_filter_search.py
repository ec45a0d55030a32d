"""search_traces / count_traces end to end: every filter field and operator over a
fixed corpus on a real SQLite file, with exact sets of traces.

The corpus is built once per module through the public tracing API, on a
manual clock so that timestamps and durations are exact. Each trace is known by
a label (also its ``case`` tag); every assertion compares label sets.
Hostile data (typed values, encodings, odd keys, assessments, injection) is in
``test_filter_hostile.py``, which reuses the helpers here.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, event

import assay
from assay.tracing import _runtime

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR_MS = 3_600_000


# -- building a corpus --------------------------------------------------------------------------


class ManualClock:
    """The tracer's clock (ns since the epoch): it only moves when told to."""

    def __init__(self) -> None:
        self.now_ns = T0_MS * 1_000_000

    def __call__(self) -> int:
        return self.now_ns

    def at(self, hours: float) -> None:
        self.now_ns = (T0_MS + round(hours * HOUR_MS)) * 1_000_000

    def advance(self, ms: float) -> None:
        self.now_ns += round(ms * 1_000_000)


def install_clock() -> ManualClock:
    clock = ManualClock()
    _runtime.current().clock = clock
    return clock


@dataclass
class Child:
    name: str
    type: str = "LLM"
    ms: float = 1
    attrs: dict[str, Any] = field(default_factory=dict)      # start_span(attributes=)
    set_attrs: dict[str, Any] = field(default_factory=dict)  # span.set_attribute
    inputs: Any = None
    outputs: Any = None
    fail: bool = False  # raises ValueError inside the span; the parent catches it


@dataclass
class Case:
    label: str
    hours: float  # start, hours after T0
    name: str = "probe"
    type: str = "CHAIN"
    inputs: Any = None
    outputs: Any = None
    children: tuple[Child, ...] = ()
    extra_ms: float = 0  # root time after its children
    attrs: dict[str, Any] = field(default_factory=dict)
    set_attrs: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    fail: bool = False  # the root raises: the trace is ERROR


def _child(child: Child, clock: ManualClock) -> None:
    try:
        with assay.start_span(child.name, span_type=child.type, attributes=child.attrs,
                              inputs=child.inputs) as span:
            for key, value in child.set_attrs.items():
                span.set_attribute(key, value)
            clock.advance(child.ms)
            if child.outputs is not None:
                span.set_outputs(child.outputs)
            if child.fail:
                raise ValueError("flaky failure")
    except ValueError:
        pass


def record(case: Case, clock: ManualClock) -> str:
    """Trace ``case`` as an application would; its trace id."""
    clock.at(case.hours)
    trace_id = ""
    try:
        with assay.start_span(case.name, span_type=case.type, attributes=case.attrs,
                              inputs=case.inputs) as root:
            trace_id = root.trace_id
            for key, value in case.set_attrs.items():
                root.set_attribute(key, value)
            assay.update_current_trace(tags={"case": case.label, **case.tags},
                                       metadata=case.metadata or None)
            for child in case.children:
                _child(child, clock)
            clock.advance(case.extra_ms)
            if case.outputs is not None:
                root.set_outputs(case.outputs)
            if case.fail:
                raise RuntimeError("backend down")
    except RuntimeError:
        pass
    assert len(trace_id) == 32
    return trace_id


@assay.trace(span_type="AGENT", attributes={"lang": "en"})
def greet(name: str) -> str:
    assay.update_current_trace(tags={"case": "greeting"})
    _runtime.current().clock.advance(3)  # type: ignore[attr-defined]
    return f"Hello, {name}!"


def record_pending(clock: ManualClock, hours: float) -> str:
    """A trace whose root never ends (IN_PROGRESS): only its child is stored."""
    clock.at(hours)
    out: list[str] = []

    def run() -> None:
        # In a thread of its own, so the open root is nobody else's parent.
        scope = assay.start_span("pending", span_type="CHAIN")
        root = scope.__enter__()
        out.append(root.trace_id)
        with assay.start_span("step", span_type="LLM", inputs={"x": 1}) as step:
            clock.advance(3)
            step.set_outputs("partial")

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out[0]


class Corpus:
    """Trace ids by label, and searches that answer in labels."""

    def __init__(self, ids: dict[str, str]) -> None:
        self.ids = dict(ids)
        self.labels_by_id = {v: k for k, v in ids.items()}

    def expand(self, filter_string: str) -> str:
        """``<label>`` in a filter becomes that trace's id."""
        return re.sub(r"<(\w+)>", lambda m: self.ids[m.group(1)], filter_string)

    def _label(self, trace_id: str) -> str:
        label = self.labels_by_id.get(trace_id)
        assert label is not None, f"a trace that is not in the corpus: {trace_id}"
        return label

    def search(self, filter_string: str | None = None, **kwargs: Any) -> list[str]:
        found = assay.search_traces(self.expand(filter_string) if filter_string else None,
                                    max_results=1000, include_spans=False,
                                    return_type="list", **kwargs)
        assert found.next_page_token is None
        return [self._label(t.info.trace_id) for t in found]

    def labels(self, filter_string: str | None = None, **kwargs: Any) -> set[str]:
        found = self.search(filter_string, **kwargs)
        assert len(found) == len(set(found)), f"a trace listed twice: {found}"
        return set(found)

    def count(self, filter_string: str | None = None, **kwargs: Any) -> int:
        return assay.count_traces(self.expand(filter_string) if filter_string else None,
                                  **kwargs)

    def walk(self, page_size: int, *, filter_string: str | None = None,
             order_by: list[str] | None = None,
             between_pages: Callable[[int], None] | None = None) -> list[str]:
        """Every page from the first to the last, following next_page_token."""
        seen: list[str] = []
        token = None
        for page_no in range(1000):
            page = assay.search_traces(self.expand(filter_string) if filter_string else None,
                                       order_by=order_by, max_results=page_size,
                                       page_token=token, include_spans=False,
                                       return_type="list")
            assert len(page) <= page_size
            seen.extend(self._label(t.info.trace_id) for t in page)
            token = page.next_page_token
            if token is None:
                return seen
            assert len(page) == page_size
            if between_pages is not None:
                between_pages(page_no)
        raise AssertionError("pagination did not end")


def labels(text: str) -> frozenset[str]:
    return frozenset(text.split())


# -- the corpus ---------------------------------------------------------------------------------

MAIN = [
    Case("chat_ok", 0, "chat", inputs={"question": "How do I reset my password?"},
         outputs="Open Settings and choose Reset.", extra_ms=10,
         children=(Child("call_llm", "LLM", 40,
                         attrs={"model": "gpt-4o", "gen_ai.usage.input_tokens": 1200,
                                "temperature": 0.7, "stream": True},
                         inputs={"prompt": "reset password"},
                         outputs="Open Settings and choose Reset."),),
         tags={"env": "prod", "team": "search", "tier": "gold"},
         metadata={"user": "alice", "region": "eu"}),
    Case("chat_err", 12, "chat", inputs={"question": "What is the refund policy?"}, fail=True,
         extra_ms=5,
         children=(Child("search_docs", "TOOL", 20, attrs={"k": 3}, set_attrs={"tool.name": "web"},
                         inputs={"query": "refund policy"}, outputs=["doc-1", "doc-2"]),),
         tags={"env": "staging", "team": "search"}, metadata={"user": "bob", "region": "us"}),
    Case("summ_mixed", 24, "summarize", inputs={"text": "Quarterly report for ACME"},
         outputs="ACME grew 12%",
         children=(Child("A", "LLM", 100,
                         attrs={"model": "claude-3", "gen_ai.usage.input_tokens": 300},
                         inputs={"prompt": "summarize"}, outputs="ACME grew 12%"),
                   Child("B", "TOOL", 5, attrs={"k": 10}, inputs={"url": "https://acme.example"},
                         outputs="ok")),
         tags={"env": "prod", "team": "docs"}, metadata={"user": "carol"}),
    Case("summ_same", 36, "summarize", inputs={"text": "Meeting notes"},
         outputs="Short notes [draft]", extra_ms=3,
         children=(Child("A", "TOOL", 7, set_attrs={"k": 5, "model": "gpt-4o"},
                         inputs={"q": "notes"}, outputs="noted"),),
         tags={"env": "dev"}),
    Case("caught", 48, "Chat", inputs={"question": "Retry?"}, outputs="recovered after retry",
         extra_ms=5,
         children=(Child("flaky", "TOOL", 15, attrs={"retry": 2}, inputs={"attempt": 1},
                         fail=True),),
         tags={"env": "prod", "team": ""}, metadata={"user": "alice"}),
    Case("retriever", 60, "search_docs", "RETRIEVER", inputs={"query": "hello world"},
         outputs=["doc-7"], extra_ms=250,
         children=(Child("embed", "EMBEDDING", 2, inputs={"text": "hello world"},
                         outputs=[0.1, 0.2]),
                   Child("rerank", "RERANKER", 8, attrs={"k": 4}, inputs={"docs": ["doc-7"]},
                         outputs=["doc-7"])),
         tags={"team": "docs"}),
    Case("big_tokens", 72, "chat", inputs={"question": "Tell me a long 5* story"},
         outputs="Once upon a time", extra_ms=100,
         children=(Child("call_llm", "LLM", 900,
                         attrs={"model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 50000,
                                "temperature": 0},
                         inputs={"prompt": "long story"}, outputs="Once upon a time"),),
         tags={"env": "PROD", "tier": "silver"}, metadata={"region": "eu"}),
]
# greeting (84 h, @assay.trace) and pending (96 h, IN_PROGRESS) are recorded apart.

OTHER = [  # experiment "other": matches many filters, must never leak into "test"
    Case("other_chat", 0, "chat", inputs={"question": "Hello World"}, fail=True,
         children=(Child("call_llm", "LLM", 40, attrs={"model": "gpt-4o", "k": 3},
                         inputs={"prompt": "refund policy"}, outputs="Hello"),),
         tags={"env": "prod", "team": "search"}, metadata={"user": "alice"}),
    Case("other_summ", 24, "summarize", inputs={"text": "ACME"}, outputs="ok",
         tags={"env": "dev"}),
]

ALL = labels("chat_ok chat_err summ_mixed summ_same caught retriever big_tokens greeting "
             "pending")


def traced(uri: str, cases: list[Case],
           experiment: str = "test") -> tuple[dict[str, str], ManualClock]:
    """``cases`` traced into the store at ``uri`` on a manual clock: their ids by
    label, and the clock."""
    assay.configure(store=uri, experiment=experiment, flush_interval_ms=50)
    clock = install_clock()
    return {case.label: record(case, clock) for case in cases}, clock


@pytest.fixture(scope="module")
def corpus_db(module_store_uri: str) -> Iterator[tuple[str, dict[str, str]]]:
    uri = module_store_uri
    ids, clock = traced(uri, MAIN)
    clock.at(84)
    greet("World")
    ids["greeting"] = assay.get_last_trace_id() or ""
    ids["pending"] = record_pending(clock, 96)
    assert assay.flush(timeout_s=30)
    assay.log_feedback(ids["chat_ok"], "correct", True)
    assay.log_feedback(ids["chat_err"], "correct", False)
    ids.update(traced(uri, OTHER, experiment="other")[0])
    assert assay.flush(timeout_s=30)
    assay.log_feedback(ids["other_chat"], "correct", True)
    assay.shutdown()
    yield uri, ids


@pytest.fixture
def corpus(corpus_db: tuple[str, dict[str, str]]) -> Corpus:
    uri, ids = corpus_db
    assay.configure(store=uri, experiment="test", flush_interval_ms=50)
    return Corpus(ids)


def test_the_corpus_is_what_the_tests_assume(corpus):
    everything = assay.search_traces(return_type="list", max_results=1000)
    by_label = {corpus.labels_by_id[t.info.trace_id]: t for t in everything}
    assert set(by_label) == ALL
    info = {k: (t.info.name, t.info.state, t.info.timestamp_ms - T0_MS, t.info.execution_time_ms)
            for k, t in by_label.items()}
    assert info == {
        "chat_ok": ("chat", "OK", 0, 50.0),
        "chat_err": ("chat", "ERROR", 12 * HOUR_MS, 25.0),
        "summ_mixed": ("summarize", "OK", 24 * HOUR_MS, 105.0),
        "summ_same": ("summarize", "OK", 36 * HOUR_MS, 10.0),
        "caught": ("Chat", "OK", 48 * HOUR_MS, 20.0),
        "retriever": ("search_docs", "OK", 60 * HOUR_MS, 260.0),
        "big_tokens": ("chat", "OK", 72 * HOUR_MS, 1000.0),
        "greeting": ("greet", "OK", 84 * HOUR_MS, 3.0),
        "pending": ("step", "IN_PROGRESS", 96 * HOUR_MS, None),
    }
    flaky = next(s for s in by_label["caught"].spans if s.name == "flaky")
    assert flaky.status == "ERROR"
    search_docs = next(s for s in by_label["chat_err"].spans if s.name == "search_docs")
    assert search_docs.attributes == {"k": 3, "tool.name": "web"}
    assert corpus.labels(experiment="other") == {"other_chat", "other_summ"}


# -- the table: filter -> exact set -------------------------------------------------------------

# NOT LIKE on SQLite compiles to NOT (col GLOB ?): a regression test that it neither warns
# nor finds the wrong set.
NOT_LIKE_CASES: list[tuple[str, str]] = []


def glob_not_like(filter_string: str, expected: str) -> Any:
    """A case-sensitive NOT LIKE entry: the set is checked now with the warning ignored."""
    NOT_LIKE_CASES.append((filter_string, expected))
    return pytest.param(filter_string, expected)


CASES: list[Any] = [
    # trace.status and its aliases
    ("trace.status = 'OK'",
     "chat_ok summ_mixed summ_same caught retriever big_tokens greeting"),
    ("trace.status = 'ERROR'", "chat_err"),
    ("trace.status = 'IN_PROGRESS'", "pending"),
    ("attributes.status = 'ERROR'", "chat_err"),
    ("attribute.state = 'ERROR'", "chat_err"),
    ("status = 'ERROR'", "chat_err"),
    ("`status` = 'ERROR'", "chat_err"),
    ("\"status\" = 'ERROR'", "chat_err"),
    ("trace.state != 'OK'", "chat_err pending"),
    ("trace.status IN ('ERROR', 'IN_PROGRESS')", "chat_err pending"),
    ("trace.status NOT IN ('OK', 'ERROR')", "pending"),
    ("trace.status LIKE 'ERR%'", "chat_err"),
    ("trace.status LIKE 'error'", ""),
    ("trace.status ILIKE 'error'", "chat_err"),
    glob_not_like("trace.status NOT LIKE 'O%'", "chat_err pending"),
    ("trace.status RLIKE '^IN_'", "pending"),
    ("trace.status = 'ok'", ""),
    # trace.name: LIKE is case-sensitive, ILIKE is not; _ and % are wildcards
    ("trace.name = 'chat'", "chat_ok chat_err big_tokens"),
    ("trace.name = 'Chat'", "caught"),
    ("trace.name != 'chat'", "summ_mixed summ_same caught retriever greeting pending"),
    ("trace.name LIKE 'chat'", "chat_ok chat_err big_tokens"),
    ("trace.name ILIKE 'chat'", "chat_ok chat_err big_tokens caught"),
    ("trace.name LIKE 'C%'", "caught"),
    ("trace.name ILIKE 'C%'", "chat_ok chat_err big_tokens caught"),
    glob_not_like("trace.name NOT LIKE 'c%'",
                  "summ_mixed summ_same caught retriever greeting pending"),
    ("trace.name NOT ILIKE 'c%'", "summ_mixed summ_same retriever greeting pending"),
    ("trace.name LIKE 'search_docs'", "retriever"),
    ("trace.name LIKE 'search%docs'", "retriever"),
    ("trace.name LIKE 's_mmarize'", "summ_mixed summ_same"),
    ("trace.name LIKE '%a%'",
     "chat_ok chat_err big_tokens caught summ_mixed summ_same retriever"),
    ("trace.name RLIKE '^s'", "summ_mixed summ_same retriever pending"),
    ("trace.name RLIKE 'at$'", "chat_ok chat_err big_tokens caught"),
    ("trace.name IN ('greet', 'step')", "greeting pending"),
    ("trace.name NOT IN ('chat', 'summarize')", "caught retriever greeting pending"),
    ("name = 'greet'", "greeting"),
    ("`name` = 'greet'", "greeting"),
    ("attributes.name = 'greet'", "greeting"),
    ("TRACE.NAME = 'greet'", "greeting"),
    ("trace.name IS NULL", ""),
    ("trace.name IS NOT NULL", " ".join(ALL)),
    # timestamps: numbers (ms since the epoch) and ISO dates (naive = UTC)
    ("trace.timestamp_ms = 1767312000000", "summ_mixed"),
    ("trace.timestamp_ms = '2026-01-02'", "summ_mixed"),
    ("trace.timestamp_ms >= '2026-01-03'", "caught retriever big_tokens greeting pending"),
    ("trace.timestamp_ms < '2026-01-02T00:00:00Z'", "chat_ok chat_err"),
    ("trace.timestamp_ms <= 1767268800000", "chat_ok chat_err"),
    ("trace.timestamp_ms > '2026-01-02T06:00:00+02:00'",
     "summ_same caught retriever big_tokens greeting pending"),
    ("trace.timestamp_ms > '2026-01-02' AND trace.timestamp_ms < '2026-01-04'",
     "summ_same caught retriever"),
    ("trace.timestamp_ms IN ('2026-01-01', '2026-01-04T12:00:00Z')", "chat_ok greeting"),
    ("trace.timestamp_ms NOT IN ('2026-01-01', 1767268800000)",
     "summ_mixed summ_same caught retriever big_tokens greeting pending"),
    ("trace.timestamp_ms != '2026-01-05'",
     "chat_ok chat_err summ_mixed summ_same caught retriever big_tokens greeting"),
    ("trace.timestamp_ms > '2026-01-05 00:00:00'", ""),
    ("trace.timestamp_ms >= '2026-01-05 00:00:00'", "pending"),
    ("timestamp > '2026-01-04'", "greeting pending"),
    ("start_time_ms <= '2026-01-01T12:00'", "chat_ok chat_err"),
    ("request_time >= '2026-01-04T12:00:00.000Z'", "greeting pending"),
    ("trace.timestamp_ms IS NOT NULL", " ".join(ALL)),
    # end_time_ms = start + duration; an unfinished trace has none
    ("trace.end_time_ms > '2026-01-04T00:00:00.500Z'", "big_tokens greeting"),
    ("end_time = '2026-01-04T00:00:01Z'", "big_tokens"),
    ("trace.end_time_ms <= 1767225600050", "chat_ok"),
    ("trace.end_time_ms < 1767225600050", ""),
    ("trace.end_time_ms IS NULL", "pending"),
    ("trace.end_time_ms IS NOT NULL",
     "chat_ok chat_err summ_mixed summ_same caught retriever big_tokens greeting"),
    # execution_time_ms and its aliases
    ("trace.execution_time_ms > 100", "summ_mixed retriever big_tokens"),
    ("trace.execution_time_ms > 105", "retriever big_tokens"),
    ("trace.execution_time_ms >= 105", "summ_mixed retriever big_tokens"),
    ("trace.execution_time_ms < 20", "summ_same greeting"),
    ("trace.execution_time_ms <= 20", "summ_same greeting caught"),
    ("trace.execution_time_ms = 50", "chat_ok"),
    ("trace.execution_time_ms = '50'", "chat_ok"),
    ("trace.execution_time_ms = 50.0", "chat_ok"),
    ("trace.execution_time_ms != 50",
     "chat_err summ_mixed summ_same caught retriever big_tokens greeting"),
    ("trace.execution_time_ms IN (10, 25)", "summ_same chat_err"),
    ("trace.execution_time_ms NOT IN (10, 25, 1000)",
     "chat_ok summ_mixed caught retriever greeting"),
    ("trace.execution_time_ms IS NULL", "pending"),
    ("duration_ms > 500", "big_tokens"),
    ("execution_time > 500", "big_tokens"),
    ("attributes.execution_time_ms > 500", "big_tokens"),
    ("trace.execution_duration >= 1e3", "big_tokens"),
    # ids
    ("trace.request_id = '<chat_ok>'", "chat_ok"),
    ("request_id = '<chat_ok>'", "chat_ok"),
    ("trace_id IN ('<chat_ok>', '<pending>')", "chat_ok pending"),
    ("trace.id != '<chat_ok>'",
     "chat_err summ_mixed summ_same caught retriever big_tokens greeting pending"),
    ("trace.request_id NOT IN ('<chat_ok>', '<chat_err>', '<greeting>')",
     "summ_mixed summ_same caught retriever big_tokens pending"),
    ("trace.request_id = '<other_chat>'", ""),
    # run_id / client_request_id: these traces belong to no run
    ("run_id IS NULL", " ".join(ALL)),
    ("trace.run_id IS NOT NULL", ""),
    ("trace.run_id = 'abc'", ""),
    ("trace.client_request_id IS NULL", " ".join(ALL)),
    # request / response (root span inputs and outputs)
    ("trace.request LIKE '%password%'", "chat_ok"),
    ("trace.request LIKE '%Password%'", ""),
    ("trace.request ILIKE '%HELLO%'", "retriever"),
    glob_not_like("trace.request NOT LIKE '%question%'",
                  "summ_mixed summ_same retriever greeting"),
    ("trace.request RLIKE 'reset|refund'", "chat_ok chat_err"),
    ("trace.response LIKE '%Reset%'", "chat_ok"),
    ("trace.response LIKE '%reset%'", ""),
    ("trace.response ILIKE '%reset%'", "chat_ok"),
    ("trace.response LIKE '%Hello, World!%'", "greeting"),
    ("trace.request IS NULL", "pending"),
    # trace.text: every span's inputs and outputs; short patterns must work too
    ("trace.text LIKE '%Hello%'", "greeting"),
    ("trace.text LIKE '%hello%'", "retriever"),
    ("trace.text ILIKE '%hello%'", "greeting retriever"),
    ("trace.text ILIKE '%HELLO WORLD%'", "retriever"),
    ("trace.text ILIKE '%HELLO, WORLD%'", "greeting"),
    ("trace.text LIKE '%refund%'", "chat_err"),
    ("trace.text LIKE '%ACME%'", "summ_mixed"),
    ("trace.text LIKE '%acme%'", "summ_mixed"),
    ("trace.text LIKE '%Acme%'", ""),
    ("trace.text NOT LIKE '%ACME%'", " ".join(ALL - {"summ_mixed"})),
    ("trace.text LIKE '%Ac%'", ""),
    ("trace.text ILIKE '%Ac%'", "summ_mixed"),
    ("trace.text LIKE '%12%'", "summ_mixed"),
    ("trace.text LIKE '%!%'", "greeting"),
    ("trace.text LIKE '%W%'", "chat_err greeting"),
    ("trace.text LIKE '%w%'", "chat_ok retriever summ_mixed"),
    ("trace.text ILIKE '%w%'", "chat_ok retriever summ_mixed chat_err greeting"),
    ("trace.text NOT ILIKE '%o%'", "pending"),
    ("trace.text LIKE '%y?%'", "chat_err caught"),
    ("trace.text LIKE '%[draft]%'", "summ_same"),
    ("trace.text LIKE '%5*%'", "big_tokens"),
    ("trace.text LIKE '%doc_7%'", "retriever"),
    ("trace.text LIKE '%policy_%'", "chat_err"),
    ("trace.text LIKE '%partial%'", "pending"),
    ("trace.text LIKE '%zzz%'", ""),
    # tags: != and NOT IN need the key; IS NULL means the key is missing
    ("tags.env = 'prod'", "chat_ok summ_mixed caught"),
    ("tags.env != 'prod'", "chat_err summ_same big_tokens"),
    ("tags.env NOT IN ('prod', 'dev')", "chat_err big_tokens"),
    ("tags.env IN ('prod', 'dev')", "chat_ok summ_mixed caught summ_same"),
    ("tags.env IS NULL", "retriever greeting pending"),
    ("tags.env IS NOT NULL", "chat_ok chat_err summ_mixed summ_same caught big_tokens"),
    ("NOT tags.env = 'prod'", "chat_err summ_same big_tokens retriever greeting pending"),
    ("tags.env LIKE 'prod'", "chat_ok summ_mixed caught"),
    ("tags.env ILIKE 'prod'", "chat_ok summ_mixed caught big_tokens"),
    ("tags.env LIKE 'P%'", "big_tokens"),
    glob_not_like("tags.env NOT LIKE 'p%'", "chat_err summ_same big_tokens"),
    ("tags.env NOT ILIKE 'p%'", "chat_err summ_same"),
    ("tags.env RLIKE '^(prod|dev)$'", "chat_ok summ_mixed caught summ_same"),
    ("tags.team = ''", "caught"),
    ("tags.team != 'search'", "summ_mixed caught retriever"),
    ("tags.team IS NULL", "summ_same big_tokens greeting pending"),
    ("tags.team IS NOT NULL", "chat_ok chat_err summ_mixed caught retriever"),
    ("tags.team LIKE '%'", "chat_ok chat_err summ_mixed caught retriever"),
    ("tags.tier IN ('gold', 'silver')", "chat_ok big_tokens"),
    ("tags.case = 'greeting'", "greeting"),
    ("tags.nope = 'x'", ""),
    ("tags.nope IS NULL", " ".join(ALL)),
    # MLflow spellings of tags and metadata
    ("tag.env = 'prod'", "chat_ok summ_mixed caught"),
    ("tags.`env` = 'prod'", "chat_ok summ_mixed caught"),
    ("tags.\"env\" = 'prod'", "chat_ok summ_mixed caught"),
    ("TAGS.env = 'prod'", "chat_ok summ_mixed caught"),
    ("tags.env = \"prod\"", "chat_ok summ_mixed caught"),
    ("tags.Env = 'prod'", ""),
    ("metadata.user = 'alice'", "chat_ok caught"),
    ("request_metadata.user = 'alice'", "chat_ok caught"),
    ("request_metadata.`user` = 'alice'", "chat_ok caught"),
    ("metadata.user != 'alice'", "chat_err summ_mixed"),
    ("metadata.user IS NULL", "summ_same retriever big_tokens greeting pending"),
    ("metadata.user LIKE 'a%'", "chat_ok caught"),
    ("metadata.region IN ('eu')", "chat_ok big_tokens"),
    ("metadata.region NOT IN ('eu')", "chat_err"),
    ("metadata.env = 'prod'", ""),
    # AND / OR / NOT / parentheses (AND binds tighter than OR)
    ("tags.env = 'prod' AND trace.status = 'OK' AND trace.name = 'chat'", "chat_ok"),
    ("(tags.env = 'prod' OR tags.env = 'staging') AND trace.execution_time_ms < 30",
     "chat_err caught"),
    ("tags.env = 'prod' OR tags.env = 'staging' AND trace.execution_time_ms < 30",
     "chat_ok summ_mixed caught chat_err"),
    ("tags.env = 'staging' OR tags.team = 'docs'", "chat_err summ_mixed retriever"),
    ("NOT (trace.status = 'OK')", "chat_err pending"),
    ("NOT NOT trace.status = 'ERROR'", "chat_err"),
    ("not (tags.env = 'prod' or tags.team = 'docs')",
     "chat_err summ_same big_tokens greeting pending"),
    ("((trace.name = 'chat')) and not (tags.env = 'prod')", "chat_err big_tokens"),
    ("metadata.user = 'alice' AND (trace.name = 'Chat' OR trace.execution_time_ms > 40)",
     "chat_ok caught"),
    # span fields: AND-ed span predicates in one group hold for the same span
    ("span.name = 'A'", "summ_mixed summ_same"),
    ("span.name = 'A' AND span.type = 'TOOL'", "summ_same"),
    ("span.name = 'A' AND span.type = 'LLM'", "summ_mixed"),
    ("span.type = 'TOOL' AND span.name = 'A'", "summ_same"),
    ("span.name = 'A' AND trace.name = 'summarize' AND span.type = 'TOOL'", "summ_same"),
    ("span.type = 'TOOL'", "chat_err summ_mixed summ_same caught"),
    ("span.span_type = 'TOOL'", "chat_err summ_mixed summ_same caught"),
    ("NOT (span.type = 'TOOL')", "chat_ok retriever big_tokens greeting pending"),
    ("NOT span.type = 'TOOL'", "chat_ok retriever big_tokens greeting pending"),
    ("span.type != 'TOOL'", " ".join(ALL)),
    ("span.type IN ('EMBEDDING', 'AGENT')", "retriever greeting"),
    ("span.type NOT IN ('CHAIN', 'LLM', 'TOOL')", "retriever greeting"),
    ("span.status = 'ERROR'", "chat_err caught"),
    ("span.status = 'OK'", " ".join(ALL)),
    ("NOT (span.status = 'ERROR')", " ".join(ALL - {"chat_err", "caught"})),
    ("span.type = 'TOOL' AND span.status = 'ERROR'", "caught"),
    ("span.status = 'ERROR' AND span.type = 'CHAIN'", "chat_err"),
    ("trace.status = 'OK' AND span.status = 'ERROR'", "caught"),
    ("NOT (span.type = 'TOOL' AND span.status = 'ERROR')", " ".join(ALL - {"caught"})),
    ("span.name = 'A' OR span.name = 'flaky'", "summ_mixed summ_same caught"),
    ("span.type = 'LLM' AND NOT span.status = 'ERROR'",
     "chat_ok summ_mixed big_tokens pending"),
    ("span.type = 'LLM' AND span.name = 'step'", "pending"),
    ("span.name LIKE 'call%'", "chat_ok big_tokens"),
    ("span.name ILIKE 'CALL%'", "chat_ok big_tokens"),
    ("span.name LIKE 'CALL%'", ""),
    ("span.name RLIKE '^(embed|rerank)$'", "retriever"),
    glob_not_like("span.name NOT LIKE 'c%'",
                  "chat_err summ_mixed summ_same caught retriever greeting pending"),
    ("span.name = 'A' AND span.name = 'B'", ""),
    # span.duration_ms
    ("span.duration_ms > 500", "big_tokens"),
    ("span.duration = 900", "big_tokens"),
    ("span.duration_ms >= 100 AND span.duration_ms < 200", "summ_mixed"),
    ("span.duration_ms = 7", "summ_same"),
    ("span.duration_ms IN (2, 3)", "retriever greeting pending"),
    ("span.duration_ms < 3", "retriever"),
    ("span.duration_ms > 0.5 AND span.duration_ms < 2.5", "retriever"),
    ("span.type = 'LLM' AND span.duration_ms < 50", "chat_ok pending"),
    ("span.name = 'call_llm' AND span.duration_ms > 500", "big_tokens"),
    ("span.type = 'TOOL' AND span.duration_ms >= 20", "chat_err"),
    # span.attributes: numbers, strings, booleans, on the same span as the rest of the group
    ("span.attributes.k > 4", "summ_mixed summ_same"),
    ("span.attributes.k >= 4", "summ_mixed summ_same retriever"),
    ("span.attributes.k IN (3, 4)", "chat_err retriever"),
    ("span.attributes.k = '3'", "chat_err"),
    ("span.attributes.k = 3.0", "chat_err"),
    ("span.attributes.k < 5 AND span.type = 'TOOL'", "chat_err"),
    ("span.type = 'TOOL' AND span.attributes.k > 4", "summ_mixed summ_same"),
    ("span.type = 'LLM' AND span.attributes.k > 4", ""),
    ("span.attributes.model = 'gpt-4o'", "chat_ok summ_same"),
    ("span.attributes.model LIKE 'gpt-4o%'", "chat_ok summ_same big_tokens"),
    ("span.attributes.model ILIKE 'GPT%'", "chat_ok summ_same big_tokens"),
    ("span.attributes.model LIKE 'GPT%'", ""),
    ("span.attributes.model RLIKE '^gpt-4o$'", "chat_ok summ_same"),
    ("span.attributes.model != 'gpt-4o'", "summ_mixed big_tokens"),
    ("span.attributes.model IN ('claude-3', 'gpt-4o-mini')", "summ_mixed big_tokens"),
    ("span.attributes.model NOT IN ('gpt-4o')", "summ_mixed big_tokens"),
    glob_not_like("span.attributes.model NOT LIKE 'gpt%'", "summ_mixed"),
    ("span.attributes.gen_ai.usage.input_tokens > 1000", "chat_ok big_tokens"),
    ("span.attributes.`gen_ai.usage.input_tokens` = 300", "summ_mixed"),
    ("span.attributes.gen_ai.usage.input_tokens >= 300 "
     "AND span.attributes.gen_ai.usage.input_tokens <= 1200", "chat_ok summ_mixed"),
    ("span.attributes.temperature = 0", "big_tokens"),
    ("span.attributes.temperature < 0.5", "big_tokens"),
    ("span.attributes.temperature = 0.7", "chat_ok"),
    ("span.attributes.temperature > 0", "chat_ok"),
    ("span.attributes.stream = true", "chat_ok"),
    ("span.attributes.stream = false", ""),
    ("span.attributes.tool.name = 'web'", "chat_err"),
    ("span.attributes.lang IS NOT NULL", "greeting"),
    ("span.attributes.model IS NOT NULL AND span.type = 'TOOL'", "summ_same"),
    ("NOT (span.attributes.k IS NOT NULL)", "chat_ok caught big_tokens greeting pending"),
    ("span.attributes.model = 'gpt-4o' AND span.name = 'call_llm'", "chat_ok"),
    ("span.name = 'call_llm' AND span.attributes.model = 'claude-3'", ""),
    ("span.attributes.retry = 2 AND span.status = 'ERROR'", "caught"),
    ("span.attributes.k = 3 AND span.attributes.tool.name = 'web'", "chat_err"),
    ("span.attributes.k = 10 AND span.attributes.model = 'claude-3'", ""),
    ("span.attributes.nope = 1", ""),
    # feedback (more in test_filter_hostile.py)
    ("feedback.correct = true", "chat_ok"),
    ("feedback.correct = false", "chat_err"),
    ("feedback.correct IS NULL", " ".join(ALL - {"chat_ok", "chat_err"})),
    ("feedback.correct IS NOT NULL", "chat_ok chat_err"),
    # everything at once
    ("trace.status = 'OK' AND tags.env IN ('prod', 'PROD') AND span.type = 'LLM' "
     "AND span.attributes.gen_ai.usage.input_tokens > 1000 AND trace.text ILIKE '%story%' "
     "AND trace.timestamp_ms >= '2026-01-04' AND metadata.region = 'eu'", "big_tokens"),
]


def table_params(table: list[Any]) -> list[Any]:
    """(filter, expected labels) rows and pytest.params of them, as pytest.params."""
    out = []
    for item in table:
        if hasattr(item, "marks"):  # a pytest.param
            filter_string, expected = item.values
            out.append(pytest.param(filter_string, labels(expected), marks=item.marks,
                                    id=filter_string))
        else:
            out.append(pytest.param(item[0], labels(item[1]), id=item[0]))
    return out


@pytest.mark.parametrize(("filter_string", "expected"), table_params(CASES))
def test_filter_finds_exactly_and_count_traces_agrees(corpus, filter_string, expected):
    found = corpus.search(filter_string)
    assert set(found) == expected
    assert len(found) == len(expected)  # each trace once
    assert corpus.count(filter_string) == len(found)


def test_no_filter_and_blank_filters_list_the_whole_experiment(corpus):
    assert corpus.labels() == ALL
    assert corpus.labels("   ") == ALL
    assert corpus.count() == corpus.count("") == len(ALL)


# -- experiments --------------------------------------------------------------------------------

@pytest.mark.parametrize(("filter_string", "test", "other"), [
    ("tags.env = 'prod'", "chat_ok summ_mixed caught", "other_chat"),
    ("trace.status = 'ERROR'", "chat_err", "other_chat"),
    ("trace.name = 'summarize'", "summ_mixed summ_same", "other_summ"),
    ("span.attributes.model = 'gpt-4o' AND span.attributes.k = 3", "", "other_chat"),
    ("span.attributes.k = 3", "chat_err", "other_chat"),
    ("trace.text LIKE '%Hello%'", "greeting", "other_chat"),
    ("trace.text LIKE '%refund%'", "chat_err", "other_chat"),
    ("feedback.correct = true", "chat_ok", "other_chat"),
    ("metadata.user = 'alice'", "chat_ok caught", "other_chat"),
    ("trace.timestamp_ms < '2026-01-01T01:00'", "chat_ok", "other_chat"),
    ("tags.env = 'dev'", "summ_same", "other_summ"),
])
def test_filters_never_cross_experiments(corpus, filter_string, test, other):
    assert corpus.labels(filter_string) == labels(test)
    assert corpus.labels(filter_string, experiment="test") == labels(test)
    assert corpus.labels(filter_string, experiment="other") == labels(other)
    assert corpus.labels(filter_string, experiment="*") == labels(test) | labels(other)
    assert corpus.labels(filter_string, experiment="nowhere") == set()
    assert corpus.count(filter_string, experiment="*") == len(labels(test) | labels(other))
    assert corpus.count(filter_string, experiment="other") == len(labels(other))


# -- order_by and the cursor --------------------------------------------------------------------

def _by_id(corpus: Corpus, names: str, descending: bool = False) -> list[str]:
    return sorted(names.split(), key=lambda k: corpus.ids[k], reverse=descending)


ORDERINGS: list[tuple[str | None, list[str] | None, Callable[[Corpus], list[str]]]] = [
    (None, None, lambda c: ["pending", "greeting", "big_tokens", "retriever", "caught",
                            "summ_same", "summ_mixed", "chat_err", "chat_ok"]),
    (None, ["timestamp_ms ASC"], lambda c: ["chat_ok", "chat_err", "summ_mixed", "summ_same",
                                            "caught", "retriever", "big_tokens", "greeting",
                                            "pending"]),
    ("trace.status = 'OK'", ["execution_time_ms"],
     lambda c: ["greeting", "summ_same", "caught", "chat_ok", "summ_mixed", "retriever",
                "big_tokens"]),
    ("trace.status = 'OK'", ["trace.execution_time_ms DESC"],
     lambda c: ["big_tokens", "retriever", "summ_mixed", "chat_ok", "caught", "summ_same",
                "greeting"]),
    ("trace.end_time_ms IS NOT NULL", ["end_time_ms desc"],
     lambda c: ["greeting", "big_tokens", "retriever", "caught", "summ_same", "summ_mixed",
                "chat_err", "chat_ok"]),
    (None, ["name ASC", "timestamp_ms DESC"],  # binary collation: 'Chat' < 'chat'
     lambda c: ["caught", "big_tokens", "chat_err", "chat_ok", "greeting", "retriever",
                "pending", "summ_same", "summ_mixed"]),
    (None, ["status", "execution_time_ms DESC"],
     lambda c: ["chat_err", "pending", "big_tokens", "retriever", "summ_mixed", "chat_ok",
                "caught", "summ_same", "greeting"]),
    ("tags.env IS NOT NULL", ["tags.env ASC"],  # ties broken by the trace id
     lambda c: ["big_tokens", "summ_same", *_by_id(c, "chat_ok summ_mixed caught"),
                "chat_err"]),
    ("tags.env IS NOT NULL", ["tags.env DESC"],
     lambda c: ["chat_err", *_by_id(c, "chat_ok summ_mixed caught", descending=True),
                "summ_same", "big_tokens"]),
    ("tags.team IS NOT NULL", ["tags.team", "timestamp_ms DESC"],
     lambda c: ["caught", "retriever", "summ_mixed", "chat_err", "chat_ok"]),
    ("metadata.user IS NOT NULL", ["metadata.user DESC", "timestamp_ms ASC"],
     lambda c: ["summ_mixed", "chat_err", "chat_ok", "caught"]),
    ("span.type = 'TOOL'", ["request_id"], lambda c: _by_id(c, "chat_err summ_mixed summ_same "
                                                              "caught")),
    ("span.type = 'TOOL'", ["trace.request_id DESC"],
     lambda c: _by_id(c, "chat_err summ_mixed summ_same caught", descending=True)),
    # IN lists: one parameter a value, so that the page token can follow them
    ("tags.env IN ('prod', 'dev')", None,
     lambda c: ["caught", "summ_same", "summ_mixed", "chat_ok"]),
    ("trace.status IN ('OK')", ["name ASC", "timestamp_ms DESC"],
     lambda c: ["caught", "big_tokens", "chat_ok", "greeting", "retriever", "summ_same",
                "summ_mixed"]),
    ("span.attributes.k NOT IN (3) AND trace.name NOT IN ('x')", ["timestamp_ms ASC"],
     lambda c: ["summ_mixed", "summ_same", "retriever"]),
]


@pytest.mark.parametrize(("filter_string", "order_by", "expected"), ORDERINGS,
                         ids=[f"{f}|{o}" for f, o, _ in ORDERINGS])
def test_order_by_sorts_and_every_page_size_visits_each_match_once_in_order(
        corpus, filter_string, order_by, expected):
    want = expected(corpus)
    assert corpus.search(filter_string, order_by=order_by) == want
    for size in (1, 2, 3, 4):
        assert corpus.walk(size, filter_string=filter_string, order_by=order_by) == want
    assert corpus.count(filter_string) == len(want)


def test_a_page_token_is_refused_with_another_order_by(corpus):
    first = assay.search_traces(max_results=2, order_by=["execution_time_ms"],
                                return_type="list")
    token = first.next_page_token
    assert token is not None
    with pytest.raises(ValueError, match="page_token"):
        assay.search_traces(max_results=2, order_by=["execution_time_ms DESC"],
                            page_token=token)
    with pytest.raises(ValueError, match="page_token"):
        assay.search_traces(max_results=2, page_token=token)  # the default ordering
    with pytest.raises(ValueError, match="page_token"):
        assay.search_traces(max_results=2, page_token="not-a-token")


@pytest.mark.parametrize("order_by", [
    ["span.name"], ["nonsense"], ["timestamp_ms SIDEWAYS"], ["feedback.correct"],
    ["trace.text"], [""], ["tags."], ["timestamp_ms; DROP TABLE traces"], "timestamp_ms",
])
def test_a_bad_order_by_raises_invalid_filter(corpus, order_by):
    with pytest.raises(assay.InvalidFilter):
        assay.search_traces(order_by=order_by)


def test_an_order_by_naming_no_field_says_which_item(corpus):
    with pytest.raises(assay.InvalidFilter, match="cannot order by 'nonsense'") as info:
        assay.search_traces(order_by=["timestamp_ms", "nonsense DESC"])
    assert info.value.filter_string == "nonsense DESC"
    assert str(info.value).splitlines()[0] == \
        "cannot order by 'nonsense': unknown field 'nonsense' at position 0"


def _stable_walk(db_uri: str, order_by: list[str], fresh: Callable[[int], list[Case]]
                 ) -> tuple[list[str], list[str], dict[str, str]]:
    assay.configure(store=db_uri, experiment="test", flush_interval_ms=50)
    clock = install_clock()
    base = [Case(f"t{i}", i, extra_ms=10 * (i + 1)) for i in range(7)]
    ids = {c.label: record(c, clock) for c in base}
    assert assay.flush(timeout_s=30)
    corpus = Corpus(ids)

    def insert(page_no: int) -> None:
        for case in fresh(page_no):
            corpus.ids[case.label] = record(case, clock)
            corpus.labels_by_id[corpus.ids[case.label]] = case.label
        assert assay.flush(timeout_s=30)

    walked = corpus.walk(2, order_by=order_by, between_pages=insert)
    return walked, corpus.search(order_by=order_by), corpus.ids


@pytest.mark.parametrize(("order_by", "first_half"), [
    (["timestamp_ms DESC"], ["t6", "t5", "t4", "t3", "t2", "t1", "t0"]),
    (["timestamp_ms ASC"], ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]),
    (["execution_time_ms DESC"], ["t6", "t5", "t4", "t3", "t2", "t1", "t0"]),
])
def test_pages_are_stable_while_traces_arrive_between_them(db_uri, order_by, first_half):
    # Between pages, a trace arrives at each end of the ordering: the one that
    # sorts before the cursor is never shown, the one after it shows up in place.
    def fresh(page_no: int) -> list[Case]:
        return [Case(f"new{page_no}", 100 + page_no, extra_ms=5000 + page_no),
                Case(f"old{page_no}", -1 - page_no, extra_ms=1 - page_no * 0.25)]

    walked, final, _ = _stable_walk(db_uri, order_by, fresh)
    original = [x for x in walked if x.startswith("t")]
    assert original == first_half
    assert len(walked) == len(set(walked))
    ascending = order_by[0].endswith("ASC")
    # Walking away from the far end, the arrivals at that end come last, in order.
    late = [x for x in walked if not x.startswith("t")]
    tail = "new" if ascending else "old"
    assert all(x.startswith(tail) for x in late)
    assert late == [x for x in final if x.startswith(tail)]
    assert walked == original + late


# -- EXPLAIN: the benchmark queries never scan every span ---------------------------------------

# (A scan of the partial index of the spans with long text reads only those.)
_SPAN_TABLES = re.compile(r"^SCAN (sp|tx|sa|spans|span_attributes)(_\d+)?\b"
                          r"(?! USING (COVERING )?INDEX ix_spans_long_text\b)")
_KEYED_TABLES = re.compile(r"^SCAN (trace_tags|trace_metadata|assessments)(_\d+)?\b")

BENCHMARK_QUERIES = [
    "trace.status = 'OK'",
    "tags.env = 'prod'",
    "trace.timestamp_ms > '2026-01-02' AND trace.timestamp_ms < '2026-01-04'",
    "span.name = 'call_llm'",
    "span.attributes.model = 'gpt-4o'",
    "span.attributes.gen_ai.usage.input_tokens > 1000",
    "feedback.correct = true",
    "tags.env = 'prod' OR tags.team = 'docs'",
    "trace.text LIKE '%refund%'",
    # beyond the benchmark: same-span groups and negation
    "span.type = 'TOOL' AND span.status = 'ERROR'",
    "span.name = 'call_llm' AND span.attributes.model = 'gpt-4o'",
    "NOT (span.type = 'TOOL')",
    "span.duration_ms > 500",
]


@pytest.fixture
def captured_sql() -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        statements.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", capture)
    yield statements
    event.remove(Engine, "before_cursor_execute", capture)


def query_plan(corpus_db: tuple[str, dict[str, str]], statement: str,
               parameters: Any) -> list[str]:
    path = corpus_db[0][len("sqlite:///"):]
    with sqlite3.connect(path) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
    conn.close()
    return [row[3] for row in rows]


# Query plans are checked on SQLite (PostgreSQL's planner picks sequential scans on
# tables this small, whatever the indexes; bench/search.py measures it at 100k traces).
@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
@pytest.mark.parametrize("filter_string", BENCHMARK_QUERIES)
def test_the_plan_of_a_benchmark_query_never_scans_every_span(corpus, corpus_db, captured_sql,
                                                               filter_string):
    corpus.labels(filter_string)  # the search works
    captured_sql.clear()
    assay.search_traces(filter_string, max_results=100, include_spans=False,
                        return_type="list")
    assay.count_traces(filter_string)
    queries = [(s, p) for s, p in captured_sql
               if re.search(r"\bFROM (traces|assessments AS valued)\b", s)]
    # The page (walked or gathered), the count, and for a filter with subqueries
    # the count that tells few matches from many (a lone feedback value's count
    # reads its page index only).
    assert len(queries) >= 2, captured_sql
    for statement, parameters in queries:
        plan = query_plan(corpus_db, statement, parameters)
        scans = [line for line in plan if _SPAN_TABLES.match(line.strip())]
        assert not scans, "\n".join(plan)
        others = [line for line in plan if _KEYED_TABLES.match(line.strip())]
        assert not others, "\n".join(plan)


@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
@pytest.mark.parametrize("filter_string", [
    None, "trace.timestamp_ms > '2026-01-02' AND trace.timestamp_ms < '2026-01-04'"])
def test_the_default_order_walks_the_timestamp_index_without_sorting(corpus, corpus_db,
                                                                      captured_sql,
                                                                      filter_string):
    captured_sql.clear()
    assay.search_traces(filter_string, max_results=3, include_spans=False, return_type="list")
    statement, parameters = next((s, p) for s, p in captured_sql
                                 if re.search(r"\bFROM traces\b", s))
    plan = query_plan(corpus_db, statement, parameters)
    assert not any("TEMP B-TREE FOR ORDER BY" in line for line in plan), "\n".join(plan)


@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("filter_string", "order_by", "bound"), [
    (None, None, "timestamp_ms<?"),
    (None, ["timestamp_ms ASC"], "timestamp_ms>?"),
    ("trace.status = 'OK'", None, "timestamp_ms<?"),
])
def test_a_later_page_starts_its_index_range_at_the_token(corpus, corpus_db, captured_sql,
                                                          filter_string, order_by, bound):
    """The page after a token reads the index from the token on, not from its
    first entry (the 500th page would read 49,900 entries before its own)."""
    first = assay.search_traces(filter_string, max_results=1, include_spans=False,
                                order_by=order_by, return_type="list")
    assert first.next_page_token is not None
    captured_sql.clear()
    assay.search_traces(filter_string, max_results=1, include_spans=False, order_by=order_by,
                        page_token=first.next_page_token, return_type="list")
    statement, parameters = next((s, p) for s, p in captured_sql
                                 if re.search(r"\bFROM traces\b", s))
    plan = query_plan(corpus_db, statement, parameters)
    assert any(line.startswith("SEARCH ") and f"AND {bound})" in line for line in plan), \
        "\n".join(plan)


# -- SQLite: the walk in page order and the gathered page agree ----------------------------------

@pytest.fixture
def gather_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every filter looks common (so its page is walked first), and every walk
    through the traces is interrupted at once: pages are gathered."""
    from assay.store import sql

    monkeypatch.setattr(sql, "RARE_MATCHES", 0)
    monkeypatch.setattr(sql, "_WALK_BUDGET_S", 0.0)
    monkeypatch.setattr(sql, "_WALK_STEPS", 1)


@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("filter_string", "expected"), table_params(CASES))
def test_a_gathered_page_finds_what_the_walk_finds(corpus, gather_first, filter_string,
                                                   expected):
    found = corpus.search(filter_string)
    assert set(found) == expected
    assert len(found) == len(expected)


@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("filter_string", "order_by", "expected"), ORDERINGS,
                         ids=[f"{f}|{o}" for f, o, _ in ORDERINGS])
def test_gathered_pages_keep_the_order_and_visit_each_match_once(
        corpus, gather_first, filter_string, order_by, expected):
    want = expected(corpus)
    for size in (1, 3):
        assert corpus.walk(size, filter_string=filter_string, order_by=order_by) == want


class _ResumedWalks:
    """Every filter looks common (so its page is walked), and each search's first
    walk is cut after ``steps`` SQLite steps; a walk cut with matches found
    always goes on from the last of them, uncut (or, with ``cut_again``, cut
    after as many steps again, and then the page is gathered). ``resumed``
    counts the walks that went on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from assay.store import sql

        self.steps = 1
        self.resumed = 0
        self.cut_again = False
        first = 1e9  # the first walk's budget, told from the one it resumes with
        real = sql._stream
        outer = self

        class Counted(sql._Deadline):  # type: ignore[misc, name-defined]
            """Expires at the ``steps``-th step of the statement."""

            def __init__(self, conn: Any, budget_s: float) -> None:
                super().__init__(conn, budget_s)
                self.left = outer.steps

            def _check(self) -> int:
                self.left -= 1
                self.expired = self.left <= 0
                return int(self.expired)

        def stream(conn: Any, stmt: Any, after: Any, want: int, rows: list[Any],
                   budget_s: float) -> bool:
            if budget_s != first:
                self.resumed += 1
                if not self.cut_again:
                    return real(conn, stmt, after, want, rows, 60.0)
            with monkeypatch.context() as m:
                m.setattr(sql, "_WALK_STEPS", 1)
                m.setattr(sql, "_Deadline", Counted)
                return real(conn, stmt, after, want, rows, 0.0)

        monkeypatch.setattr(sql, "RARE_MATCHES", 0)
        monkeypatch.setattr(sql, "_WALK_BUDGET_S", first)
        monkeypatch.setattr(sql, "_WALK_MORE_S", float("inf"))
        monkeypatch.setattr(sql, "_stream", stream)


@pytest.fixture
def resumed_walks(monkeypatch: pytest.MonkeyPatch) -> _ResumedWalks:
    return _ResumedWalks(monkeypatch)


_WALK_CUTS = range(25, 2000, 25)  # SQLite steps: cuts before, between and after matches


@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("filter_string", "order_by", "expected"), ORDERINGS,
                         ids=[f"{f}|{o}" for f, o, _ in ORDERINGS])
def test_a_walk_cut_short_goes_on_from_its_last_match(corpus, resumed_walks, filter_string,
                                                       order_by, expected):
    want = expected(corpus)
    for steps in _WALK_CUTS[::2]:
        resumed_walks.steps = steps
        for size, cut_again in ((1, False), (3, True), (100, False), (100, True)):
            resumed_walks.cut_again = cut_again
            assert corpus.walk(size, filter_string=filter_string, order_by=order_by) == want


@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
@pytest.mark.parametrize("filter_string", [
    "tags.env = 'prod'", "span.type = 'LLM' OR feedback.correct = true",
    "NOT (span.type = 'TOOL')", "span.attributes.model = 'gpt-4o'"])
def test_resumed_walks_find_what_the_whole_walk_finds(corpus, resumed_walks, filter_string):
    whole = corpus.search(filter_string)
    resumed_walks.resumed = 0
    for steps in _WALK_CUTS:
        resumed_walks.steps = steps
        for cut_again in (False, True):
            resumed_walks.cut_again = cut_again
            assert corpus.search(filter_string) == whole
    # Some cut fell after a match: the walk went on rather than gathering.
    assert resumed_walks.resumed > 0


@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
@pytest.mark.parametrize("filter_string", BENCHMARK_QUERIES)
def test_an_interrupted_walk_is_followed_by_a_gathered_page_on_indexes(
        corpus, corpus_db, captured_sql, gather_first, filter_string):
    corpus.labels(filter_string)
    captured_sql.clear()
    assay.search_traces(filter_string, max_results=100, include_spans=False,
                        return_type="list")
    pages = [(s, p) for s, p in captured_sql if re.search(r"\bFROM traces\b", s)
             and not s.startswith("SELECT count(*)")]
    has_subquery = re.search(r"\b(span|tags?|metadata|feedback)\.", filter_string)
    # A lone feedback value: one range of its page index, no walk to interrupt.
    valued = filter_string == "feedback.correct = true"
    assert valued == ("FROM assessments AS valued" in pages[0][0]), pages[0][0]
    # Otherwise the walk (probing each trace with EXISTS), then the page gathered
    # with IN.
    assert len(pages) == (2 if has_subquery and not valued else 1), captured_sql
    if has_subquery and not valued:
        assert "traces.trace_id IN" not in pages[0][0]
        assert "traces.trace_id IN" in pages[1][0] or "NOT" in filter_string
    for statement, parameters in pages:
        plan = query_plan(corpus_db, statement, parameters)
        assert not [line for line in plan if _SPAN_TABLES.match(line.strip())], "\n".join(plan)
        assert not [line for line in plan if _KEYED_TABLES.match(line.strip())], "\n".join(plan)


# -- SQLite: few matches are gathered at once, many are walked ------------------------------------

def _page_statements(captured: list[tuple[str, Any]]) -> list[str]:
    """The statements of a search: counts bounding its matches, and the page."""
    return [s for s, _ in captured
            if re.search(r"\bFROM traces\b", s) or s.startswith("SELECT count(*)")]


@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("filter_string", "expected"), table_params(CASES))
def test_a_walked_page_finds_what_the_gathered_page_finds(corpus, monkeypatch, filter_string,
                                                          expected):
    from assay.store import sql

    monkeypatch.setattr(sql, "RARE_MATCHES", 0)  # every filter looks common: walked
    found = corpus.search(filter_string)
    assert set(found) == expected
    assert len(found) == len(expected)


@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
def test_a_filter_with_few_matches_is_gathered_without_a_walk(corpus, captured_sql):
    assert corpus.labels("tags.env = 'prod'")
    captured_sql.clear()
    corpus.search("tags.env = 'prod'")
    statements = _page_statements(captured_sql)
    # The count of the tag's index entries (up to a limit), which finds the matches
    # few, then the page gathered with IN; no walk.
    assert len(statements) == 2, statements
    assert statements[0].startswith("SELECT count(*)")
    assert "FROM trace_tags" in statements[0]
    assert "LIMIT" in statements[0]
    assert "traces.trace_id IN" in statements[1]
    assert "EXISTS" not in statements[1]


@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
def test_a_filter_with_many_matches_is_walked(corpus, captured_sql, monkeypatch):
    from assay.store import sql

    monkeypatch.setattr(sql, "RARE_MATCHES", 1)
    captured_sql.clear()
    corpus.search("tags.env = 'prod'")
    statements = _page_statements(captured_sql)
    assert len(statements) == 2, statements  # the count, the walk that filled the page
    assert "EXISTS" in statements[1]


@pytest.mark.parametrize("module_store_uri", ["sqlite", "postgresql"], indirect=True)
def test_a_search_of_a_shape_seen_before_reuses_its_plan(corpus, monkeypatch):
    from assay.store import filter_parser

    calls: list[str] = []
    parse = filter_parser.parse_filter

    def counting(text: str) -> Any:
        calls.append(text)
        return parse(text)

    monkeypatch.setattr(filter_parser, "parse_filter", counting)
    query = "span.name = 'call_llm' AND trace.status = 'OK'"
    first = corpus.walk(1, filter_string=query)
    parsed = len(calls)
    assert parsed >= 1
    assert corpus.walk(1, filter_string=query) == first  # the same pages, no new plan
    assert len(calls) == parsed
    # Another literal is another plan, with its own values.
    assert corpus.labels("span.name = 'nothing-by-this-name'") == set()
    assert len(calls) == parsed + 1


@pytest.mark.parametrize("module_store_uri", ["sqlite"], indirect=True)
def test_an_unhashable_order_by_is_reported_not_cached(corpus):
    with pytest.raises(assay.InvalidFilter, match="order_by item"):
        assay.search_traces(order_by=[["timestamp_ms"]], return_type="list")
