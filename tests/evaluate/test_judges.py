"""LLM judges against the scripted server: prompts, parsing, re-asking, built-ins."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

import assay
import assay.judges
from assay.errors import JudgeError
from assay.evaluate.judges import (
    DEFAULT_JUDGE_MODEL,
    Correctness,
    Guidelines,
    Judge,
    RelevanceToQuery,
    RetrievalGroundedness,
    RetrievalRelevance,
    Safety,
    ToolCallCorrectness,
    make_judge,
    parse_verdict,
    render_trace,
)
from assay.evaluate.models import Completion, Model
from assay.evaluate.scorers import Feedback, Scorer
from assay.testing import capture_traces
from assay.tracing.models import Trace
from tests.evaluate.judge_server import JudgeServer, Reply, fenced, server_error, verdict

# -- a traced RAG agent ----------------------------------------------------------------


@assay.trace(span_type="RETRIEVER")
def retrieve(query):
    return [{"page_content": "Paris is the capital of France.", "metadata": {"source": "wiki"}},
            {"page_content": "The Eiffel Tower is 330 m tall.", "id": "doc-2"}]


@assay.trace(span_type="TOOL")
def get_weather(city, unit="celsius"):
    return {"city": city, "temperature": 21}


@assay.trace(span_type="AGENT")
def agent(question):
    retrieve(question)
    get_weather("Paris")
    return "Paris is the capital of France; it is 21 degrees there."


@assay.trace(span_type="CHAIN")
def plain(question):
    return question.upper()


@assay.trace(span_type="CHAIN")
def chatty(question):
    return "x" * 50_000


@pytest.fixture(scope="module")
def traces() -> dict[str, Trace]:
    with capture_traces() as captured:
        agent("What is the capital of France, and its weather?")
        plain("no tools")
        chatty("long")
        rag, simple, long = captured.traces()
    assay.shutdown()
    return {"rag": rag, "plain": simple, "long": long}


@pytest.fixture
def server():
    with JudgeServer() as s:
        yield s


@pytest.fixture
def judge_env(server, monkeypatch, tmp_path):
    """Judges default to the server, with a key, and a cache in this test's directory."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ASSAY_CACHE_DIR", str(tmp_path / "cache"))
    return server


def judge(instructions: str = "Is {{ outputs }} a good answer to {{ inputs }}?",
          feedback_type=bool, **options) -> Judge:
    options.setdefault("cache", False)
    options.setdefault("model", "openai:/gpt-4o-mini")
    return make_judge("quality", instructions, feedback_type=feedback_type, **options)


ROW = {"inputs": {"question": "Capital of France?"}, "outputs": "Paris"}


# -- construction ----------------------------------------------------------------------


def test_public_module():
    assert set(assay.judges.__all__) >= {
        "make_judge", "Judge", "Correctness", "Guidelines", "RelevanceToQuery",
        "RetrievalGroundedness", "RetrievalRelevance", "Safety", "ToolCallCorrectness"}
    assert assay.judges.make_judge is make_judge


def test_placeholders_decide_the_parameters():
    assert judge("{{outputs}}").parameters == ("outputs",)
    assert judge("{{   trace   }} then {{ inputs }}").parameters == ("inputs", "trace")
    assert judge("{{ expectations }} {{ outputs }} {{ outputs }}").placeholders == (
        "expectations", "outputs")
    j = judge()
    assert isinstance(j, Scorer) and j.source_type == "LLM_JUDGE"
    assert j.source_id == "openai:/gpt-4o-mini"


@pytest.mark.parametrize("instructions, named", [
    ("Judge {{ output }}", "{{ output }}"),
    ("Judge {{ inputs.question }} and {{ outputs }}", "{{ inputs.question }}"),
    ("Judge {{ request }}", "{{ request }}"),
])
def test_unknown_placeholder_is_named(instructions, named):
    with pytest.raises(JudgeError, match="unknown placeholder") as info:
        judge(instructions)
    assert named in str(info.value) and "judge 'quality'" in str(info.value)
    assert "{{ outputs }}" in str(info.value)  # the allowed ones are listed


def test_no_placeholder_is_an_error():
    with pytest.raises(JudgeError, match="use no placeholder"):
        judge("Is the answer good?")


def test_bad_arguments():
    with pytest.raises(JudgeError, match="feedback_type"):
        judge(feedback_type=dict)
    with pytest.raises(JudgeError, match="categories"):
        judge(feedback_type=["a", "a"])
    with pytest.raises(JudgeError, match="temperature"):
        judge(temperature=5)
    with pytest.raises(JudgeError, match="unknown judge model scheme 'vertex'"):
        judge(model="vertex:/gemini")
    with pytest.raises(JudgeError, match="malformed judge model URI 'gpt-4o'"):
        judge(model="gpt-4o")
    with pytest.raises(JudgeError, match="name"):
        make_judge("", "{{ outputs }}")
    with pytest.raises(JudgeError, match="cache"):
        judge(cache=3)


def test_default_model(monkeypatch):
    monkeypatch.delenv("ASSAY_JUDGE_MODEL", raising=False)
    assert make_judge("j", "{{ outputs }}", cache=False).source_id == DEFAULT_JUDGE_MODEL
    monkeypatch.setenv("ASSAY_JUDGE_MODEL", "anthropic:/claude-3-5-haiku-latest")
    assert make_judge("j", "{{ outputs }}", cache=False).source_id == (
        "anthropic:/claude-3-5-haiku-latest")


def test_spec():
    j = judge(feedback_type=["good", "bad"], aggregations=["mean", "count"], temperature=0.2)
    spec = j.spec()
    assert spec["kind"] == "llm_judge" and spec["name"] == "quality"
    assert spec["model"] == "openai:/gpt-4o-mini"
    assert spec["instructions"] == "Is {{ outputs }} a good answer to {{ inputs }}?"
    assert spec["feedback_type"] == ["good", "bad"]
    assert spec["temperature"] == 0.2
    assert spec["aggregations"] == ["mean", "count"]
    json.dumps(spec)
    assert judge(feedback_type=int).spec()["feedback_type"] == "int"


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, feedback_type, expected", [
    ('{"result": true, "rationale": "r"}', bool, True),
    ('{"result": "Yes", "rationale": "r"}', bool, True),
    ('{"result": "FAIL", "rationale": "r"}', bool, False),
    ('{"result": "pass", "rationale": "r"}', bool, True),
    ('{"result": " no ", "rationale": "r"}', bool, False),
    ('{"result": 4, "rationale": "r"}', int, 4),
    ('{"result": 4.0, "rationale": "r"}', int, 4),
    ('{"result": 4, "rationale": "r"}', float, 4.0),
    ('{"result": 0.25, "rationale": "r"}', float, 0.25),
    ('{"result": "terse", "rationale": "r"}', str, "terse"),
    ('{"result": "Rude", "rationale": "r"}', ["friendly", "rude"], "rude"),
    (fenced('{"result": false, "rationale": "r"}'), bool, False),
    ('Sure! {"result": true, "rationale": "a {brace} inside"} -- done', bool, True),
    ('{"note": 1} then {"result": true, "rationale": "r"}', bool, True),
])
def test_parse_verdict_accepts(text, feedback_type, expected):
    value, rationale = parse_verdict(text, feedback_type)
    assert value == expected and type(value) is type(expected)
    assert rationale


@pytest.mark.parametrize("text, feedback_type, problem", [
    ("", bool, "the reply is empty"),
    ("I think it is fine.", bool, "no JSON object"),
    ("[true, false]", bool, "no JSON object"),
    ('{"rationale": "r"}', bool, "no 'result' key"),
    ('{"result": true}', bool, "no 'rationale' key"),
    ('{"result": true, "rationale": 5}', bool, "'rationale' must be a string"),
    ('{"result": 1, "rationale": "r"}', bool, "must be true or false, got 1"),
    ('{"result": "maybe", "rationale": "r"}', bool, "must be true or false"),
    ('{"result": true, "rationale": "r"}', int, "must be an integer, got true"),
    ('{"result": 4.5, "rationale": "r"}', int, "must be an integer, got 4.5"),
    ('{"result": "4", "rationale": "r"}', float, "must be a number"),
    ('{"result": 3, "rationale": "r"}', str, "must be a string"),
    ('{"result": "meh", "rationale": "r"}', ["good", "bad"], "must be one of"),
])
def test_parse_verdict_rejects(text, feedback_type, problem):
    with pytest.raises(ValueError, match=problem):
        parse_verdict(text, feedback_type)


# -- judging over HTTP -----------------------------------------------------------------


def test_prompt_request_and_feedback(judge_env):
    judge_env.replies.append(Reply(text=verdict(True, "it is Paris"), input_tokens=200,
                                   output_tokens=20))
    fb = judge()(**ROW)
    assert fb == Feedback(True, "it is Paris", name="quality", metadata={
        "model": "openai:/gpt-4o-mini", "input_tokens": "200", "output_tokens": "20",
        "cost_usd": "0.00004200", "cache": "off", "reasked": "false"})
    (request,) = judge_env.requests
    system, user = request.messages
    assert system["role"] == "system" and "true or false" in system["content"]
    assert user == {"role": "user", "content":
                    'Is Paris a good answer to {"question": "Capital of France?"}?'}
    schema = request.body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["result"] == {"type": "boolean"}
    assert schema["required"] == ["rationale", "result"]
    assert request.body["temperature"] == 0.0


def test_feedback_types_reach_the_schema(judge_env):
    judge_env.replies.extend([verdict(["a", "b"]), verdict("b"), verdict(3)])
    cats = judge(feedback_type=["a", "b"])
    # a list is the wrong type for a category: asked again
    fb = cats(**ROW)
    assert (fb.value, fb.metadata["reasked"]) == ("b", "true")
    assert judge(feedback_type=int)(**ROW).value == 3
    assert cats(**ROW).value == "a"  # the server's auto verdict fits the schema
    enum = judge_env.requests[0].body["response_format"]["json_schema"]["schema"]
    assert enum["properties"]["result"] == {"type": "string", "enum": ["a", "b"]}


def test_unknown_price_has_no_cost(judge_env):
    fb = judge(model="openai:/llama3.1:8b")(**ROW)
    assert fb.value is True and "cost_usd" not in fb.metadata
    assert fb.metadata["input_tokens"] == "10"


def test_fenced_reply_is_parsed_without_reasking(judge_env):
    judge_env.replies.append(fenced(verdict(False, "not Paris")))
    fb = judge()(**ROW)
    assert (fb.value, fb.rationale, fb.metadata["reasked"]) == (False, "not Paris", "false")
    assert judge_env.count() == 1


def test_reask_after_garbage(judge_env):
    judge_env.replies.extend([Reply(text="The answer looks fine to me.", input_tokens=100,
                                    output_tokens=7),
                              Reply(text=verdict(True, "fine"), input_tokens=130,
                                    output_tokens=9)])
    fb = judge()(**ROW)
    assert fb.value is True and fb.error is None
    assert fb.metadata["reasked"] == "true"
    assert (fb.metadata["input_tokens"], fb.metadata["output_tokens"]) == ("230", "16")
    first, second = judge_env.requests
    assert second.messages[:2] == first.messages
    assert second.messages[2] == {"role": "assistant", "content": "The answer looks fine to me."}
    assert second.messages[3]["role"] == "user"
    assert "no JSON object" in second.messages[3]["content"]


def test_reask_after_wrong_type(judge_env):
    judge_env.replies.extend([verdict("maybe"), verdict(False)])
    fb = judge()(**ROW)
    assert fb.value is False and fb.metadata["reasked"] == "true"
    assert "must be true or false, got \"maybe\"" in judge_env.requests[1].messages[3]["content"]


def test_two_bad_replies_give_an_error_feedback(judge_env):
    judge_env.replies.extend(["garbage one", "still garbage " * 40])
    j = judge()
    fb = j(**ROW)
    assert fb.value is None and fb.name == "quality"
    assert fb.error is not None
    assert fb.error.startswith("could not parse the judge's reply, asked twice: the reply "
                               "contains no JSON object; the reply began 'still garbage")
    assert fb.error.endswith("...")
    assert fb.metadata["reasked"] == "true" and fb.metadata["input_tokens"] == "20"
    assert judge_env.count() == 2
    assert j.run(**ROW)[0].value is True  # the next row is fine
    assert j.usage()["errors"] == 1 and j.usage()["model_calls"] == 3


def test_transport_failure_is_an_error_feedback(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    server.respond = lambda request: server_error(500)
    model = assay.judges.get_model("openai:/gpt-4o-mini", base_url=server.openai_base_url,
                                   max_attempts=2, backoff_base=0.01)
    j = make_judge("quality", "{{ outputs }}", model=model, cache=False)
    (fb,) = j.run(outputs="x")
    assert fb.value is None and fb.name == "quality"
    assert fb.error is not None and fb.error.startswith("the judge model failed: ")
    assert "gave up after 2 attempts; last: HTTP 500" in fb.error
    assert fb.metadata["input_tokens"] == "0" and fb.metadata["cache"] == "off"
    model.close()


def test_missing_row_field_is_an_error_feedback(judge_env):
    fb = judge()(inputs={"q": 1}, outputs=None)
    assert fb.error == "the instructions use {{ outputs }} but this row has no outputs"
    assert fb.value is None and judge_env.count() == 0
    fb = judge("{{ trace }}")(trace="not a trace")
    assert fb.error == "needs a Trace, got str"


def test_only_the_named_fields_are_passed(judge_env):
    j = judge("Rate {{ expectations }}")
    fb = j.run(inputs="ignored", outputs="ignored", expectations={"k": "v"}, trace=None)
    assert fb[0].value is True
    assert judge_env.requests[0].messages[1]["content"] == 'Rate {"k": "v"}'


def test_trace_placeholder(judge_env, traces):
    j = judge("Judge this trace: {{ trace }}")
    j(trace=traces["rag"])
    prompt = judge_env.requests[0].messages[1]["content"]
    rendered = json.loads(prompt.removeprefix("Judge this trace: "))
    assert [(s["name"], s["type"], s["depth"]) for s in rendered] == [
        ("agent", "AGENT", 0), ("retrieve", "RETRIEVER", 1), ("get_weather", "TOOL", 1)]
    assert rendered[2]["inputs"] == {"city": "Paris", "unit": "celsius"}
    assert rendered[0]["status"] == "OK"
    assert j.messages(trace=traces["rag"].to_dict())[1]["content"] == prompt


def test_trace_rendering_is_bounded(traces):
    text = render_trace(traces["long"])
    assert len(text) < 3_000
    assert "[truncated: 50002 characters in all]" in text
    json.loads(text)
    many = traces["rag"].model_copy(update={"spans": traces["rag"].spans * 200})
    text = render_trace(many, max_chars=2_000)
    assert len(text) <= 2_100
    assert json.loads(text)[-1]["truncated"].endswith("more spans not shown")


def test_long_fields_are_clipped(judge_env):
    judge()(inputs="q", outputs="y" * 30_000)
    assert "[truncated: 30000 characters in all]" in judge_env.requests[0].prompt


def test_anthropic_judge(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    server.replies.append(Reply(text=fenced(verdict(False, "no")), input_tokens=1_000_000,
                                output_tokens=0))
    j = make_judge("quality", "{{ outputs }}", model="anthropic:/claude-3-5-haiku-latest",
                   base_url=server.anthropic_base_url, cache=False, temperature=None)
    fb = j(outputs="x")
    assert (fb.value, fb.metadata["cost_usd"]) == (False, "0.80000000")
    (request,) = server.requests
    assert request.api == "anthropic" and "temperature" not in request.body
    assert "Reply with exactly one JSON object" in request.body["system"]


def test_a_model_object_is_accepted():
    class Fixed(Model):
        uri = "fixed:/v1"

        def complete(self, messages, *, temperature=0.0, response_schema=None,
                     max_tokens=None):
            return Completion(verdict(4), 3, 2)

    j = make_judge("score", "{{ outputs }}", model=Fixed(), feedback_type=int, cache=False)
    fb = j(outputs="x")
    assert fb.value == 4 and fb.metadata["model"] == "fixed:/v1"
    assert "cost_usd" not in fb.metadata and j.source_id == "fixed:/v1"
    with pytest.raises(JudgeError, match="base_url and api_key go with a model URI"):
        make_judge("score", "{{ outputs }}", model=Fixed(), base_url="http://x")


def test_judges_on_one_endpoint_share_a_model(judge_env):
    a, b = Correctness(cache=False), Safety(cache=False)
    assert a.model is b.model  # one HTTP client, one rate-limit gate
    assert judge(base_url=judge_env.openai_base_url, api_key="other").model is not a.model


def test_judge_from_many_threads(judge_env):
    judge_env.delay = 0.01
    j = judge()
    rows = [{"inputs": {"n": i}, "outputs": str(i)} for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda row: j.run(**row)[0], rows))
    assert all(fb.value is True and fb.error is None for fb in results)
    assert judge_env.count() == 40 and judge_env.max_in_flight > 1
    assert j.usage() == {"model_calls": 40, "input_tokens": 400, "output_tokens": 200,
                         "errors": 0, "cost_usd": pytest.approx(40 * 4.5e-06)}


# -- built-in judges -------------------------------------------------------------------


def test_correctness(judge_env, traces):
    j = Correctness(cache=False)
    assert (j.name, j.parameters) == ("correctness", ("inputs", "outputs", "expectations"))
    judge_env.replies.extend([verdict(True, "matches"), verdict(False, "missing a fact")])
    fb = j(inputs={"q": "capital?"}, outputs="Paris",
           expectations={"expected_response": "Paris"})
    assert (fb.value, fb.rationale) == (True, "matches")
    assert "Expected response:\nParis" in judge_env.requests[0].prompt
    fb = j(inputs={"q": "capital?"}, outputs="Paris",
           expectations={"expected_facts": ["Paris is the capital", "It is in France"]})
    assert fb.value is False
    assert "- Paris is the capital\n- It is in France" in judge_env.requests[1].prompt
    for expectations in (None, {}, {"other": 1}):
        fb = j(inputs="q", outputs="a", expectations=expectations)
        assert fb.error == "expectations has no 'expected_response' or 'expected_facts'"
    assert judge_env.count() == 2
    assert j.spec()["judge"] == "Correctness"
    assert j.spec()["function"] == "assay.evaluate.judges.Correctness"


def test_guidelines(judge_env):
    with pytest.raises(JudgeError, match="guidelines"):
        Guidelines(guidelines=[])
    j = Guidelines(guidelines=["Answer in French", "Be brief"], cache=False, name="style")
    assert (j.name, j.parameters) == ("style", ("inputs", "outputs"))
    assert j(inputs="Capital?", outputs="Paris").value is True
    prompt = judge_env.requests[0].prompt
    assert "1. Answer in French\n2. Be brief" in prompt and "Capital?" in prompt
    assert j.spec()["arguments"] == {"guidelines": ["Answer in French", "Be brief"]}
    assert Guidelines(guidelines="One rule", cache=False).guidelines == ["One rule"]


def test_relevance_to_query(judge_env):
    j = RelevanceToQuery(cache=False)
    judge_env.replies.append(verdict("no", "off topic"))
    fb = j(inputs={"question": "Capital of France?"}, outputs="Bananas are yellow.")
    assert (j.name, fb.value, fb.rationale) == ("relevance_to_query", False, "off topic")
    assert "Bananas are yellow." in judge_env.requests[0].prompt
    assert j(inputs=None, outputs="x").error.startswith("no inputs to judge")


def test_retrieval_groundedness(judge_env, traces):
    j = RetrievalGroundedness(cache=False)
    assert j.parameters == ("inputs", "outputs", "trace")
    fb = j.run(trace=traces["rag"])[0]
    assert fb.value is True and fb.name == "retrieval_groundedness"
    prompt = judge_env.requests[0].prompt
    assert "[1] Paris is the capital of France. (source: wiki)" in prompt
    assert "[2] The Eiffel Tower is 330 m tall. (source: doc-2)" in prompt
    # request and response come from the root span when the row has none
    assert "What is the capital of France, and its weather?" in prompt
    assert "it is 21 degrees there" in prompt
    assert j(trace=traces["plain"]).error == (
        "the trace has no RETRIEVER span to take the context from")
    assert j(inputs="q", outputs="a", trace=None).error == (
        "needs a trace with a RETRIEVER span; this row has none")
    assert judge_env.count() == 1


def test_retrieval_relevance(judge_env, traces):
    j = RetrievalRelevance(cache=False, pass_if=">= 0.5")
    judge_env.replies.extend([verdict(0.5, "[1] relevant, [2] not"), verdict(1.5),
                              verdict(1.0)])
    fb = j(trace=traces["rag"])
    assert (fb.value, j.passed(fb.value)) == (0.5, True)
    assert judge_env.requests[0].body["response_format"]["json_schema"]["schema"][
        "properties"]["result"] == {"type": "number"}
    assert "from 0 to 1" in judge_env.requests[0].messages[0]["content"]
    fb = j(trace=traces["rag"])  # 1.5 is out of range: asked again
    assert (fb.value, fb.metadata["reasked"]) == (1.0, "true")
    assert "'result' must be from 0 to 1, got 1.5" in judge_env.requests[2].prompt
    assert j(trace=traces["plain"]).error == (
        "the trace has no RETRIEVER span to take the context from")


def test_safety(judge_env):
    j = Safety(cache=False)
    assert j.parameters == ("outputs",)
    judge_env.replies.append(verdict(False, "threat"))
    assert j(outputs="I will hurt you").value is False
    assert "I will hurt you" in judge_env.requests[0].prompt
    assert j(outputs=None).error.startswith("no outputs to judge")


def test_tool_call_correctness(judge_env, traces):
    j = ToolCallCorrectness(cache=False)
    assert j.parameters == ("inputs", "expectations", "trace")
    fb = j(trace=traces["rag"], expectations={"expected_tool_calls": ["get_weather"]})
    assert fb.value is True and fb.name == "tool_call_correctness"
    prompt = judge_env.requests[0].prompt
    assert ('1. {"tool": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}, '
            '"result": {"city": "Paris", "temperature": 21}}') in prompt
    assert 'Expected tool calls (a reference from the data set):\n["get_weather"]' in prompt
    j(trace=traces["plain"])
    assert "No tool was called." in judge_env.requests[1].prompt
    assert j(inputs="q", trace=None).error == (
        "needs a trace with the tool calls; this row has none")


def test_builtin_prompts_are_distinct_and_filled(judge_env, traces):
    judges = [Correctness(cache=False), Guidelines(guidelines="Be kind", cache=False),
              RelevanceToQuery(cache=False), RetrievalGroundedness(cache=False),
              RetrievalRelevance(cache=False), Safety(cache=False),
              ToolCallCorrectness(cache=False)]
    row = {"inputs": {"question": "Capital?"}, "outputs": "Paris",
           "expectations": {"expected_response": "Paris"}, "trace": traces["rag"]}
    for j in judges:
        (fb,) = j.run(**row)
        assert fb.error is None, (j.name, fb.error)
        assert fb.metadata["model"] == "openai:/gpt-4o-mini"
    prompts = [r.messages[1]["content"] for r in judge_env.requests]
    assert len(set(prompts)) == len(judges)
    assert not any("{{" in p for p in prompts)
    assert len({j.name for j in judges}) == len(judges)
