"""The same filters on SQLite and on PostgreSQL find the same traces.

One corpus (the search corpus and the hostile one, with their feedback) is
traced into three stores: an SQLite file, a PostgreSQL schema on a database that
sorts by code point, and one on a database that sorts as English does.
Hypothesis then writes filters (every field kind and operator, values taken from
the corpus and around it: case variants, wildcards, backslashes, quotes,
multi-byte text, numbers as text and as numbers, regular expressions) joined by
AND, OR and NOT, and each must give the same set of traces on all three, and a
count that agrees, or be refused as malformed by all three alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import assay
from assay.store import open_store
from tests.store.test_filter_hostile import HOSTILE, log_typed_assessments
from tests.store.test_filter_search import MAIN, traced

# -- the corpus in three stores ---------------------------------------------------------------


def _trace_corpus(uri: str) -> dict[str, str]:
    """Trace ids by label, the corpus traced into the store at ``uri``."""
    ids = traced(uri, [*MAIN, *HOSTILE])[0]
    assert assay.flush(timeout_s=30)
    assay.log_feedback(ids["chat_ok"], "correct", True)
    assay.log_feedback(ids["chat_err"], "correct", False)
    assay.log_feedback(ids["chat_err"], "correct", True, source="LLM_JUDGE")
    log_typed_assessments(ids)
    assay.shutdown()
    return {trace_id: label for label, trace_id in ids.items()}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory,
           pg_language_db: str) -> Iterator[list[tuple[str, Any, dict[str, str]]]]:
    from tests.conftest import PG_URL, _drop_pg_schema, _pg_schema

    schemas = [(PG_URL, _pg_schema()), (pg_language_db, _pg_schema(pg_language_db))]
    uris = {"sqlite": f"sqlite:///{tmp_path_factory.mktemp('diff') / 'traces.db'}",
            "postgresql": f"{PG_URL}?options=-csearch_path%3D{schemas[0][1]}",
            "postgresql-en-US": f"{pg_language_db}?options=-csearch_path%3D{schemas[1][1]}"}
    opened = []
    try:
        for name, uri in uris.items():
            labels = _trace_corpus(uri)
            opened.append((name, open_store(uri), labels))
        yield opened
    finally:
        for _, store, _ in opened:
            store.close()
        for url, schema in schemas:
            _drop_pg_schema(schema, url)


# -- filters ------------------------------------------------------------------------------------

WORDS = ["prod", "PROD", "Prod", "dev", "staging", "search", "docs", "", "gold", "alice",
         "eu", "chat", "Chat", "summarize", "search_docs", "greet", "probe", "多言語", "OK",
         "ERROR", "IN_PROGRESS", "LLM", "TOOL", "CHAIN", "RETRIEVER", "call_llm", "A", "a",
         "gpt-4o", "gpt-4o-mini", "claude-3", "web", "7", "7.0", "10", "seven", "true",
         "True", "false", "yes", "null", "[7, 8]", "значение", "ЗНАЧЕНИЕ", "山田", "🚀 launch",
         "O'Brien", "007", "dotted", "C:\\temp\\x_y", "a\\b_c", "x" * 5_000, "ACME",
         "refund", "Reset", "hello world", "Hello World", "notes", "doc-7", "beta",
         "'; DROP TABLE traces; --", "%' OR 1=1 --"]
FRAGMENTS = ["pro", "PRO", "o", "e", "ch", "at", "h_t", "4o", "\\", "\\t", "_", "'", "ü",
             "знач", "ЗНАЧ", "語", "🚀", "eta", "\"}", "a%b", "Re"]
REGEXES = ["^c", "t$", "(?i)^prod$", "\\bChat\\b", "\\d+", "^[a-c]", "o{2}", "ü|é", "^$",
           "(?P<w>pro)", "^.{3}$", "\\w+-\\w+", "^(?:gpt|claude)", "(", "[z-a]"]
NUMBERS = ["0", "1", "3", "5", "7", "7.0", "10", "12", "-1", "300", "1200", "50000", "1e6",
           "0.7", "1e300"]
DATES = ["'2026-01-01'", "'2026-01-02T00:00:00Z'", "'2026-01-03'", "1767225600000",
         "1767312000000"]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


strings = st.one_of(st.sampled_from(WORDS), st.text(
    alphabet=st.sampled_from(list("aApPoOrRdD _%-\\'éÉжЖ7")), max_size=5))
patterns = st.one_of(
    strings,
    st.builds(lambda a, f, b: f"{a}{f}{b}", st.sampled_from(["", "%", "_"]),
              st.sampled_from(FRAGMENTS + WORDS[:20]), st.sampled_from(["", "%", "_"])),
    st.builds(lambda f, g: f"%{f}%{g}%", st.sampled_from(FRAGMENTS), st.sampled_from(FRAGMENTS)))

TAG_KEYS = ["env", "team", "tier", "case", "`ключ`", "who", "path", "note", "e", "a", "code",
            "missing"]
META_KEYS = ["user", "region", "m", "`ユーザー`", "missing"]
ATTR_KEYS = ["model", "k", "v", "b", "gen_ai.usage.input_tokens", "temperature", "stream",
             "dir", "emoji", "`a.b`", "long", "retry", "tool.name", "missing"]
STRING_OPS = ["=", "!=", "LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"]
COMPARE_OPS = ["=", "!=", "<", "<=", ">", ">="]


def _string_test(field: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda op, v: f"{field} {op} {_quote(v)}", st.sampled_from(STRING_OPS),
                  patterns),
        st.builds(lambda r: f"{field} RLIKE {_quote(r)}", st.sampled_from(REGEXES)),
        st.builds(lambda neg, vs: f"{field} {neg}IN ({', '.join(map(_quote, vs))})",
                  st.sampled_from(["", "NOT "]), st.lists(strings, min_size=1, max_size=3)),
        st.builds(lambda neg: f"{field} IS {neg}NULL", st.sampled_from(["", "NOT "])))


def _typed_test(field: str) -> st.SearchStrategy[str]:
    return st.one_of(
        _string_test(field),
        st.builds(lambda op, n: f"{field} {op} {n}", st.sampled_from(COMPARE_OPS),
                  st.sampled_from(NUMBERS)),
        st.builds(lambda op, b: f"{field} {op} {b}", st.sampled_from(["=", "!="]),
                  st.sampled_from(["true", "false", "TRUE"])),
        st.builds(lambda op, n: f"{field} {op} {_quote(n)}", st.sampled_from(COMPARE_OPS),
                  st.sampled_from(NUMBERS)))


atoms = st.one_of(
    st.sampled_from(TAG_KEYS).flatmap(lambda k: _string_test(f"tags.{k}")),
    st.sampled_from(META_KEYS).flatmap(lambda k: _string_test(f"metadata.{k}")),
    st.sampled_from(["trace.name", "trace.status", "span.name", "span.type", "span.status"])
    .flatmap(_string_test),
    st.sampled_from(ATTR_KEYS).flatmap(lambda k: _typed_test(f"span.attributes.{k}")),
    st.sampled_from(["feedback.correct", "feedback.v", "expectation.v", "feedback.missing"])
    .flatmap(_typed_test),
    st.builds(lambda op, p: f"trace.text {op} {_quote(p)}",
              st.sampled_from(["LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"]), patterns),
    st.builds(lambda f, op, n: f"{f} {op} {n}",
              st.sampled_from(["trace.execution_time_ms", "span.duration_ms"]),
              st.sampled_from(COMPARE_OPS), st.sampled_from(NUMBERS)),
    st.builds(lambda op, d: f"trace.timestamp_ms {op} {d}", st.sampled_from(COMPARE_OPS),
              st.sampled_from(DATES)),
)
filters = st.recursive(atoms, lambda inner: st.one_of(
    st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["AND", "OR"]), inner),
    st.builds(lambda a: f"NOT ({a})", inner),
    st.builds(lambda a: f"({a})", inner)), max_leaves=4)


def _answer(store: Any, labels: dict[str, str], filter_string: str) -> Any:
    try:
        page = store.search(experiment="test", filter_string=filter_string, max_results=1000,
                            include_spans=False)
        count = store.count(experiment="test", filter_string=filter_string)
    except assay.InvalidFilter as exc:
        return ("InvalidFilter", exc.position)
    found = sorted(labels[t.info.trace_id] for t in page.traces)
    assert page.next_page_token is None
    assert count == len(found), (filter_string, count, found)
    return found


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(filter_string=filters)
def test_every_backend_finds_the_same_traces(stores, filter_string):
    answers = {name: _answer(store, labels, filter_string) for name, store, labels in stores}
    assert answers["postgresql"] == answers["sqlite"], filter_string
    assert answers["postgresql-en-US"] == answers["sqlite"], filter_string


ORDER_KEYS = ["name", "status", "timestamp_ms", "execution_time_ms", "tags.env", "tags.tier",
              "tags.who", "tags.case", "metadata.user", "metadata.region"]
orderings = st.lists(st.builds(lambda key, way: f"{key}{way}", st.sampled_from(ORDER_KEYS),
                               st.sampled_from(["", " ASC", " DESC"])),
                     min_size=1, max_size=2, unique_by=lambda k: k.split()[0])


def _walk(store: Any, labels: dict[str, str], filter_string: str | None,
          order_by: list[str], page_size: int) -> list[str]:
    """Every page from the first to the last, following the page tokens."""
    seen: list[str] = []
    token = None
    while True:
        page = store.search(experiment="test", filter_string=filter_string, order_by=order_by,
                            max_results=page_size, page_token=token, include_spans=False)
        seen.extend(labels[t.info.trace_id] for t in page.traces)
        token = page.next_page_token
        if token is None:
            return seen


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(filter_string=st.one_of(st.none(), atoms), order_by=orderings,
       page_size=st.integers(1, 9))
def test_every_backend_pages_alike(stores, filter_string, order_by, page_size):
    """Page by page, in any order: each backend visits every match once, in the order
    of one big page, and the backends agree on the order of the keys' values."""
    orders = {}
    for name, store, labels in stores:
        try:
            whole = store.search(experiment="test", filter_string=filter_string,
                                 order_by=order_by, max_results=1000, include_spans=False)
        except assay.InvalidFilter:
            continue
        orders[name] = [labels[t.info.trace_id] for t in whole.traces]
        assert _walk(store, labels, filter_string, order_by, page_size) == orders[name]
    if not orders:
        return
    first = stores[0]
    keyed = {name: _keys(first[1], order, first[2], order_by) for name, order in orders.items()}
    assert keyed["postgresql"] == keyed["sqlite"]
    assert keyed["postgresql-en-US"] == keyed["sqlite"]


@pytest.mark.parametrize("order_by", [["name"], ["tags.env DESC"], ["metadata.user"],
                                      ["tags.who", "timestamp_ms DESC"], ["status", "name"]])
def test_every_backend_orders_alike(stores, order_by):
    orders = {}
    for name, store, labels in stores:
        page = store.search(experiment="test", order_by=order_by, max_results=1000,
                            include_spans=False)
        orders[name] = [labels[t.info.trace_id] for t in page.traces]
    # Traces tied on the keys are ordered by trace id, which differs per store:
    # compare the order of the keys' values.
    first = next(iter(stores))
    keyed = {name: _keys(first[1], orders[name], first[2], order_by) for name in orders}
    assert keyed["postgresql"] == keyed["sqlite"]
    assert keyed["postgresql-en-US"] == keyed["sqlite"]


def _keys(store: Any, order: list[str], labels: dict[str, str],
          order_by: list[str]) -> list[tuple[Any, ...]]:
    """Each trace's values of the ``order_by`` keys, in ``order``."""
    by_label = {labels[t.info.trace_id]: t for t in store.search(
        experiment="test", max_results=1000, include_spans=False).traces}

    def value(trace: Any, key: str) -> Any:
        key = key.split()[0]
        if key.startswith("tags."):
            return trace.info.tags.get(key[5:])
        if key.startswith("metadata."):
            return trace.info.metadata.get(key[9:])
        return {"name": trace.info.name, "status": trace.info.state,
                "execution_time_ms": trace.info.execution_time_ms,
                "timestamp_ms": trace.info.timestamp_ms}[key]

    return [tuple(value(by_label[label], key) for key in order_by) for label in order]


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(filter_string=filters, order_by=st.one_of(st.none(), orderings),
       page_size=st.integers(1, 9))
def test_sqlite_walks_and_gathers_alike(stores, filter_string, order_by, page_size):
    """On SQLite a page is walked (traces in page order, each probed) or gathered
    (every match found, then sorted): the same pages either way, walked to the end
    or cut at once."""
    from unittest import mock

    from assay.store import sql

    _, store, labels = stores[0]

    def pages(**how: Any) -> list[str] | None:
        with mock.patch.multiple(sql, **how) if how else contextlib.nullcontext():
            try:
                return _walk(store, labels, filter_string, order_by or [], page_size)
            except assay.InvalidFilter:
                return None

    walked = pages(RARE_MATCHES=0, _WALK_BUDGET_S=60.0)
    gathered = pages(RARE_MATCHES=0, _WALK_BUDGET_S=0.0, _WALK_STEPS=1)
    assert walked == gathered == pages()
