"""Built-in deterministic scorers on passing, failing and malformed rows."""

from __future__ import annotations

import json

import pytest

import assay
from assay.evaluate import builtin
from assay.evaluate.builtin import output_text, validate_schema
from assay.evaluate.scorers import Feedback
from assay.testing import capture_traces
from assay.tracing.models import Trace

# -- a traced app ----------------------------------------------------------------------


@assay.trace(span_type="TOOL")
def search(query):
    return [f"doc about {query}"]


@assay.trace(span_type="TOOL")
def calculator(expression):
    return 42


@assay.trace(span_type="LLM")
def openai_call(prompt):
    return {"choices": [{"message": {"content": "42"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


@assay.trace(span_type="CHAT_MODEL")
def anthropic_call(prompt):
    return {"content": [{"type": "text", "text": "42"}],
            "usage": {"input_tokens": 20, "output_tokens": 8}}


@assay.trace(span_type="AGENT")
def agent(question):
    search(question)
    calculator("6*7")
    openai_call(question)
    with assay.start_span("otel_llm", span_type="LLM",
                          attributes={"gen_ai.usage.input_tokens": 7,
                                      "gen_ai.usage.output_tokens": 3}) as span:
        # attributes win over the outputs' usage: this span counts 7 + 3, not 1000
        span.set_outputs({"usage": {"prompt_tokens": 1000}})
    anthropic_call(question)
    search("again")
    return "42"


@assay.trace(span_type="CHAIN")
def plain(question):
    return question.upper()


@pytest.fixture
def traces() -> dict[str, Trace]:
    with capture_traces() as captured:
        agent("meaning of life")
        plain("no tools")
        first, second = captured.traces()
    return {"agent": first, "plain": second}


# -- output_text -----------------------------------------------------------------------


def test_output_text_rule():
    assert output_text("as is") == "as is"
    assert output_text({"a": ["é", 1]}) == '{"a": ["é", 1]}'
    assert output_text([1, 2]) == "[1, 2]"
    assert output_text(3.5) == "3.5"


# -- exact_match -----------------------------------------------------------------------


def test_exact_match_pass_fail():
    s = builtin.exact_match()
    assert s(outputs="Paris", expectations={"expected_response": "Paris"}) == Feedback(
        True, name="exact_match")
    assert s(outputs="paris", expectations={"expected_response": "Paris"}).value is False


def test_exact_match_normalisation_and_key():
    s = builtin.exact_match(key="answer", ignore_case=True, normalize_whitespace=True,
                            name="em")
    assert s(outputs="  The   CITY of\nParis ", expectations={"answer": "the city of paris"}) \
        == Feedback(True, name="em")
    assert s(outputs="Lyon", expectations={"answer": "paris"}).value is False


def test_exact_match_structured_and_given_expected():
    assert builtin.exact_match(expected={"a": 1})(outputs={"a": 1}).value is True
    assert builtin.exact_match(expected={"a": 1})(outputs={"a": 2}).value is False
    assert builtin.exact_match(expected='{"a": 1}')(outputs={"a": 1}).value is True
    assert builtin.exact_match(expected=42)(outputs=42).value is True


def test_exact_match_malformed_rows():
    s = builtin.exact_match()
    assert s(outputs="x", expectations=None) == Feedback(
        None, name="exact_match", error="expectations has no 'expected_response'")
    assert s(outputs="x", expectations={"other": 1}).error == (
        "expectations has no 'expected_response'")
    assert s(outputs=None, expectations={"expected_response": "x"}).error == (
        "no outputs to compare")


# -- contains --------------------------------------------------------------------------


def test_contains_argument_forms():
    one = builtin.contains("Paris")
    assert one(outputs="It is Paris.").value is True
    assert one(outputs="It is Lyon.") == Feedback(False, "missing: 'Paris'", name="contains")
    many = builtin.contains(["paris", "FRANCE"], ignore_case=True)
    assert many(outputs="Paris, France") == Feedback(True, "all present", name="contains")
    assert many(outputs={"city": "Paris"}).rationale == "missing: 'FRANCE'"


def test_contains_from_expectations_and_malformed():
    s = builtin.contains()
    assert s(outputs="a b c", expectations={"expected_substrings": ["a", "c"]}).value is True
    assert s(outputs="a b c", expectations={"expected_substrings": "z"}).value is False
    assert s(outputs="a", expectations={}).error == "expectations has no 'expected_substrings'"
    assert s(outputs="a", expectations={"expected_substrings": [1]}).error == (
        "substrings must be a str or a list of str, got list")
    assert builtin.contains("a")(outputs=None).error == "no outputs to search"


# -- regex -----------------------------------------------------------------------------


def test_regex():
    s = builtin.regex(r"\d{4}")
    assert s(outputs="founded in 1998").value is True
    assert s(outputs="founded long ago").value is False
    assert s(outputs={"year": 1998}).value is True
    full = builtin.regex(r"yes|no", ignore_case=True, full_match=True)
    assert (full(outputs="YES").value, full(outputs="yes, sure").value) == (True, False)
    assert s(outputs=None).error == "no outputs to match"
    with pytest.raises(assay.ScorerError, match="invalid pattern"):
        builtin.regex("(unclosed")


# -- response_length -------------------------------------------------------------------


def test_response_length():
    assert builtin.response_length()(outputs="hello") == Feedback(
        5, "5 chars", name="response_length")
    words = builtin.response_length(unit="words", min_length=2, max_length=3)
    assert words(outputs="one two three").value is True
    too_long = words(outputs="one two three four")
    assert too_long.value is False
    assert too_long.metadata == {"length": "4"}
    assert words(outputs="one").value is False
    assert builtin.response_length()(outputs=None).error == "no outputs to measure"
    with pytest.raises(assay.ScorerError, match="unit"):
        builtin.response_length(unit="tokens")


# -- is_json / json_schema ----------------------------------------------------------


def test_is_json():
    s = builtin.is_json()
    assert s(outputs='{"a": [1, 2]}') == Feedback(True, "valid JSON", name="is_json")
    bad = s(outputs="{a: 1}")
    assert bad.value is False
    assert (bad.rationale or "").startswith("not valid JSON: Expecting property name")
    assert s(outputs={"already": "parsed"}).value is True
    assert s(outputs=None).error == "no outputs to parse"


SCHEMA = {
    "type": "object",
    "title": "An answer",
    "required": ["answer", "confidence"],
    "additionalProperties": False,
    "properties": {
        "answer": {"type": "string", "minLength": 1, "maxLength": 10},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "sources": {"type": "array", "items": {"type": "string", "pattern": "^http"},
                    "maxItems": 2},
        "kind": {"enum": ["fact", "opinion"]},
        "count": {"type": ["integer", "null"]},
    },
}


def test_json_schema_valid():
    s = builtin.json_schema(SCHEMA)
    good = {"answer": "42", "confidence": 0.9, "sources": ["http://a"], "kind": "fact",
            "count": None}
    assert s(outputs=json.dumps(good)) == Feedback(True, "valid", name="json_schema")
    assert s(outputs=good).value is True


def test_json_schema_violations():
    s = builtin.json_schema(SCHEMA)
    bad = {"answer": "", "confidence": 1.5, "sources": ["ftp://a", 3, "http://b"],
           "kind": "rumour", "count": 1.5, "extra": 1}
    result = s(outputs=bad)
    assert result.value is False
    assert validate_schema(bad, SCHEMA) == [
        "$.answer: shorter than 1 characters",
        "$.confidence: 1.5 is above the maximum 1",
        "$.sources: more than 2 items",
        "$.sources[0]: does not match '^http'",
        "$.sources[1]: expected string, got 3",
        "$.kind: 'rumour' is not one of ['fact', 'opinion']",
        "$.count: expected integer or null, got 1.5",
        "$.extra: no value is allowed here",
    ]
    assert result.rationale == "; ".join(validate_schema(bad, SCHEMA)[:5])
    missing = s(outputs='{"answer": "x"}')
    assert missing == Feedback(False, "$: missing required property 'confidence'",
                               name="json_schema")
    assert s(outputs="[1]").rationale == "$: expected object, got [1]"
    assert (s(outputs="nope").rationale or "").startswith("not valid JSON")
    assert s(outputs=None).error == "no outputs to validate"


def test_validate_schema_details():
    assert validate_schema(True, {"type": "integer"}) == ["$: expected integer, got True"]
    assert validate_schema(3.0, {"type": "integer"}) == []
    assert validate_schema(1, {"const": True}) == ["$: expected True, got 1"]
    assert validate_schema(5, {"exclusiveMinimum": 5}) == ["$: 5 is not above 5"]
    assert validate_schema([], {"minItems": 1}) == ["$: fewer than 1 items"]
    assert validate_schema({"a": 1}, {"additionalProperties": {"type": "string"}}) == [
        "$.a: expected string, got 1"]


def test_json_schema_rejects_unsupported_schemas():
    with pytest.raises(assay.ScorerError, match=r"unsupported keyword\(s\) oneOf at #"):
        builtin.json_schema({"oneOf": [{"type": "string"}]})
    with pytest.raises(assay.ScorerError, match="#/properties/a"):
        builtin.json_schema({"properties": {"a": {"$ref": "#/x"}}})
    with pytest.raises(assay.ScorerError, match="unknown type 'str'"):
        builtin.json_schema({"type": "str"})
    with pytest.raises(assay.ScorerError, match="invalid pattern"):
        builtin.json_schema({"pattern": "("})


# -- trace scorers ---------------------------------------------------------------------


def test_latency(traces):
    # the capture clock advances 1 ms per reading
    root = traces["agent"].root_span
    assert root is not None and root.duration_ms is not None
    assert builtin.latency()(trace=traces["agent"]) == Feedback(
        root.duration_ms, f"{root.duration_ms:g} ms", name="latency")
    assert builtin.latency()(trace=traces["plain"]).value == 1.0
    within = builtin.latency(max_ms=5)
    assert within(trace=traces["plain"]).value is True
    slow = within(trace=traces["agent"])
    assert slow.value is False
    assert slow.metadata == {"latency_ms": f"{root.duration_ms:g}"}


def test_trace_scorers_without_a_trace():
    for s in (builtin.latency(), builtin.token_usage(), builtin.tool_called("search"),
              builtin.tool_call_sequence(["search"])):
        assert s(trace=None).error == "needs a trace; this row has none"
        assert s(trace={"spans": []}).error == "needs a Trace, got dict"
        assert s.run(trace=None)[0].value is None


def test_latency_of_an_unfinished_root(traces):
    root = traces["plain"].root_span
    assert root is not None
    open_trace = traces["plain"].model_copy(
        update={"spans": [root.model_copy(update={"end_time_ns": None})]})
    assert builtin.latency()(trace=open_trace).error == "the trace has no finished root span"


def test_token_usage(traces):
    result = builtin.token_usage()(trace=traces["agent"])
    # openai 10+5, otel attributes 7+3, anthropic 20+8
    assert result == Feedback(53, "53 tokens (37 in, 16 out)", name="token_usage",
                              metadata={"input_tokens": "37", "output_tokens": "16",
                                        "model_calls": "3"})
    assert builtin.token_usage(max_tokens=60)(trace=traces["agent"]).value is True
    assert builtin.token_usage(max_tokens=50)(trace=traces["agent"]).value is False
    none = builtin.token_usage()(trace=traces["plain"])
    assert none == Feedback(None, "no token usage recorded in the trace", name="token_usage")


def test_tool_called(traces):
    assert builtin.tool_called("calculator")(trace=traces["agent"]).value is True
    missing = builtin.tool_called("browser")(trace=traces["agent"])
    assert missing == Feedback(False, "tools called: ['search', 'calculator', 'search']",
                               name="tool_called")
    assert builtin.tool_called("search")(trace=traces["plain"]).value is False
    # a non-TOOL span of that name does not count
    assert builtin.tool_called("openai_call")(trace=traces["agent"]).value is False
    with pytest.raises(assay.ScorerError):
        builtin.tool_called("")


def test_tool_call_sequence_exact(traces):
    exact = builtin.tool_call_sequence(["search", "calculator", "search"])
    assert exact(trace=traces["agent"]).value is True
    assert builtin.tool_call_sequence(["search", "calculator"])(
        trace=traces["agent"]).value is False
    assert builtin.tool_call_sequence([])(trace=traces["plain"]).value is True


def test_tool_call_sequence_subsequence_and_expectations(traces):
    sub = builtin.tool_call_sequence(mode="subsequence")
    row = {"trace": traces["agent"]}
    assert sub(**row, expectations={"expected_tool_calls": ["search", "search"]}).value is True
    assert sub(**row, expectations={"expected_tool_calls": ["calculator", "search"]}).value \
        is True
    wrong_order = sub(**row, expectations={"expected_tool_calls": ["calculator", "calculator"]})
    assert wrong_order == Feedback(
        False, "expected ['calculator', 'calculator'], called ['search', 'calculator', 'search']",
        name="tool_call_sequence")
    assert sub(**row, expectations={}).error == "expectations has no 'expected_tool_calls'"
    assert sub(**row, expectations={"expected_tool_calls": "search"}).error == (
        "expected tool calls must be a list of str, got str")
    with pytest.raises(assay.ScorerError, match="mode"):
        builtin.tool_call_sequence(["a"], mode="prefix")
    with pytest.raises(assay.ScorerError, match="list of tool names"):
        builtin.tool_call_sequence("search")  # type: ignore[arg-type]


# -- specs -----------------------------------------------------------------------------


@pytest.mark.parametrize(("made", "function", "arguments"), [
    (builtin.exact_match(ignore_case=True), "exact_match",
     {"expected": None, "key": "expected_response", "ignore_case": True,
      "normalize_whitespace": False}),
    (builtin.contains(("a", "b")), "contains",
     {"substrings": ["a", "b"], "key": "expected_substrings", "ignore_case": False}),
    (builtin.regex("x+"), "regex", {"pattern": "x+", "ignore_case": False,
                                    "full_match": False}),
    (builtin.is_json(), "is_json", {}),
    (builtin.json_schema({"type": "string"}), "json_schema", {"schema": {"type": "string"}}),
    (builtin.response_length(max_length=9), "response_length",
     {"unit": "chars", "min_length": None, "max_length": 9}),
    (builtin.latency(max_ms=100.0), "latency", {"max_ms": 100.0}),
    (builtin.token_usage(max_tokens=10), "token_usage", {"max_tokens": 10}),
    (builtin.tool_called("search"), "tool_called", {"tool_name": "search"}),
    (builtin.tool_call_sequence(["a"], mode="subsequence"), "tool_call_sequence",
     {"expected": ["a"], "key": "expected_tool_calls", "mode": "subsequence"}),
])
def test_builtin_specs(made, function, arguments):
    spec = made.spec()
    assert spec == {"name": function, "kind": "code",
                    "function": f"assay.evaluate.builtin.{function}",
                    "aggregations": ["mean"], "pass_if": None, "timeout": None,
                    "arguments": arguments}
    assert json.loads(json.dumps(spec)) == spec


def test_builtin_name_override():
    s = builtin.regex("a", name="has_a")
    assert s.name == "has_a"
    assert s(outputs="a").name == "has_a"
    assert s.spec()["function"] == "assay.evaluate.builtin.regex"
