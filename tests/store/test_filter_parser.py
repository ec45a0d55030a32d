"""The filter language's front half: tokenizer, parser, field table, errors and render.

No database here: these tests pin the AST each filter string becomes, the
InvalidFilter (message and exact position) each malformed one raises, and two
properties (any text gives an AST or InvalidFilter; render/parse round-trips).
"""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from assay.errors import InvalidFilter
from assay.store import filter_parser
from assay.store.filter_ast import (
    KEYED_FIELDS,
    SPAN_FIELDS,
    TRACE_FIELDS,
    And,
    Comparison,
    Expr,
    Field,
    FieldSpec,
    Not,
    Or,
    and_,
    comparisons,
    iso_to_epoch_ms,
    not_,
    or_,
    parse_iso_datetime,
    render,
)
from assay.store.filter_parser import MAX_DEPTH, MAX_FILTER_LENGTH, MAX_IN_ITEMS, parse_filter

# -- helpers ------------------------------------------------------------------------------------


def T(name: str) -> Field:
    return Field("trace", name)


def S(name: str) -> Field:
    return Field("span", name)


def tag(key: str) -> Field:
    return Field("tag", "tag", key)


def meta(key: str) -> Field:
    return Field("metadata", "metadata", key)


def attr(key: str) -> Field:
    return Field("span_attribute", "span_attribute", key)


def fb(name: str) -> Field:
    return Field("feedback", "feedback", name)


def ex(name: str) -> Field:
    return Field("expectation", "expectation", name)


def C(field: Field, op: str, value: object = None) -> Comparison:
    return Comparison(field, op, value)  # type: ignore[arg-type]


def parse(text: str) -> Expr:
    expr = parse_filter(text)
    assert expr is not None
    return expr


def fails(text: str) -> InvalidFilter:
    with pytest.raises(InvalidFilter) as info:
        parse_filter(text)
    return info.value


def first_line(exc: InvalidFilter) -> str:
    return str(exc).split("\n", 1)[0]


def same(a: Expr, b: Expr) -> bool:
    """Equal ASTs, literal types included (True and 1 compare equal in Python)."""
    return a == b and render(a) == render(b)


# -- MLflow's filter strings --------------------------------------------------------------------
#
# Collected from MLflow's documentation and test suite; every one must parse unchanged.
# Sources:
#   [docs]   mlflow/mlflow docs/docs/genai/tracing/search-traces.mdx ("Search Traces",
#            https://mlflow.org/docs/latest/genai/tracing/search-traces)
#   [dbx]    "Search and analyze traces" quick reference (Databricks MLflow 3 docs,
#            https://docs.databricks.com/.../mlflow3/genai/tracing/observe-with-traces/query-via-sdk)
#   [2.21]   "Query Traces", https://www.mlflow.org/docs/2.21.3/tracing/api/search (and 3.0.0rc)
#   [3.x]    "Search Traces" syntax rules, https://mlflow.org/docs/3.5.0/genai/tracing/search-traces
#   [skill]  mlflow/skills retrieving-mlflow-traces (https://skills.sh/mlflow/skills/...)
#   [store]  mlflow/mlflow tests/store/tracking/test_sqlalchemy_store.py (search_traces tests)
#   [utils]  mlflow/mlflow tests/utils/test_search_utils.py (SearchTraceUtils tests)

TS = 1_700_000_000_000

MLFLOW_FILTERS: list[tuple[str, Expr]] = [
    # [docs] "Supported Filters and Comparators" table (double-quoted values)
    ('trace.status = "OK"', C(T("status"), "=", "OK")),
    ("trace.end_time_ms > 1762408895531", C(T("end_time_ms"), ">", 1762408895531)),
    ('trace.run_id = "run_id"', C(T("run_id"), "=", "run_id")),
    ('trace.name LIKE "%Generate%"', C(T("name"), "LIKE", "%Generate%")),
    ('prompt = "qa-system-prompt/4"', C(T("prompt"), "=", "qa-system-prompt/4")),
    ('span.type RLIKE "^LLM"', C(S("type"), "RLIKE", "^LLM")),
    ('span.attributes.model RLIKE "^gpt"', C(attr("model"), "RLIKE", "^gpt")),
    ('tag.key = "value"', C(tag("key"), "=", "value")),
    ('metadata.user_id LIKE "user%"', C(meta("user_id"), "LIKE", "user%")),
    ('feedback.rating = "excellent"', C(fb("rating"), "=", "excellent")),
    ('expectation.result = "pass"', C(ex("result"), "=", "pass")),
    ('trace.text LIKE "%tell me a story"', C(T("text"), "LIKE", "%tell me a story")),
    # [docs] example queries
    ("trace.text LIKE '%authentication error%'", C(T("text"), "LIKE", "%authentication error%")),
    ("trace.text LIKE '%timeout%'", C(T("text"), "LIKE", "%timeout%")),
    ("trace.name = 'predict'", C(T("name"), "=", "predict")),
    ("trace.name LIKE '%inference%'", C(T("name"), "LIKE", "%inference%")),
    ("trace.name ILIKE '%PREDICT%'", C(T("name"), "ILIKE", "%PREDICT%")),
    ("trace.name RLIKE '^(predict|inference)_[0-9]+'",
     C(T("name"), "RLIKE", "^(predict|inference)_[0-9]+")),
    ("trace.status = 'OK'", C(T("status"), "=", "OK")),
    ("trace.status = 'ERROR'", C(T("status"), "=", "ERROR")),
    ("trace.status != 'OK'", C(T("status"), "!=", "OK")),
    ("trace.execution_time_ms > 1000", C(T("execution_time_ms"), ">", 1000)),
    ("trace.execution_time_ms >= 200 AND trace.execution_time_ms <= 800",
     And((C(T("execution_time_ms"), ">=", 200), C(T("execution_time_ms"), "<=", 800)))),
    ("trace.execution_time_ms = 500", C(T("execution_time_ms"), "=", 500)),
    (f"trace.timestamp_ms > {TS - 3600000}", C(T("timestamp_ms"), ">", TS - 3600000)),
    (f"trace.timestamp_ms = {TS}", C(T("timestamp_ms"), "=", TS)),
    (f"trace.timestamp_ms >= {TS - 7200000} AND trace.timestamp_ms <= {TS - 3600000}",
     And((C(T("timestamp_ms"), ">=", TS - 7200000), C(T("timestamp_ms"), "<=", TS - 3600000)))),
    ("tag.model_name = 'gpt-4'", C(tag("model_name"), "=", "gpt-4")),
    ("tag.model_name LIKE 'gpt-%'", C(tag("model_name"), "LIKE", "gpt-%")),
    ("tag.environment ILIKE '%prod%'", C(tag("environment"), "ILIKE", "%prod%")),
    (r"tag.version RLIKE '^v[0-9]+\.[0-9]+'", C(tag("version"), "RLIKE", r"^v[0-9]+\.[0-9]+")),
    ("trace.run_id = 'run_id_123456'", C(T("run_id"), "=", "run_id_123456")),
    ('prompt = "qa-agent-system-prompt/4"', C(T("prompt"), "=", "qa-agent-system-prompt/4")),
    ("span.name = 'llm_call'", C(S("name"), "=", "llm_call")),
    ("span.name LIKE '%embedding%'", C(S("name"), "LIKE", "%embedding%")),
    ("span.type = 'LLM'", C(S("type"), "=", "LLM")),
    ("span.attributes.model_version LIKE '%v2%'", C(attr("model_version"), "LIKE", "%v2%")),
    ("span.attributes.temperature LIKE '%0.7%'", C(attr("temperature"), "LIKE", "%0.7%")),
    ("span.attributes.model_version ILIKE '%V2%'", C(attr("model_version"), "ILIKE", "%V2%")),
    ("feedback.rating = 'positive'", C(fb("rating"), "=", "positive")),
    ("feedback.user_comment LIKE '%helpful%'", C(fb("user_comment"), "LIKE", "%helpful%")),
    ("expectation.accuracy = 'high'", C(ex("accuracy"), "=", "high")),
    ("expectation.label ILIKE '%success%'", C(ex("label"), "ILIKE", "%success%")),
    (f"trace.end_time_ms > {TS - 3600000}", C(T("end_time_ms"), ">", TS - 3600000)),
    (f"trace.end_time_ms >= {TS - 7200000} AND trace.end_time_ms <= {TS - 3600000}",
     And((C(T("end_time_ms"), ">=", TS - 7200000), C(T("end_time_ms"), "<=", TS - 3600000)))),
    ("trace.status = 'OK' AND tag.importance = 'high'",
     And((C(T("status"), "=", "OK"), C(tag("importance"), "=", "high")))),
    ("""
        tag.environment = 'production'
        AND trace.status = 'ERROR'
        AND trace.execution_time_ms > 500
    """, And((C(tag("environment"), "=", "production"), C(T("status"), "=", "ERROR"),
              C(T("execution_time_ms"), ">", 500)))),
    ("""
        span.name LIKE '%llm%'
        AND feedback.rating = 'positive'
        AND trace.execution_time_ms < 1000
    """, And((C(S("name"), "LIKE", "%llm%"), C(fb("rating"), "=", "positive"),
              C(T("execution_time_ms"), "<", 1000)))),
    ("""
        trace.name ILIKE '%inference%'
        AND trace.timestamp_ms > 1700000000000
        AND span.attributes.model_version LIKE '%v2%'
    """, And((C(T("name"), "ILIKE", "%inference%"), C(T("timestamp_ms"), ">", 1700000000000),
              C(attr("model_version"), "LIKE", "%v2%")))),
    ("status = 'OK'", C(T("status"), "=", "OK")),
    # [dbx] quick reference
    ("attributes.status = 'OK'", C(T("status"), "=", "OK")),
    ("attributes.status = 'ERROR'", C(T("status"), "=", "ERROR")),
    ("attributes.timestamp_ms > 1749006880539", C(T("timestamp_ms"), ">", 1749006880539)),
    ("attributes.execution_time_ms > 5000", C(T("execution_time_ms"), ">", 5000)),
    ("tags.environment = 'production'", C(tag("environment"), "=", "production")),
    ("tags.`mlflow.traceName` = 'my_function'", C(tag("mlflow.traceName"), "=", "my_function")),
    ("metadata.`mlflow.user` = 'alice@company.com'",
     C(meta("mlflow.user"), "=", "alice@company.com")),
    ("attributes.status = 'OK' AND tags.environment = 'production'",
     And((C(T("status"), "=", "OK"), C(tag("environment"), "=", "production")))),
    # [2.21] Query Traces
    ("status = 'ERROR'", C(T("status"), "=", "ERROR")),
    ("name = 'predict'", C(T("name"), "=", "predict")),
    (f"trace.timestamp > {TS - 3600000}", C(T("timestamp_ms"), ">", TS - 3600000)),
    # [3.x] syntax rules
    ("tags.operation_type = 'x'", C(tag("operation_type"), "=", "x")),
    ("metadata.run_id = 'x'", C(meta("run_id"), "=", "x")),
    ("tags.`model-name` = 'x'", C(tag("model-name"), "=", "x")),
    ("execution_time_ms > 1000", C(T("execution_time_ms"), ">", 1000)),
    # [skill]
    ("metadata.`mlflow.trace.session` = 'session_abc'",
     C(meta("mlflow.trace.session"), "=", "session_abc")),
    ("metadata.`mlflow.trace.user` = 'user@example.com'",
     C(meta("mlflow.trace.user"), "=", "user@example.com")),
    # [store] test_search_traces_with_filter and the per-feature tests
    ("name != 'aaa'", C(T("name"), "!=", "aaa")),
    ("status != 'OK'", C(T("status"), "!=", "OK")),
    ("attributes.name != 'aaa'", C(T("name"), "!=", "aaa")),
    ("trace.name != 'aaa'", C(T("name"), "!=", "aaa")),
    ("`timestamp` >= 1 AND execution_time < 10",
     And((C(T("timestamp_ms"), ">=", 1), C(T("execution_time_ms"), "<", 10)))),
    ("tag.fruit = 'apple'", C(tag("fruit"), "=", "apple")),
    ("tags.fruit = 'apple' and tags.color != 'red'",
     And((C(tag("fruit"), "=", "apple"), C(tag("color"), "!=", "red")))),
    ("run_id = 'run0'", C(T("run_id"), "=", "run0")),
    ("request_metadata.mlflow.sourceRun = 'run0'", C(meta("mlflow.sourceRun"), "=", "run0")),
    ("request_metadata.`mlflow.sourceRun` = 'run0'", C(meta("mlflow.sourceRun"), "=", "run0")),
    ("metadata.mlflow.sourceRun = 'run0'", C(meta("mlflow.sourceRun"), "=", "run0")),
    ("metadata.mlflow.sourceRun != 'run0'", C(meta("mlflow.sourceRun"), "!=", "run0")),
    ('attributes.run_id = "9f1c"', C(T("run_id"), "=", "9f1c")),
    ('run_id = "9f1c" AND tags.type = "training"',
     And((C(T("run_id"), "=", "9f1c"), C(tag("type"), "=", "training")))),
    ('span.name = "database_query"', C(S("name"), "=", "database_query")),
    ('span.name LIKE "database%"', C(S("name"), "LIKE", "database%")),
    ('span.name != "api_call"', C(S("name"), "!=", "api_call")),
    ('trace.text LIKE "%database_query%"', C(T("text"), "LIKE", "%database_query%")),
    ('trace.text LIKE "%what\'s MLflow?%"', C(T("text"), "LIKE", "%what's MLflow?%")),
    ('trace.text LIKE "%llm.%"', C(T("text"), "LIKE", "%llm.%")),
    ('trace.text LIKE "%90%%"', C(T("text"), "LIKE", "%90%%")),
    ('trace.text ILIKE "%test1%"', C(T("text"), "ILIKE", "%test1%")),
    ('span.type IN ("LLM", "RETRIEVER")', C(S("type"), "IN", ("LLM", "RETRIEVER"))),
    ('span.type NOT IN ("LLM", "RETRIEVER")', C(S("type"), "NOT IN", ("LLM", "RETRIEVER"))),
    ('span.type != "LLM"', C(S("type"), "!=", "LLM")),
    ('span.type LIKE "LLM"', C(S("type"), "LIKE", "LLM")),
    ('span.type ILIKE "llm"', C(S("type"), "ILIKE", "llm")),
    ('span.status = "OK"', C(S("status"), "=", "OK")),
    ('span.status IN ("OK", "ERROR")', C(S("status"), "IN", ("OK", "ERROR"))),
    ('span.status != "ERROR"', C(S("status"), "!=", "ERROR")),
    ('span.content LIKE "%gpt-4%"', C(S("content"), "LIKE", "%gpt-4%")),
    ('span.content ILIKE "%MACHINE LEARNING%"', C(S("content"), "ILIKE", "%MACHINE LEARNING%")),
    ('span.type = "LLM" AND span.status = "OK" AND span.content LIKE "%gpt-4%"',
     And((C(S("type"), "=", "LLM"), C(S("status"), "=", "OK"),
          C(S("content"), "LIKE", "%gpt-4%")))),
    ('span.type = "LLM" AND span.type = "RETRIEVER"',
     And((C(S("type"), "=", "LLM"), C(S("type"), "=", "RETRIEVER")))),
    ('span.attributes.model LIKE "%gpt-4%"', C(attr("model"), "LIKE", "%gpt-4%")),
    ('span.attributes.similarity.threshold LIKE "%0.8%"',
     C(attr("similarity.threshold"), "LIKE", "%0.8%")),
    ('feedback.correctness = "true"', C(fb("correctness"), "=", "true")),
    ('feedback.helpfulness = "5"', C(fb("helpfulness"), "=", "5")),
    ('feedback.quality = "high"', C(fb("quality"), "=", "high")),
    ('expectation.response_length = "200" AND expectation.latency_ms = "1000"',
     And((C(ex("response_length"), "=", "200"), C(ex("latency_ms"), "=", "1000")))),
    ('trace.run_id = "run1"', C(T("run_id"), "=", "run1")),
    ('trace.client_request_id = "client-req-abc"',
     C(T("client_request_id"), "=", "client-req-abc")),
    ('trace.client_request_id ILIKE "%ABC%"', C(T("client_request_id"), "ILIKE", "%ABC%")),
    ('trace.name LIKE "Generate%"', C(T("name"), "LIKE", "Generate%")),
    ('tag.environment LIKE "production%"', C(tag("environment"), "LIKE", "production%")),
    ('feedback.comment ILIKE "%GREAT%"', C(fb("comment"), "ILIKE", "%GREAT%")),
    ("feedback.quality IS NOT NULL", C(fb("quality"), "IS NOT NULL")),
    ("feedback.quality IS NULL", C(fb("quality"), "IS NULL")),
    ("expectation.score IS NOT NULL", C(ex("score"), "IS NOT NULL")),
    ("expectation.score IS NULL", C(ex("score"), "IS NULL")),
    ('feedback.quality IS NOT NULL AND feedback.quality = "good"',
     And((C(fb("quality"), "IS NOT NULL"), C(fb("quality"), "=", "good")))),
    ('expectation.output_format LIKE "%JSON%"', C(ex("output_format"), "LIKE", "%JSON%")),
    ('metadata.custom_field LIKE "production%"', C(meta("custom_field"), "LIKE", "production%")),
    ('trace.name LIKE "Generate%" AND tag.env = "production"',
     And((C(T("name"), "LIKE", "Generate%"), C(tag("env"), "=", "production")))),
    ('trace.client_request_id ILIKE "%PROD%" AND trace.name = "QueryDatabase"',
     And((C(T("client_request_id"), "ILIKE", "%PROD%"), C(T("name"), "=", "QueryDatabase")))),
    ('trace.name ILIKE "%_log%"', C(T("name"), "ILIKE", "%_log%")),
    ('span.name LIKE "llm.%"', C(S("name"), "LIKE", "llm.%")),
    ('trace.name RLIKE "^Generate[RE]"', C(T("name"), "RLIKE", "^Generate[RE]")),
    ('trace.name RLIKE "(Query|Embedding)"', C(T("name"), "RLIKE", "(Query|Embedding)")),
    ('tag.environment RLIKE "us-(east|west)-[0-9]"',
     C(tag("environment"), "RLIKE", "us-(east|west)-[0-9]")),
    (r'span.name RLIKE "^llm\."', C(S("name"), "RLIKE", r"^llm\.")),
    (r'span.name RLIKE "^database\.query_users$"',
     C(S("name"), "RLIKE", r"^database\.query_users$")),
    ('feedback.comment RLIKE "Great.*helpful"', C(fb("comment"), "RLIKE", "Great.*helpful")),
    ("metadata.region IS NULL", C(meta("region"), "IS NULL")),
    ('metadata.region IS NULL AND metadata.env = "staging"',
     And((C(meta("region"), "IS NULL"), C(meta("env"), "=", "staging")))),
    ("tag.region IS NOT NULL", C(tag("region"), "IS NOT NULL")),
    (r'metadata.version RLIKE "v[0-9]+\.[0-9]+\.[0-9]"',
     C(meta("version"), "RLIKE", r"v[0-9]+\.[0-9]+\.[0-9]")),
    ('trace.client_request_id RLIKE "[0-9]{3}$"', C(T("client_request_id"), "RLIKE", "[0-9]{3}$")),
    ('span.type RLIKE "(EMBEDDING|RETRIEVER)"', C(S("type"), "RLIKE", "(EMBEDDING|RETRIEVER)")),
    ('span.attributes.model RLIKE "(preview|[0-9]{8})"',
     C(attr("model"), "RLIKE", "(preview|[0-9]{8})")),
    ('tag.special LIKE "%@%"', C(tag("special"), "LIKE", "%@%")),
    ('tag.special LIKE "%#%"', C(tag("special"), "LIKE", "%#%")),
    ('tag.special LIKE "%/%"', C(tag("special"), "LIKE", "%/%")),
    ("trace.timestamp_ms != 1000000", C(T("timestamp_ms"), "!=", 1000000)),
    ("trace.timestamp_ms >= 1005000 AND trace.timestamp_ms < 1015000",
     And((C(T("timestamp_ms"), ">=", 1005000), C(T("timestamp_ms"), "<", 1015000)))),
    ("trace.execution_time_ms != 1000", C(T("execution_time_ms"), "!=", 1000)),
    ("trace.end_time_ms = 1003000", C(T("end_time_ms"), "=", 1003000)),
    ("trace.end_time_ms <= 1005000", C(T("end_time_ms"), "<=", 1005000)),
    ("trace.status LIKE 'OK'", C(T("status"), "LIKE", "OK")),
    ("trace.status ILIKE 'error'", C(T("status"), "ILIKE", "error")),
    ("status = 'IN_PROGRESS'", C(T("status"), "=", "IN_PROGRESS")),
    ("trace.execution_time_ms < 1000 AND trace.status = 'OK'",
     And((C(T("execution_time_ms"), "<", 1000), C(T("status"), "=", "OK")))),
    ('trace.name = "FastQuery" AND trace.execution_time_ms < 500',
     And((C(T("name"), "=", "FastQuery"), C(T("execution_time_ms"), "<", 500)))),
    ('trace.timestamp_ms >= 1000000 AND trace.timestamp_ms <= 1002000 '
     'AND trace.name LIKE "%Query%"',
     And((C(T("timestamp_ms"), ">=", 1000000), C(T("timestamp_ms"), "<=", 1002000),
          C(T("name"), "LIKE", "%Query%")))),
    ('prompt = "chat-assistant-prompt/1"', C(T("prompt"), "=", "chat-assistant-prompt/1")),
    # [utils] SearchTraceUtils: bare booleans and numbers for feedback, span filters
    ("feedback.is_correct = true", C(fb("is_correct"), "=", True)),
    ("feedback.is_correct = false", C(fb("is_correct"), "=", False)),
    ("feedback.is_correct != true", C(fb("is_correct"), "!=", True)),
    ("feedback.score = 0.95", C(fb("score"), "=", 0.95)),
    ("feedback.score > 0.5", C(fb("score"), ">", 0.5)),
    ("feedback.score < 0.5", C(fb("score"), "<", 0.5)),
    ("feedback.score >= 0.7", C(fb("score"), ">=", 0.7)),
    ("feedback.score <= 0.3", C(fb("score"), "<=", 0.3)),
    ("feedback.sentiment = 'positive'", C(fb("sentiment"), "=", "positive")),
    ('feedback.sentiment = "negative"', C(fb("sentiment"), "=", "negative")),
    ("feedback.sentiment != 'neutral'", C(fb("sentiment"), "!=", "neutral")),
    ("feedback.sentiment LIKE 'pos%'", C(fb("sentiment"), "LIKE", "pos%")),
    ("feedback.category IN ('good', 'excellent')", C(fb("category"), "IN", ("good", "excellent"))),
    ("feedback.category NOT IN ('bad', 'poor')", C(fb("category"), "NOT IN", ("bad", "poor"))),
    ("feedback.test = 42", C(fb("test"), "=", 42)),
    ("feedback.test = 3.14", C(fb("test"), "=", 3.14)),
    ("feedback.test IN ('a', 'b', 'c')", C(fb("test"), "IN", ("a", "b", "c"))),
    ("span.type != 'CHAIN'", C(S("type"), "!=", "CHAIN")),
    ("span.type IN ('LLM', 'CHAIN')", C(S("type"), "IN", ("LLM", "CHAIN"))),
    ("span.type NOT IN ('UNKNOWN')", C(S("type"), "NOT IN", ("UNKNOWN",))),
    ("span.content LIKE '%hello%'", C(S("content"), "LIKE", "%hello%")),
    ("span.content ILIKE '%WORLD%'", C(S("content"), "ILIKE", "%WORLD%")),
]


@pytest.mark.parametrize(("text", "expected"), MLFLOW_FILTERS, ids=[t for t, _ in MLFLOW_FILTERS])
def test_every_mlflow_filter_string_parses_unchanged(text: str, expected: Expr):
    got = parse(text)
    assert same(got, expected), render(got)
    assert same(parse(render(got)), got)


# Filters MLflow rejects but assay takes (its language is a superset).
BEYOND_MLFLOW = [
    ("name IN ('foo', 'bar')", C(T("name"), "IN", ("foo", "bar"))),
    ("feedback.score IN (0.5, 0.6)", C(fb("score"), "IN", (0.5, 0.6))),
    ('prompt != "test/1"', C(T("prompt"), "!=", "test/1")),
    ('span.duration = "1000"', C(S("duration_ms"), "=", 1000)),
    ("span.type LIKE '%LLM%'", C(S("type"), "LIKE", "%LLM%")),
    ("status = 'OK' OR status = 'ERROR'", Or((C(T("status"), "=", "OK"),
                                              C(T("status"), "=", "ERROR")))),
    ("NOT (span.type = 'TOOL')", Not(C(S("type"), "=", "TOOL"))),
    ("span.attributes.gen_ai.usage.input_tokens > 1000",
     C(attr("gen_ai.usage.input_tokens"), ">", 1000)),
    ("span.attributes.model = 'gpt-4o'", C(attr("model"), "=", "gpt-4o")),
    ("feedback.correct = true", C(fb("correct"), "=", True)),
    ("trace.timestamp_ms > '2026-01-01'", C(T("timestamp_ms"), ">", "2026-01-01")),
    ("trace.id = 'abc'", C(T("request_id"), "=", "abc")),
    ("span.duration_ms > 250", C(S("duration_ms"), ">", 250)),
    ("trace.text NOT LIKE '%secret%'", C(T("text"), "NOT LIKE", "%secret%")),
    ("tags.env NOT ILIKE 'prod%'", C(tag("env"), "NOT ILIKE", "prod%")),
]


@pytest.mark.parametrize(("text", "expected"), BEYOND_MLFLOW, ids=[t for t, _ in BEYOND_MLFLOW])
def test_extended_forms_parse(text: str, expected: Expr):
    assert same(parse(text), expected)


@pytest.mark.parametrize(("text", "message"), [
    # MLflow rejects these too ([utils], [store])
    ("feedback.is_correct > true", "> compares numbers; feedback.is_correct was given the boolean"),
    ("feedback.is_correct <= false", "<= compares numbers"),
    ("feedback.sentiment > 'positive'", "> compares numbers; feedback.sentiment was given the "
                                        "string 'positive'"),
    ("span.content = 'test'", "span.content does not take ="),
    ("span.content IN ('test')", "span.content does not take IN"),
    ("span.content != 'test'", "span.content does not take !="),
    ("span.type > 'LLM'", "span.type does not take >"),
    ("span.invalid = 'test'", "unknown field 'span.invalid'"),
    ("span.parent_id = '123'", "unknown field 'span.parent_id'"),
    ("trace.status < 'OK'", "trace.status does not take <"),
    ("foo.bar = 'baz'", "unknown field 'foo.bar'"),
    ("invalid = 'foo'", "unknown field 'invalid'"),
    ("invalid", "unknown field 'invalid'"),
    ("name = 'foo' AND invalid", "unknown field 'invalid'"),
    ("trace.tags.foo = 'bar'", "unknown field 'trace.tags.foo' — did you mean 'tags.foo'?"),
    ('prompt = "qa-agent-system-prompt"', "trace.prompt takes 'name/version'"),
    ('prompt = "foo/1/baz"', "trace.prompt takes 'name/version'"),
    ('prompt = ""', "trace.prompt takes 'name/version'"),
    ('prompt LIKE "%qa-agent%"', "trace.prompt does not take LIKE"),
    ('prompt RLIKE "version.*1"', "trace.prompt does not take RLIKE"),
])
def test_filters_mlflow_rejects_are_rejected_with_a_reason(text: str, message: str):
    assert message in first_line(fails(text))


# -- fields, prefixes and aliases ---------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["", "trace.", "attribute.", "attributes.", "TRACE.",
                                    "Attributes.", "`trace`."])
def test_trace_prefixes_all_mean_the_trace_field(prefix: str):
    assert parse(f"{prefix}status = 'OK'") == C(T("status"), "=", "OK")


TRACE_ALIASES = [
    ("status", "status"), ("state", "status"), ("name", "name"),
    ("timestamp_ms", "timestamp_ms"), ("timestamp", "timestamp_ms"),
    ("start_time_ms", "timestamp_ms"), ("request_time", "timestamp_ms"),
    ("execution_time_ms", "execution_time_ms"), ("execution_time", "execution_time_ms"),
    ("execution_duration", "execution_time_ms"), ("duration_ms", "execution_time_ms"),
    ("duration", "execution_time_ms"), ("end_time_ms", "end_time_ms"), ("end_time", "end_time_ms"),
    ("request_id", "request_id"), ("trace_id", "request_id"), ("id", "request_id"),
    ("client_request_id", "client_request_id"), ("run_id", "run_id"), ("text", "text"),
    ("request", "request"), ("response", "response"), ("prompt", "prompt"), ("prompts", "prompt"),
]


def test_the_alias_list_covers_the_trace_table():
    table = {(n, s.name) for s in TRACE_FIELDS.values() for n in (s.name, *s.aliases)}
    assert table == set(TRACE_ALIASES)


def _literal_for(spec: FieldSpec) -> tuple[str, str, object]:
    return {"string": ("=", "'x'", "x"), "number": ("=", "5", 5), "timestamp": (">", "5", 5),
            "fulltext": ("LIKE", "'%x%'", "%x%"), "prompt": ("=", "'p/1'", "p/1")
            }[spec.value_type]


@pytest.mark.parametrize(("alias", "canonical"), TRACE_ALIASES)
@pytest.mark.parametrize("prefix", ["", "trace.", "attributes."])
def test_every_trace_alias_resolves_to_its_canonical_name(prefix: str, alias: str,
                                                          canonical: str):
    op, literal, value = _literal_for(TRACE_FIELDS[canonical])
    assert same(parse(f"{prefix}{alias} {op} {literal}"), C(T(canonical), op, value))
    assert same(parse(f"{prefix}{alias.upper()} {op} {literal}"), C(T(canonical), op, value))


SPAN_ALIASES = [("name", "name"), ("type", "type"), ("span_type", "type"), ("status", "status"),
                ("duration_ms", "duration_ms"), ("duration", "duration_ms"),
                ("content", "content")]


def test_the_alias_list_covers_the_span_table():
    table = {(n, s.name) for s in SPAN_FIELDS.values() for n in (s.name, *s.aliases)}
    assert table == set(SPAN_ALIASES)


@pytest.mark.parametrize(("alias", "canonical"), SPAN_ALIASES)
def test_every_span_alias_resolves(alias: str, canonical: str):
    op, literal, value = _literal_for(SPAN_FIELDS[canonical])
    assert same(parse(f"span.{alias} {op} {literal}"), C(S(canonical), op, value))


@pytest.mark.parametrize(("text", "field"), [
    ("tag.env = 'x'", tag("env")), ("tags.env = 'x'", tag("env")), ("TAGS.env = 'x'", tag("env")),
    ("metadata.env = 'x'", meta("env")), ("request_metadata.env = 'x'", meta("env")),
    ("span.attributes.env = 'x'", attr("env")), ("SPAN.ATTRIBUTES.env = 'x'", attr("env")),
    ("feedback.env = 'x'", fb("env")), ("expectation.env = 'x'", ex("env")),
])
def test_keyed_prefixes_and_their_aliases(text: str, field: Field):
    assert parse(text) == C(field, "=", "x")


def test_keys_are_case_sensitive_but_prefixes_are_not():
    assert parse("Tags.Env = 'x'") == C(tag("Env"), "=", "x")
    assert parse("tags.env = 'x'") != parse("tags.ENV = 'x'")


@pytest.mark.parametrize(("text", "field"), [
    ("span.attributes.gen_ai.usage.input_tokens > 1", attr("gen_ai.usage.input_tokens")),
    ("span.attributes.`gen_ai.usage.input_tokens` > 1", attr("gen_ai.usage.input_tokens")),
    ('span.attributes."gen_ai.usage.input_tokens" > 1', attr("gen_ai.usage.input_tokens")),
    ("span.attributes.gen_ai.`usage.input_tokens` > 1", attr("gen_ai.usage.input_tokens")),
    ("feedback.a.b.c > 1", fb("a.b.c")),
    ("expectation.`a.b`.c > 1", ex("a.b.c")),
])
def test_everything_after_the_prefix_is_the_key(text: str, field: Field):
    assert parse(text) == C(field, ">", 1)


@pytest.mark.parametrize(("text", "key"), [
    ("tags.`mlflow.traceName` = 'x'", "mlflow.traceName"),
    ("tags.`my key` = 'x'", "my key"),
    ('tags."my key" = \'x\'', "my key"),
    ('tags."a""b" = \'x\'', 'a"b'),
    ("tags.`a``b` = 'x'", "a`b"),
    ("tags.`it's` = 'x'", "it's"),
    ("tags.模型 = 'x'", "模型"),
    ("tags.ключ = 'x'", "ключ"),
    ("tags.`🚀 launch` = 'x'", "🚀 launch"),
    ("tags.名前.`ü b` = 'x'", "名前.ü b"),
    ("tags.2024 = 'x'", "2024"),
    ("tags.and = 'x'", "and"),
    ("tags.null = 'x'", "null"),
    ("tags.`AND` = 'x'", "AND"),
])
def test_quoted_unicode_and_keyword_keys(text: str, key: str):
    assert parse(text) == C(tag(key), "=", "x")


def test_multi_byte_values_and_keys_round_trip():
    expr = parse("span.attributes.`日本語 キー` = '値 ✓' AND feedback.`😀` = 'ok'")
    assert expr == And((C(attr("日本語 キー"), "=", "値 ✓"), C(fb("😀"), "=", "ok")))
    assert parse(render(expr)) == expr
    # a symbol is not a word: unquoted, it is refused with a pointer to backticks
    exc = fails("feedback.😀 = 'ok'")
    assert (exc.position, exc.hint) == (9, "quote keys with special characters: tags.`my key`")


def test_double_quoted_token_is_a_key_left_of_the_operator_and_a_value_right_of_it():
    assert parse('"status" = "OK"') == C(T("status"), "=", "OK")
    assert parse('"timestamp" > 5') == C(T("timestamp_ms"), ">", 5)
    assert parse('status IN ("OK", "ERROR")') == C(T("status"), "IN", ("OK", "ERROR"))
    assert parse('tags."env" = "prod"') == C(tag("env"), "=", "prod")
    exc = fails('"tags.env" = 1')
    assert first_line(exc) == ("unknown field '\"tags.env\"' — did you mean 'tags.env'? "
                               "at position 0")


def test_field_path_and_spec():
    expr = parse("span.attributes.`a b` = 1")
    assert isinstance(expr, Comparison)
    field = expr.field
    assert field.path == "span.attributes.`a b`"
    assert field.spec is KEYED_FIELDS["span_attribute"]
    assert T("timestamp_ms").spec.value_type == "timestamp"


# -- operators, literals ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "op", "value"), [
    ("span.attributes.n = 1", "=", 1),
    ("span.attributes.n != 1", "!=", 1),
    ("span.attributes.n <> 1", "!=", 1),
    ("span.attributes.n < 1", "<", 1),
    ("span.attributes.n <= 1", "<=", 1),
    ("span.attributes.n > 1", ">", 1),
    ("span.attributes.n >= 1", ">=", 1),
    ("span.attributes.n LIKE 'a%'", "LIKE", "a%"),
    ("span.attributes.n like 'a%'", "LIKE", "a%"),
    ("span.attributes.n NOT LIKE 'a%'", "NOT LIKE", "a%"),
    ("span.attributes.n not like 'a%'", "NOT LIKE", "a%"),
    ("span.attributes.n ILIKE 'a%'", "ILIKE", "a%"),
    ("span.attributes.n iLike 'a%'", "ILIKE", "a%"),
    ("span.attributes.n NOT ILIKE 'a%'", "NOT ILIKE", "a%"),
    ("span.attributes.n RLIKE '^a'", "RLIKE", "^a"),
    ("span.attributes.n rlike '^a'", "RLIKE", "^a"),
    ("span.attributes.n IN (1, 'a', true)", "IN", (1, "a", True)),
    ("span.attributes.n in (1)", "IN", (1,)),
    ("span.attributes.n NOT IN (1, 2)", "NOT IN", (1, 2)),
    ("span.attributes.n Not In (1, 2)", "NOT IN", (1, 2)),
    ("span.attributes.n IS NULL", "IS NULL", None),
    ("span.attributes.n is null", "IS NULL", None),
    ("span.attributes.n IS NOT NULL", "IS NOT NULL", None),
    ("span.attributes.n Is Not Null", "IS NOT NULL", None),
])
def test_every_operator_and_case_insensitive_keywords(text: str, op: str, value: object):
    assert same(parse(text), C(attr("n"), op, value))


def test_operators_need_no_spaces():
    assert parse("span.attributes.n>=-1") == C(attr("n"), ">=", -1)
    assert parse("status='OK'and(name='a'or name='b')") == And((
        C(T("status"), "=", "OK"), Or((C(T("name"), "=", "a"), C(T("name"), "=", "b")))))


@pytest.mark.parametrize(("literal", "value"), [
    ("0", 0), ("42", 42), ("-1", -1), ("+7", 7), ("1.5", 1.5), ("-0.25", -0.25), (".5", 0.5),
    ("5.", 5.0), ("1.5e3", 1500.0), ("1E-3", 0.001), ("-2e+2", -200.0), ("1e3", 1000.0),
    ("9223372036854775807", 2 ** 63 - 1), ("-9223372036854775808", -(2 ** 63)),
    ("007", 7),
])
def test_numbers(literal: str, value: int | float):
    got = parse(f"feedback.x = {literal}")
    assert isinstance(got, Comparison)
    assert got.value == value and type(got.value) is type(value)
    assert got.raw == literal


@pytest.mark.parametrize("literal", ["true", "TRUE", "True", "tRuE", "false", "FALSE", "False"])
def test_bare_booleans(literal: str):
    got = parse(f"feedback.correct = {literal}")
    assert isinstance(got, Comparison) and got.value is (literal.lower() == "true")


def test_quoted_booleans_stay_strings():
    assert same(parse("feedback.correct = 'true'"), C(fb("correct"), "=", "true"))


@pytest.mark.parametrize(("literal", "value"), [
    ("'it''s'", "it's"), ('"say ""hi"""', 'say "hi"'), ("''", ""), ('""', ""),
    ("'a\\b'", "a\\b"), ("'line\nbreak'", "line\nbreak"), ("'日本語'", "日本語"),
    ("'🙂 ok'", "🙂 ok"), ("'\"'", '"'), ("\"'\"", "'"), ("''''", "'"),
    ("'%_[]^$'", "%_[]^$"), ("'  padded  '", "  padded  "), ("'--'", "--"),
])
def test_strings_and_escapes(literal: str, value: str):
    got = parse(f"tags.k = {literal}")
    assert got == C(tag("k"), "=", value)
    assert isinstance(got, Comparison) and got.raw == literal


def test_numeric_strings_become_numbers_on_numeric_fields():
    assert same(parse("trace.execution_time_ms > '500'"), C(T("execution_time_ms"), ">", 500))
    assert same(parse("span.duration_ms <= '2.5'"), C(S("duration_ms"), "<=", 2.5))
    assert same(parse("trace.timestamp_ms IN ('1', 2)"), C(T("timestamp_ms"), "IN", (1, 2)))
    assert same(parse("feedback.score >= '0.5'"), C(fb("score"), ">=", 0.5))
    # ...but not on string fields, nor under = for typed fields (MLflow compares text there)
    assert same(parse("trace.name = '500'"), C(T("name"), "=", "500"))
    assert same(parse("feedback.score = '5'"), C(fb("score"), "=", "5"))


@pytest.mark.parametrize("date", [
    "2026-01-01", "2026-01-01T12:00", "2026-01-01T12:00:00", "2026-01-01 12:00:00",
    "2026-01-01T12:00:00Z", "2026-01-01T12:00:00.123Z", "2026-01-01T12:00:00.123456+05:30",
    "2026-01-01T12:00:00-0800", "2026-01-01t12:00:00z", "2024-02-29T23:59:59+01",
])
def test_iso_dates_are_kept_as_strings_on_timestamp_fields(date: str):
    for field in ("timestamp_ms", "end_time_ms"):
        assert same(parse(f"trace.{field} >= '{date}'"), C(T(field), ">=", date))


@pytest.mark.parametrize(("date", "ms"), [
    ("1970-01-01", 0),
    ("2026-01-01", 1_767_225_600_000),
    ("2026-01-01T00:00:00Z", 1_767_225_600_000),
    ("2026-01-01T01:00:00+01:00", 1_767_225_600_000),
    ("2025-12-31T19:00:00-05:00", 1_767_225_600_000),
    ("2026-01-01T00:00:00.5", 1_767_225_600_500),
    ("2026-01-01T00:00:00.123456789Z", 1_767_225_600_123),
    ("1969-12-31T23:59:59Z", -1000),
])
def test_iso_to_epoch_ms(date: str, ms: int):
    assert iso_to_epoch_ms(date) == ms


@pytest.mark.parametrize("text", [
    "yesterday", "2026-13-01", "2026-02-30", "2026-1-1", "20260101", "2026-01-01T25:00",
    "2026-01-01T12", "2026-01-01T12:00:00+24:00", "2026-01-01X", "2026-01-01T12:00:00.",
    "2026-01-01T12:00+5", "", "2026-01-01T12:60",
])
def test_non_dates_are_refused(text: str):
    assert parse_iso_datetime(text) is None
    with pytest.raises(ValueError):
        iso_to_epoch_ms(text)
    if text.isdigit():  # a quoted number is a number, not a date
        assert parse(f"trace.timestamp_ms > '{text}'") == C(T("timestamp_ms"), ">", int(text))
        return
    exc = fails(f"trace.timestamp_ms > '{text}'")
    assert first_line(exc).startswith("trace.timestamp_ms takes a number or an ISO date")
    assert exc.position == 21


def test_durations_do_not_take_dates():
    exc = fails("trace.execution_time_ms > '2026-01-01'")
    assert first_line(exc) == ("trace.execution_time_ms takes a number, not the string "
                               "'2026-01-01' at position 26")


# -- structure: precedence, NOT, parentheses, flattening ----------------------------------------

A, B, Cc, D = (C(T("name"), "=", n) for n in "abcd")
NAMES = {"a": "name = 'a'", "b": "name = 'b'", "c": "name = 'c'", "d": "name = 'd'"}


def f(template: str) -> str:
    return template.format(**NAMES)


@pytest.mark.parametrize(("template", "expected"), [
    ("{a} AND {b} OR {c}", Or((And((A, B)), Cc))),
    ("{a} OR {b} AND {c}", Or((A, And((B, Cc))))),
    ("{a} OR {b} AND {c} OR {d}", Or((A, And((B, Cc)), D))),
    ("({a} OR {b}) AND {c}", And((Or((A, B)), Cc))),
    ("NOT {a} AND {b}", And((Not(A), B))),
    ("NOT {a} OR {b}", Or((Not(A), B))),
    ("NOT ({a} AND {b})", Not(And((A, B)))),
    ("NOT NOT {a}", Not(Not(A))),
    ("{a} AND NOT {b}", And((A, Not(B)))),
    ("{a} AND ({b} AND {c})", And((A, B, Cc))),
    ("({a} AND {b}) AND ({c} AND {d})", And((A, B, Cc, D))),
    ("{a} OR ({b} OR {c}) OR {d}", Or((A, B, Cc, D))),
    ("(({a}))", A),
    ("((({a}) AND (({b}))))", And((A, B))),
    ("NOT ({a})", Not(A)),
    ("{a} and {b} or not {c}", Or((And((A, B)), Not(Cc)))),
    ("({a} OR {b}) AND ({c} OR {d})", And((Or((A, B)), Or((Cc, D))))),
])
def test_precedence_not_and_parentheses(template: str, expected: Expr):
    assert parse(f(template)) == expected


def test_flattening_is_by_kind_only():
    expr = parse(f("{a} AND ({b} OR ({c} OR {d}))"))
    assert expr == And((A, Or((B, Cc, D))))


def test_builders_flatten_and_unwrap():
    assert and_(A) is A
    assert and_(and_(A, B), and_(Cc, D)) == And((A, B, Cc, D))
    assert or_(A, or_(B, Cc)) == Or((A, B, Cc))
    assert and_(A, or_(B, Cc)) == And((A, Or((B, Cc))))
    assert not_(A) == Not(A)
    with pytest.raises(ValueError):
        and_()
    with pytest.raises(ValueError):
        or_()


def test_comparisons_walks_left_to_right():
    expr = parse(f("{a} AND NOT ({b} OR {c}) AND {d}"))
    assert list(comparisons(expr)) == [A, B, Cc, D]


def test_positions_and_raw_text_are_kept_but_not_compared():
    text = "status = 'OK' AND NOT span.attributes.n IN (1,  2.50)"
    expr = parse(text)
    assert isinstance(expr, And)
    first, negation = expr.items
    assert isinstance(first, Comparison) and isinstance(negation, Not)
    second = negation.item
    assert isinstance(second, Comparison)
    assert (first.position, first.field.position, first.raw) == (0, 0, "'OK'")
    assert negation.position == 18
    assert (second.position, second.raw, second.value) == (22, ("1", "2.50"), (1, 2.5))
    assert expr.position == 0
    assert expr == parse("trace.status='OK' and not span.attributes.n in (1,2.5)")


@pytest.mark.parametrize("text", ["", " ", "\n\t  ", "\u3000"])
def test_blank_filters_mean_no_filter(text: str):
    assert parse_filter(text) is None


def test_none_is_no_filter_and_other_types_are_invalid():
    assert parse_filter(None) is None  # type: ignore[arg-type]
    with pytest.raises(InvalidFilter, match="a filter must be a string, not int"):
        parse_filter(42)  # type: ignore[arg-type]


# -- errors: message, exact position, did-you-mean ----------------------------------------------

@pytest.mark.parametrize(("text", "line", "position"), [
    ("trace.status =", "expected a value after '='", 14),
    ("trace.status = ", "expected a value after '='", 15),
    ("x ='abc", "unterminated string starting", 3),
    ('tags.x = "abc', "unterminated string starting", 9),
    ("tags.`abc = 'x'", "unterminated backtick-quoted key starting", 5),
    ('tags."abc = 1', "unterminated double-quoted key starting", 5),
    ("tags = 'x'", "unknown field 'tags' — did you mean 'tags.<key>'?", 0),
    ("metadata = 'x'", "unknown field 'metadata' — did you mean 'metadata.<key>'?", 0),
    ("feedback = 1", "unknown field 'feedback' — did you mean 'feedback.<name>'?", 0),
    ("status = OK", "expected a value after '=', found 'OK'", 9),
    ("trace.timestamp_ms LIKE 'x'", "trace.timestamp_ms does not take LIKE", 19),
    ("trace.status > 3", "trace.status does not take >", 13),
    ("trace.text = 'x'", "trace.text does not take =", 11),
    ("trace.execution_time_ms > 'slow'",
     "trace.execution_time_ms takes a number, not the string 'slow'", 26),
    ("trace.execution_time_ms = true", "trace.execution_time_ms takes a number, not the boolean "
                                       "true", 26),
    ("span.type IN ('LLM', 3)", "span.type takes a quoted string, not the number 3", 21),
    ("trace.status = true", "trace.status takes a quoted string, not the boolean true", 15),
    ("tags.env = 5", "tags.env takes a quoted string, not the number 5", 11),
    ("span.attributes.x LIKE 5", "LIKE matches strings; span.attributes.x was given the "
                                 "number 5", 23),
    ("feedback.x > 'abc'", "> compares numbers; feedback.x was given the string 'abc'", 13),
    ("prompt = 'x'", "trace.prompt takes 'name/version', not 'x'", 9),
    ("prompt IN ('a/1', 'b')", "trace.prompt takes 'name/version', not 'b'", 18),
    ("(status = 'OK'", "expected ')'", 14),
    ("(status = 'OK' name = 'x')", "expected ')', found 'name'", 15),
    ("status = 'OK')", "unmatched ')'", 13),
    ("status = 'OK' name = 'x'", "expected AND, OR or the end of the filter, found 'name'", 14),
    ("status = 'OK' AND", "expected a field, '(' or NOT after 'AND'", 17),
    ("status = 'OK' AND AND name = 'x'", "expected a field, '(' or NOT after 'AND', found 'AND'",
     18),
    ("status = 'OK' OR", "expected a field, '(' or NOT after 'OR'", 16),
    ("NOT", "expected a field, '(' or NOT after 'NOT'", 3),
    ("()", "expected a field, '(' or NOT after '(', found ')'", 1),
    ("'OK' = status", "expected a field, '(' or NOT, found 'OK'", 0),
    ("= 'OK'", "expected a field, '(' or NOT, found '='", 0),
    ("status", "expected an operator after 'status'", 6),
    ("status 'OK'", "expected an operator after 'status', found 'OK'", 7),
    ("status BETWEEN 1 AND 2", "expected an operator after 'status', found 'BETWEEN'", 7),
    ("trace.name NOT RLIKE 'a'", "expected IN, LIKE or ILIKE after NOT, found 'RLIKE'", 15),
    ("trace.name NOT = 'a'", "expected IN, LIKE or ILIKE after NOT, found '='", 15),
    ("trace.name IS 'x'", "expected NULL or NOT NULL after IS, found 'x'", 14),
    ("trace.name IS NOT 'x'", "expected NULL after IS NOT, found 'x'", 18),
    ("trace.name == 'x'", "'==' is not an operator", 11),
    ("status ! 'OK'", "unexpected '!'", 7),
    ("trace.name = null", "expected a value after '=', found 'null'", 13),
    ("trace.name = `x`", "expected a value after '=', found '`x`'", 13),
    ("span.type IN ()", "expected a value after '(', found ')'", 14),
    ("span.type IN ('a',)", "expected a value after ',', found ')'", 18),
    ("span.type IN ('a' 'b')", "expected ',' or ')' in the IN list, found 'b'", 18),
    ("span.type IN ('a'", "expected ',' or ')' in the IN list", 17),
    ("span.type IN 'a'", "expected '(' after IN, found 'a'", 13),
    ("span.type NOT IN", "expected '(' after NOT IN", 16),
    ("tags. = 'x'", "expected a key after 'tags.'", 5),
    ("tags.env. = 'x'", "expected a key after 'tags.env.'", 9),
    ("tags .env = 'x'", "unexpected '.'", 5),
    ("tags.`` = 'x'", "empty key", 5),
    ("`` = 'x'", "empty key", 0),
    ("status = 'OK' # comment", "unexpected character '#'", 14),
    ("status = 'OK';", "unexpected character ';'", 13),
    ("x = -", "unexpected '-'", 4),
    ("x = - 1", "unexpected '-'", 4),
    ("trace.execution_time_ms > 1.5.3", "malformed number '1.5.3'", 26),
    ("trace.execution_time_ms > 12abc", "malformed number '12abc'", 26),
    ("trace.execution_time_ms > 1e", "malformed number '1e'", 26),
    ("trace.execution_time_ms > 9223372036854775808",
     "integer 9223372036854775808 is out of the 64-bit range", 26),
    ("trace.execution_time_ms > 99999999999999999999999999",
     "integer 99999999999999999999999999 is out of the 64-bit range", 26),
    ("trace.execution_time_ms > '9223372036854775808'",
     "integer 9223372036854775808 is out of the 64-bit range", 26),
    ("trace.execution_time_ms > 1e999", "number 1e999 is out of range", 26),
    ("staus = 'OK'", "unknown field 'staus' — did you mean 'trace.status'?", 0),
    ("trace.staus = 'OK'", "unknown field 'trace.staus' — did you mean 'trace.status'?", 0),
    ("trace.exec_time_ms > 1", "unknown field 'trace.exec_time_ms' — did you mean "
                               "'trace.execution_time_ms'", 0),
    ("span.nme = 'x'", "unknown field 'span.nme' — did you mean 'span.name'?", 0),
    ("span.attributes = 1", "unknown field 'span.attributes' — did you mean "
                            "'span.attributes.<key>'?", 0),
    ("span.attribute.model = 'x'", "unknown field 'span.attribute.model' — did you mean "
                                   "'span.attributes.model'?", 0),
    ("span_attributes.model = 'x'", "unknown field 'span_attributes.model' — did you mean "
                                    "'span.attributes.model'?", 0),
    ("span = 'x'", "unknown field 'span' — did you mean 'span.name', 'span.type' or "
                   "'span.attributes.<key>'?", 0),
    ("spans.name = 'x'", "unknown field 'spans.name' — did you mean 'span.name'?", 0),
    ("trace.span.name = 'x'", "unknown field 'trace.span.name' — did you mean 'span.name'?", 0),
    ("feedbak.correct = true", "unknown field 'feedbak.correct' — did you mean "
                               "'feedback.correct'?", 0),
    ("tgas.env = 'x'", "unknown field 'tgas.env' — did you mean 'tags.env'?", 0),
    ("metdata.env = 'x'", "unknown field 'metdata.env' — did you mean 'metadata.env'?", 0),
    ("assessment.x = 1", "unknown field 'assessment.x' — did you mean 'feedback.x' or "
                         "'expectation.x'?", 0),
    ("assessments = 1", "unknown field 'assessments' — did you mean 'feedback.<name>' or "
                        "'expectation.<name>'?", 0),
    ("`tags.env` = 'x'", "unknown field '`tags.env`' — did you mean 'tags.env'?", 0),
    ("status = 'OK' AND spann.type = 'x'", "unknown field 'spann.type' — did you mean "
                                           "'span.type'?", 18),
    ("zzz = 1", "unknown field 'zzz' at", 0),
])
def test_errors_name_the_position_and_what_was_expected(text: str, line: str, position: int):
    exc = fails(text)
    assert exc.position == position
    assert exc.filter_string == text
    assert first_line(exc).startswith(line), first_line(exc)
    assert first_line(exc).endswith(f" at position {position}")


def test_error_text_points_at_the_position_and_carries_a_hint():
    exc = fails("status = OK")
    assert str(exc) == ("expected a value after '=', found 'OK' at position 9\n"
                        "  status = OK\n"
                        "           ^\n"
                        "quote text values: 'OK'")
    assert exc.hint == "quote text values: 'OK'"


@pytest.mark.parametrize(("text", "hint"), [
    ("trace.timestamp_ms LIKE 'x'", "trace.timestamp_ms takes =, !=, <, <=, >, >=, IN, NOT IN, "
                                    "IS NULL, IS NOT NULL"),
    ("trace.status > 3", "trace.status takes =, !=, LIKE, NOT LIKE, ILIKE, NOT ILIKE, RLIKE, IN, "
                         "NOT IN, IS NULL, IS NOT NULL"),
    ("trace.name NOT RLIKE 'a'", "write NOT (field RLIKE '...')"),
    ("trace.name = null", "test for a missing value with IS NULL or IS NOT NULL"),
    ("tags.env = 5", "quote it: '5'"),
    ("(status = 'OK'", "the '(' at position 0 is not closed"),
    ("trace.name == 'x'", "use '=' to test equality"),
    ("trace.timestamp_ms > 'soon'", "write a number or an ISO date (1767225600000, '2026-01-01' "
                                    "or '2026-01-01T12:00:00Z')"),
])
def test_hints_say_how_to_fix_it(text: str, hint: str):
    assert fails(text).hint == hint


def test_unknown_field_hint_lists_the_fields():
    hint = fails("zzz = 1").hint or ""
    for name in ("status", "timestamp_ms", "span.type", "span.attributes.<key>", "tags.<key>",
                 "metadata.<key>", "feedback.<name>", "expectation.<name>"):
        assert name in hint


def test_invalid_filter_is_a_value_error():
    assert isinstance(fails("zzz = 1"), ValueError)


# -- limits --------------------------------------------------------------------------------------

def test_length_limit():
    assert MAX_FILTER_LENGTH == 10_000
    base = "status = 'OK'"
    assert parse(base + " " * (MAX_FILTER_LENGTH - len(base))) == C(T("status"), "=", "OK")
    exc = fails(base + " " * (MAX_FILTER_LENGTH - len(base) + 1))
    assert exc.position == MAX_FILTER_LENGTH
    assert first_line(exc) == ("the filter is 10001 characters long; the limit is 10000 "
                               "at position 10000")


def test_depth_limit_for_parentheses():
    assert MAX_DEPTH == 50
    ok = "(" * 50 + "status = 'OK'" + ")" * 50
    assert parse(ok) == C(T("status"), "=", "OK")
    exc = fails("(" * 51 + "status = 'OK'" + ")" * 51)
    assert exc.position == 50
    assert first_line(exc) == "the filter nests deeper than 50 levels at position 50"


def test_depth_limit_for_not():
    expr = parse("NOT " * 50 + "status = 'OK'")
    for _ in range(50):
        assert isinstance(expr, Not)
        expr = expr.item
    exc = fails("NOT " * 51 + "status = 'OK'")
    assert exc.position == 200


def test_depth_counts_parentheses_and_not_together():
    assert parse("(NOT " * 25 + "status = 'OK'" + ")" * 25) is not None
    assert fails("(NOT " * 26 + "status = 'OK'" + ")" * 26).position == 125


def test_deep_nesting_never_overflows_the_stack():
    for text in ("(" * 9000, "NOT " * 2400, "(" * 4000 + "status = 'OK'" + ")" * 4000):
        fails(text)


def test_long_flat_filters_are_fine():
    text = " OR ".join(f"tags.k = '{i}'" for i in range(500))
    expr = parse(text)
    assert isinstance(expr, Or) and len(expr.items) == 500


def test_in_list_limit(monkeypatch: pytest.MonkeyPatch):
    assert MAX_IN_ITEMS == 10_000
    items = ", ".join(str(i) for i in range(1500))
    got = parse(f"span.attributes.n IN ({items})")
    assert isinstance(got, Comparison) and isinstance(got.value, tuple)
    assert len(got.value) == 1500
    monkeypatch.setattr(filter_parser, "MAX_IN_ITEMS", 3)
    assert parse("span.type IN ('a', 'b', 'c')") == C(S("type"), "IN", ("a", "b", "c"))
    exc = fails("span.type IN ('a', 'b', 'c', 'd')")
    assert exc.position == 29
    assert first_line(exc) == "an IN list holds at most 3 values at position 29"


# -- render ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "rendered"), [
    ("status='OK'", "trace.status = 'OK'"),
    ("tags.`mlflow.traceName` = 'x'", "tags.mlflow.traceName = 'x'"),
    ("tags.`a b` = 'it''s'", "tags.`a b` = 'it''s'"),
    ("tags.`a``b` = 'x'", "tags.`a``b` = 'x'"),
    ("request_metadata.k IS NOT NULL", "metadata.k IS NOT NULL"),
    ("span.attributes.gen_ai.usage.input_tokens > 1.5e3",
     "span.attributes.gen_ai.usage.input_tokens > 1500.0"),
    ("feedback.ok = TRUE", "feedback.ok = true"),
    ("span.span_type not in ('A', \"B\")", "span.type NOT IN ('A', 'B')"),
    ("trace.id = 'x' or state = 'OK'", "trace.request_id = 'x' OR trace.status = 'OK'"),
    ("not (status = 'OK' or status = 'ERROR') and name = 'n'",
     "NOT (trace.status = 'OK' OR trace.status = 'ERROR') AND trace.name = 'n'"),
    ("(status = 'OK' or name = 'a') and (name = 'b' or name = 'c')",
     "(trace.status = 'OK' OR trace.name = 'a') AND (trace.name = 'b' OR trace.name = 'c')"),
    ("status = 'OK' and name = 'a' or name = 'b'",
     "trace.status = 'OK' AND trace.name = 'a' OR trace.name = 'b'"),
    ("NOT NOT status = 'OK'", "NOT NOT trace.status = 'OK'"),
    ("tags.`.` = 'x'", "tags.`.` = 'x'"),
    ("tags.`a.` = 'x'", "tags.`a.` = 'x'"),
    ("tags.ключ = 'x'", "tags.ключ = 'x'"),
])
def test_render_writes_canonical_text(text: str, rendered: str):
    assert render(parse(text)) == rendered
    assert parse(rendered) == parse(text)


# -- properties -----------------------------------------------------------------------------------

def _check_any_text(text: str) -> None:
    try:
        expr = parse_filter(text)
    except InvalidFilter as exc:
        assert 0 <= exc.position <= len(text)
        assert exc.filter_string == text or len(text) > MAX_FILTER_LENGTH
        return
    if expr is not None:
        assert parse_filter(render(expr)) == expr


@settings(max_examples=500)
@given(st.text())
def test_any_text_gives_an_ast_or_invalid_filter(text: str):
    _check_any_text(text)


VOCAB = ["status", "trace.status", "span.type", "span.attributes.x", "tags.`a b`", "tags.k",
         "feedback.f", "trace.timestamp_ms", "prompt", '"status"', "state", "=", "!=", "<>",
         "<", "<=", ">", ">=", "LIKE", "ILIKE", "RLIKE", "NOT", "IN", "IS", "NULL", "AND", "OR",
         "and", "not", "(", ")", ",", "'OK'", "'it''s'", '"x"', "1", "-2.5e3", "true", "false",
         "'2026-01-01'", "'a/1'", ".", "`", "'", '"', "tags.", "1e999", "zzz", "span"]


@settings(max_examples=800)
@given(st.lists(st.sampled_from(VOCAB), max_size=14), st.sampled_from([" ", "", "  \n"]))
def test_token_soup_gives_an_ast_or_invalid_filter(words: list[str], sep: str):
    _check_any_text(sep.join(words))


# An AST strategy: every field in the table, every operator it takes, literals of the right type.

_TEXT = st.text(max_size=12)
_KEY = st.one_of(st.text(min_size=1, max_size=12),
                 st.sampled_from(["env", "gen_ai.usage.input_tokens", "mlflow.traceName",
                                  "a b", "x`y", "模型", "ключ.κλειδί", "1", "AND", "a..b"]))
_INT = st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1)
_NUMBER = st.one_of(_INT, st.floats(allow_nan=False, allow_infinity=False))
_TZ = st.one_of(st.none(), st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))))
_ISO = st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(),
                 st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), _TZ)
_PROMPT = st.builds(lambda n, v: f"{n}/{v}", st.text(min_size=1, max_size=8).filter(
    lambda s: "/" not in s), st.integers(min_value=1, max_value=999))


def _literals(spec: FieldSpec, op: str) -> st.SearchStrategy:
    vtype = spec.value_type
    if vtype in ("string", "keyed", "fulltext"):
        return _TEXT
    if vtype == "number":
        return _NUMBER
    if vtype == "timestamp":
        return st.one_of(_NUMBER, _ISO)
    if vtype == "prompt":
        return _PROMPT
    if op in ("<", "<=", ">", ">="):
        return _NUMBER
    if op in ("LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE", "RLIKE"):
        return _TEXT
    return st.one_of(_TEXT, _NUMBER, st.booleans())


_FIELDS = st.one_of(
    st.sampled_from([T(n) for n in TRACE_FIELDS] + [S(n) for n in SPAN_FIELDS]),
    st.builds(lambda kind, key: Field(kind, kind, key),
              st.sampled_from(sorted(KEYED_FIELDS)), _KEY),
)


@st.composite
def _comparison(draw: st.DrawFn) -> Comparison:
    field = draw(_FIELDS)
    op = draw(st.sampled_from(sorted(field.spec.operators)))
    if op in ("IS NULL", "IS NOT NULL"):
        return Comparison(field, op, None)
    literals = _literals(field.spec, op)
    if op in ("IN", "NOT IN"):
        return Comparison(field, op, tuple(draw(st.lists(literals, min_size=1, max_size=4))))
    return Comparison(field, op, draw(literals))


_EXPR = st.recursive(
    _comparison(),
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=4).map(lambda xs: and_(*xs)),
        st.lists(children, min_size=2, max_size=4).map(lambda xs: or_(*xs)),
        children.map(Not),
    ),
    max_leaves=10,
)


def _depth(expr: Expr) -> int:
    if isinstance(expr, Comparison):
        return 0
    if isinstance(expr, Not):
        return 1 + _depth(expr.item)
    return 1 + max(_depth(i) for i in expr.items)


@settings(max_examples=400)
@given(_EXPR)
def test_render_then_parse_gives_the_same_ast(expr: Expr):
    assume(_depth(expr) <= MAX_DEPTH)
    text = render(expr)
    assume(len(text) <= MAX_FILTER_LENGTH)
    back = parse(text)
    assert back == expr
    assert render(back) == text  # literal types too: True is not 1


@settings(max_examples=300)
@given(_EXPR, st.data())
def test_damaged_filters_still_give_an_ast_or_invalid_filter(expr: Expr, data: st.DataObject):
    text = render(expr)
    assume(text)
    i = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    junk = data.draw(st.sampled_from(["", "'", '"', "`", "(", ")", ".", "NOT ", " AND", ","]))
    _check_any_text(text[:i] + junk + text[i + 1:])


def test_every_printable_ascii_character_alone_or_after_a_field():
    for ch in string.printable:
        _check_any_text(ch)
        _check_any_text(f"status = 'OK' {ch}")
        _check_any_text(f"tags.k {ch} 'x'")
