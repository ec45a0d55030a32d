"""Judge models over real HTTP against the scripted server: payloads, retries, rate limits."""

from __future__ import annotations

import email.utils
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from assay.errors import JudgeError
from assay.evaluate.models import (
    AnthropicModel,
    Completion,
    OpenAIModel,
    get_model,
    parse_model_uri,
    price_of,
    shared_model,
)
from tests.evaluate.judge_server import (
    JudgeServer,
    Reply,
    rate_limited,
    server_error,
    slow,
    verdict,
)

USER = [{"role": "system", "content": "be fair"}, {"role": "user", "content": "judge this"}]
SCHEMA = {"type": "object", "properties": {"result": {"type": "boolean"}}}


@pytest.fixture
def server():
    with JudgeServer() as s:
        yield s


def openai(server: JudgeServer, **options) -> OpenAIModel:
    options.setdefault("backoff_base", 0.01)
    options.setdefault("api_key", "sk-test")
    model = get_model("openai:/gpt-4o-mini", base_url=server.openai_base_url, **options)
    assert isinstance(model, OpenAIModel)
    return model


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- URIs -------------------------------------------------------------------------------


def test_uri_parsing():
    assert parse_model_uri("openai:/gpt-4o") == ("openai", "gpt-4o")
    assert parse_model_uri("anthropic:/claude-3-5-haiku-latest") == (
        "anthropic", "claude-3-5-haiku-latest")
    assert parse_model_uri("openai:/meta-llama/Llama-3.1-8B") == (
        "openai", "meta-llama/Llama-3.1-8B")
    assert isinstance(get_model("anthropic:/claude-3-5-haiku-latest", api_key="-"), AnthropicModel)


@pytest.mark.parametrize("uri", ["gpt-4o", "openai:", "openai:/", "openai://gpt-4o", ":/x", ""])
def test_malformed_uri_names_it(uri):
    with pytest.raises(JudgeError, match="malformed judge model URI") as info:
        get_model(uri)
    assert repr(uri) in str(info.value)


def test_unknown_scheme_names_it():
    with pytest.raises(JudgeError, match=r"unknown judge model scheme 'gemini'.*openai"):
        get_model("gemini:/gemini-pro")


def test_bad_options_are_judge_errors():
    with pytest.raises(JudgeError, match="max_attempts"):
        get_model("openai:/m", max_attempts=0)
    with pytest.raises(JudgeError, match="timeout"):
        get_model("openai:/m", timeout=-1)
    with pytest.raises(JudgeError, match="cost_per_million_tokens"):
        get_model("openai:/m", cost_per_million_tokens=(1,))
    with pytest.raises(JudgeError, match="openai:/m"):
        get_model("openai:/m", no_such_option=1)


# -- OpenAI -----------------------------------------------------------------------------


def test_openai_request_and_usage(server):
    server.replies.append(Reply(text=verdict(True), input_tokens=123, output_tokens=45))
    with openai(server) as model:
        reply = model.complete(USER, temperature=0.0, response_schema=SCHEMA)
    assert reply == Completion(verdict(True), 123, 45, "gpt-4o-mini")
    (request,) = server.requests
    assert request.api == "openai" and request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["user-agent"].startswith("assay/")
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body["messages"] == USER
    assert request.body["temperature"] == 0.0
    assert request.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "judgement", "strict": True, "schema": SCHEMA}}


def test_openai_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    model = get_model("openai:/gpt-4o")
    assert model.base_url == server.openai_base_url
    model.complete(USER, temperature=None)
    model.close()
    assert server.requests[0].headers["authorization"] == "Bearer sk-env"
    assert "temperature" not in server.requests[0].body
    assert "response_format" not in server.requests[0].body
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert get_model("openai:/gpt-4o").base_url == "https://api.openai.com/v1"


def test_openai_without_key_sends_no_authorization(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with get_model("openai:/llama3", base_url=server.openai_base_url) as model:
        model.complete(USER)
    assert "authorization" not in server.requests[0].headers


def test_json_object_mode_and_fallback(server):
    def respond(request):
        if request.body.get("response_format", {}).get("type") == "json_schema":
            return Reply(status=400, body={"error": {
                "message": "response_format json_schema is not supported by this model"}})
        return verdict(False)

    server.respond = respond
    with openai(server) as model:
        assert model.complete(USER, response_schema=SCHEMA).text == verdict(False)
        assert model.structured_output == "json_object"
        model.complete(USER, response_schema=SCHEMA)
    kinds = [r.body["response_format"]["type"] for r in server.requests]
    assert kinds == ["json_schema", "json_object", "json_object"]


# -- Anthropic --------------------------------------------------------------------------


def test_anthropic_request_and_usage(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    server.replies.append(Reply(text=verdict(True), input_tokens=77, output_tokens=8))
    with get_model("anthropic:/claude-3-5-haiku-20241022") as model:
        reply = model.complete(USER, temperature=0.0, response_schema=SCHEMA)
    assert (reply.text, reply.input_tokens, reply.output_tokens) == (verdict(True), 77, 8)
    (request,) = server.requests
    assert request.api == "anthropic"
    assert request.headers["x-api-key"] == "sk-ant"
    assert request.headers["anthropic-version"] == AnthropicModel.api_version
    assert request.body["messages"] == [{"role": "user", "content": "judge this"}]
    assert request.body["system"].startswith("be fair\n\nReply with exactly one JSON object")
    assert '"result": {"type": "boolean"}' in request.body["system"]
    assert request.body["max_tokens"] == 1024
    assert model.cost(reply) == pytest.approx((77 * 0.80 + 8 * 4.00) / 1e6)


def test_anthropic_base_url_with_v1(server):
    with get_model("anthropic:/claude-x", base_url=server.url + "/v1", api_key="-") as model:
        model.complete(USER)
    assert server.requests[0].path == "/v1/messages"


# -- failures and retries ---------------------------------------------------------------


def test_5xx_is_retried_then_succeeds(server):
    server.replies.extend([server_error(500), server_error(503)])
    with openai(server) as model:
        assert model.complete(USER).text == verdict(True, "auto verdict")
    assert server.count() == 3


def test_gives_up_after_max_attempts(server):
    server.respond = lambda request: server_error(502)
    with openai(server, max_attempts=3) as model, pytest.raises(
            JudgeError, match=r"gave up after 3 attempts; last: HTTP 502"):
        model.complete(USER)
    assert server.count() == 3


def test_4xx_is_not_retried_and_names_the_endpoint(server):
    server.replies.append(Reply(status=401, body={"error": {"message": "bad key"}}))
    with openai(server) as model, pytest.raises(JudgeError) as info:
        model.complete(USER)
    assert server.count() == 1
    text = str(info.value)
    assert "openai:/gpt-4o-mini" in text and "/v1/chat/completions" in text
    assert "HTTP 401" in text and "bad key" in text


def test_body_that_is_not_a_completion(server):
    server.replies.extend([Reply(body={"unexpected": True}), Reply(body="<html>oops</html>")])
    with openai(server) as model:
        with pytest.raises(JudgeError, match=r"not a completion.*KeyError"):
            model.complete(USER)
        with pytest.raises(JudgeError, match=r"not JSON.*oops"):
            model.complete(USER)


def test_connection_refused_is_retried_then_fails():
    model = get_model("openai:/m", base_url=f"http://127.0.0.1:{closed_port()}/v1",
                      api_key="-", max_attempts=2, backoff_base=0.01)
    with model, pytest.raises(JudgeError, match="gave up after 2 attempts; last: connection "
                                                "failed: ConnectError"):
        model.complete(USER)


def test_timeout_is_retried_then_fails(server):
    server.delay = 0.4
    with openai(server, timeout=0.1, max_attempts=2) as model:
        start = time.monotonic()
        with pytest.raises(JudgeError, match=r"last: timed out after 0.1 s"):
            model.complete(USER)
        assert time.monotonic() - start < 1.0
    assert server.count() == 2


def test_slow_reply_within_timeout(server):
    server.replies.append(slow(verdict(False), 0.2))
    with openai(server, timeout=2) as model:
        assert model.complete(USER).text == verdict(False)


def test_retry_after_parsing():
    from assay._http import retry_after as _retry_after

    assert _retry_after("2") == 2.0
    assert _retry_after("0.5") == 0.5
    assert _retry_after("-3") is None  # unreadable: the model's own backoff applies
    assert _retry_after(None) is None and _retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (_retry_after(future) or 0) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert _retry_after(past) == 0.0


def test_429_honours_retry_after_seconds(server):
    server.replies.append(rate_limited("0.4"))
    with openai(server) as model:
        start = time.monotonic()
        model.complete(USER)
        assert time.monotonic() - start >= 0.4
    first, second = server.requests
    assert second.received_at - first.received_at >= 0.4


def test_429_honours_retry_after_date(server):
    server.replies.append(rate_limited(email.utils.formatdate(time.time() + 1, usegmt=True)))
    with openai(server) as model:
        model.complete(USER)
    assert server.count() == 2


def test_429_with_too_long_retry_after_fails_at_once(server):
    server.replies.append(rate_limited(3600))
    with openai(server, max_retry_wait=10) as model, pytest.raises(
            JudgeError, match="retry after 3600 s, more than max_retry_wait=10 s"):
        model.complete(USER)
    assert server.count() == 1


def test_429_without_retry_after_adapts(server):
    server.replies.extend([rate_limited(None), rate_limited(None)])
    with openai(server, backoff_base=0.05) as model:
        model.complete(USER)
        # two 429s doubled the shared penalty; the success halved it
        assert model._gate.penalty == pytest.approx(0.05)
    assert server.count() == 3


def test_shared_backoff_across_threads(server):
    """After one call's 429, the other threads wait for the same not-before time."""
    server.replies.append(rate_limited(1))
    model = openai(server)
    with model, ThreadPoolExecutor(8) as pool:
        first = pool.submit(model.complete, USER)
        deadline = time.monotonic() + 2
        while model._gate.not_before == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        rest = [pool.submit(model.complete, USER) for _ in range(7)]
        assert all(f.result(timeout=5).text for f in [first, *rest])
    limited_at = server.requests[0].received_at
    assert server.count() == 9  # one 429, then one request per call: no hammering
    assert all(r.received_at >= limited_at + 0.95 for r in server.requests[1:])


def test_max_concurrency_bounds_requests_in_flight(server):
    server.delay = 0.1
    with openai(server, max_concurrency=2) as model, ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: model.complete(USER), range(6)))
    assert server.count() == 6
    assert server.max_in_flight == 2


def test_one_client_many_threads(server):
    server.delay = 0.02
    with openai(server) as model, ThreadPoolExecutor(16) as pool:
        clients = set()

        def call(i):
            clients.add(id(model.client))
            return model.complete([{"role": "user", "content": f"row {i}"}])

        replies = list(pool.map(call, range(48)))
    assert len(replies) == 48 and len(clients) == 1
    assert sorted(r.prompt for r in server.requests) == sorted(f"\nrow {i}" for i in range(48))
    assert server.max_in_flight > 1


def test_shared_model_is_one_object_per_endpoint(server, monkeypatch):
    a = shared_model("openai:/gpt-4o-mini", base_url=server.openai_base_url, api_key="x")
    b = shared_model("openai:/gpt-4o-mini", base_url=server.openai_base_url, api_key="x")
    c = shared_model("openai:/gpt-4o-mini", base_url=server.openai_base_url, api_key="y")
    assert a is b and a is not c
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    assert shared_model("openai:/gpt-4o-mini") is a


# -- cost -------------------------------------------------------------------------------


def test_prices():
    assert price_of("gpt-4o") == (2.50, 10.00)
    assert price_of("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert price_of("gpt-4ox") is None
    assert price_of("claude-3-5-haiku-latest") == (0.80, 4.00)
    assert price_of("llama3.1:8b") is None
    usage = Completion("", 2_000_000, 1_000_000)
    assert get_model("openai:/gpt-4o", api_key="-").cost(usage) == pytest.approx(15.0)
    assert get_model("openai:/llama3", api_key="-").cost(usage) is None
    custom = get_model("openai:/llama3", api_key="-", cost_per_million_tokens=(1, 2))
    assert custom.cost(usage) == pytest.approx(4.0)


def test_closed_model_reopens(server):
    model = openai(server)
    model.complete(USER)
    model.close()
    model.complete(USER)
    model.close()
    assert server.count() == 2


def test_server_stops_cleanly_with_open_connections():
    server = JudgeServer(delay=0.0).start()
    model = get_model("openai:/m", base_url=server.openai_base_url, api_key="-",
                      max_attempts=1)
    model.complete(USER)
    done = threading.Event()
    server.stop()
    done.set()
    with pytest.raises(JudgeError):
        model.complete(USER)
    model.close()
