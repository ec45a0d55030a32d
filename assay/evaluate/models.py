"""Judge models: the seam between an LLM judge and the endpoint that answers it.

A :class:`Model` turns chat messages into reply text plus token usage. Two
implementations speak HTTP directly (through ``httpx``, no vendor SDK):

* :class:`OpenAIModel` (``openai:/<model>``): OpenAI-compatible chat
  completions, so OpenAI itself, vLLM, Ollama or a LiteLLM proxy. The base URL
  is ``base_url=``, else ``OPENAI_BASE_URL``, else ``https://api.openai.com/v1``;
  the key is ``api_key=``, else ``OPENAI_API_KEY`` (a local server needs none).
* :class:`AnthropicModel` (``anthropic:/<model>``): the Anthropic messages API;
  ``ANTHROPIC_BASE_URL`` (default ``https://api.anthropic.com``) and
  ``ANTHROPIC_API_KEY``.

    from assay.evaluate.models import get_model

    model = get_model("openai:/gpt-4o-mini", max_concurrency=8)
    reply = model.complete([{"role": "user", "content": "Say hi as JSON"}])
    reply.text, reply.input_tokens, reply.output_tokens, model.cost(reply)

Reliability: one ``httpx.Client`` per model object, safe to call from many
threads at once; a per-call timeout (60 s by default); 5xx answers, connection
errors and timeouts are retried with exponential backoff and jitter, up to
``max_attempts`` attempts in all (4 by default). A 429 answer's ``Retry-After``
(seconds or an HTTP date) sets a not-before time shared by every call on the
model object, so the other threads wait for it too instead of hammering the
endpoint; a 429 without ``Retry-After`` doubles a shared penalty that halves
again on each success. ``max_concurrency`` bounds the requests in flight.
Failures that retrying cannot fix (a 4xx answer, retries exhausted, a body
that is not a completion) raise :class:`~assay.JudgeError`.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from assay._http import retry_after
from assay._version import __version__
from assay.errors import JudgeError

__all__ = [
    "AnthropicModel",
    "Completion",
    "HTTPModel",
    "MODEL_PRICES",
    "Message",
    "Model",
    "OpenAIModel",
    "get_model",
    "parse_model_uri",
    "price_of",
]

#: A chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``.
Message = Mapping[str, str]

#: Approximate list prices in US dollars per million tokens, (input, output),
#: as published by the providers in mid-2025. Prices change: treat the derived
#: ``cost_usd`` as an estimate, and pass ``cost_per_million_tokens=`` to a model
#: for exact figures. A dated model name (``gpt-4o-mini-2024-07-18``) uses the
#: entry of its longest matching prefix.
MODEL_PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    # Anthropic
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
}

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]*):/([^/].*)$")


def price_of(model: str) -> tuple[float, float] | None:
    """The approximate (input, output) price per million tokens of ``model``, or ``None``.

    Example:
        >>> price_of("gpt-4o-mini-2024-07-18")
        (0.15, 0.6)
        >>> price_of("llama3") is None
        True
    """
    best: str | None = None
    for name in MODEL_PRICES:
        if (model == name or model.startswith(name + "-")) and (
                best is None or len(name) > len(best)):
            best = name
    return None if best is None else MODEL_PRICES[best]


@dataclass(frozen=True)
class Completion:
    """A model's reply to one request.

    Attributes:
        text: the reply text (the assistant message's content).
        input_tokens: prompt tokens the endpoint counted (0 when it did not say).
        output_tokens: completion tokens the endpoint counted (0 when it did not say).
        model: the model name the endpoint says answered (may be a dated snapshot).
    """

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None


class Model(ABC):
    """The judge model seam: chat messages in, reply text and token usage out.

    Implementations must be safe to call from many threads at once. A custom
    backend subclasses this and implements :meth:`complete` (and, when it can
    price its tokens, :meth:`cost`).

    Example:
        >>> class Echo(Model):
        ...     uri = "echo:/v1"
        ...     def complete(self, messages, *, temperature=0.0, response_schema=None,
        ...                  max_tokens=None):
        ...         return Completion('{"result": true, "rationale": "echo"}')
        >>> Echo().complete([{"role": "user", "content": "hi"}]).text
        '{"result": true, "rationale": "echo"}'
    """

    #: The model URI, such as ``openai:/gpt-4o-mini``; names the judge's source.
    uri: str = ""
    #: Where requests go; part of a judge cache key (empty when not applicable).
    base_url: str = ""

    @abstractmethod
    def complete(self, messages: Sequence[Message], *, temperature: float | None = 0.0,
                 response_schema: Mapping[str, Any] | None = None,
                 max_tokens: int | None = None) -> Completion:
        """Send ``messages`` and return the reply.

        Args:
            messages: the conversation, oldest first; ``system`` messages included.
            temperature: sampling temperature; ``None`` leaves it to the endpoint.
            response_schema: a JSON schema the reply text should be an instance of.
            max_tokens: a limit on the reply's tokens, if any.

        Returns:
            The :class:`Completion`.

        Raises:
            JudgeError: the endpoint failed for good.
        """

    def cost(self, completion: Completion) -> float | None:
        """What ``completion`` cost in US dollars, ``None`` when not known."""
        return None

    def close(self) -> None:  # noqa: B027 - optional for implementations
        """Release network resources (a closed model may be used again)."""

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RateGate:
    """A not-before time shared by every call on one model object.

    A 429 answer pushes the time forward: to its ``Retry-After`` when it has
    one, else by a penalty that doubles on each such answer and halves on each
    success. Every call waits for the gate before it sends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.not_before = 0.0  # time.monotonic()
        self.penalty = 0.0

    def wait(self) -> float:
        """Sleep until the not-before time (plus a little jitter); the seconds slept."""
        slept = 0.0
        while True:
            with self._lock:
                delay = self.not_before - time.monotonic()
            if delay <= 0:
                return slept
            # A small spread so the waiters do not all send in the same instant.
            delay += random.uniform(0, min(0.1 * delay, 0.25))
            time.sleep(delay)
            slept += delay

    def rate_limited(self, retry_after: float | None, base: float, cap: float) -> float:
        """Record a 429; returns the seconds from now until the not-before time."""
        with self._lock:
            now = time.monotonic()
            if retry_after is None:
                self.penalty = min(cap, max(base, self.penalty * 2))
                delay = self.penalty * random.uniform(0.5, 1.0)
            else:
                delay = retry_after
            self.not_before = max(self.not_before, now + delay)
            return self.not_before - now

    def succeeded(self) -> None:
        with self._lock:
            if self.penalty:
                self.penalty = self.penalty / 2 if self.penalty >= 0.02 else 0.0


def _excerpt(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


class HTTPModel(Model):
    """A model behind an HTTP API: the shared client, timeouts, retries and rate gate.

    Subclasses say where to send (:meth:`_url`), with which headers, what body
    to send (:meth:`_payload`) and how to read the answer (:meth:`_completion`).
    """

    scheme: ClassVar[str] = ""
    #: Environment variables and default for the base URL and the key.
    _base_url_env: ClassVar[str] = ""
    _default_base_url: ClassVar[str] = ""
    _api_key_env: ClassVar[str] = ""

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_attempts: int = 4,
                 max_concurrency: int | None = None,
                 cost_per_million_tokens: tuple[float, float] | None = None,
                 backoff_base: float = 0.5, backoff_max: float = 30.0,
                 max_retry_wait: float = 120.0,
                 headers: Mapping[str, str] | None = None) -> None:
        """
        Args:
            model: the model name the endpoint knows (``gpt-4o-mini``, ``llama3.1:8b``).
            base_url: the API's base URL; default from the environment (see the module).
            api_key: the API key; default from the environment, none if unset.
            timeout: seconds one HTTP request may take (connect, send, each read).
            max_attempts: attempts per call, the first included, before giving up.
            max_concurrency: at most this many requests in flight on this object.
            cost_per_million_tokens: (input, output) USD prices, overriding
                :data:`MODEL_PRICES`.
            backoff_base: seconds before the first retry; doubles on each retry.
            backoff_max: cap on one backoff sleep (and on the shared 429 penalty).
            max_retry_wait: a ``Retry-After`` longer than this fails the call
                instead of waiting.
            headers: extra HTTP headers sent with every request.

        Raises:
            JudgeError: an argument is invalid.
        """
        if not isinstance(model, str) or not model.strip():
            raise JudgeError(f"{self.scheme}: the model name must be a non-empty string, "
                             f"got {model!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise JudgeError(f"{self.scheme}:/{model}: timeout must be a positive number "
                             f"of seconds, got {timeout!r}")
        if not (isinstance(max_attempts, int) and max_attempts >= 1):
            raise JudgeError(f"{self.scheme}:/{model}: max_attempts must be an integer "
                             f">= 1, got {max_attempts!r}")
        if max_concurrency is not None and not (
                isinstance(max_concurrency, int) and max_concurrency >= 1):
            raise JudgeError(f"{self.scheme}:/{model}: max_concurrency must be an integer "
                             f">= 1 or None, got {max_concurrency!r}")
        if cost_per_million_tokens is not None:
            try:
                prices = tuple(float(p) for p in cost_per_million_tokens)
            except (TypeError, ValueError):
                prices = ()
            if len(prices) != 2 or any(not math.isfinite(p) or p < 0 for p in prices):
                raise JudgeError(f"{self.scheme}:/{model}: cost_per_million_tokens must be "
                                 f"(input_usd, output_usd), got {cost_per_million_tokens!r}")
            cost_per_million_tokens = (prices[0], prices[1])
        self.model = model
        self.uri = f"{self.scheme}:/{model}"
        self.base_url = (base_url or os.environ.get(self._base_url_env)
                         or self._default_base_url).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(self._api_key_env)
        self.timeout = float(timeout)
        self.max_attempts = max_attempts
        self.max_concurrency = max_concurrency
        self.prices = cost_per_million_tokens or price_of(model)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_retry_wait = float(max_retry_wait)
        self.headers = dict(headers or {})
        self._gate = _RateGate()
        self._slots = (threading.BoundedSemaphore(max_concurrency)
                       if max_concurrency else None)
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r}, base_url={self.base_url!r})"

    # -- what subclasses provide ------------------------------------------------------

    @abstractmethod
    def _url(self) -> str: ...

    @abstractmethod
    def _auth_headers(self) -> dict[str, str]: ...

    @abstractmethod
    def _payload(self, messages: Sequence[Message], temperature: float | None,
                 response_schema: Mapping[str, Any] | None,
                 max_tokens: int | None) -> dict[str, Any]: ...

    @abstractmethod
    def _completion(self, body: Any) -> Completion: ...

    # -- the call ---------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        """The shared HTTP client (created on first use)."""
        with self._client_lock:
            if self._client is None:
                pool = max(self.max_concurrency or 0, 32)
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout),
                    limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
                    headers={"content-type": "application/json",
                             "user-agent": f"assay/{__version__}", **self._auth_headers(),
                             **self.headers})
            return self._client

    def close(self) -> None:
        """Close the HTTP client; the next call opens a new one."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def cost(self, completion: Completion) -> float | None:
        """USD cost of ``completion`` from the price table or ``cost_per_million_tokens``.

        Example:
            >>> m = OpenAIModel("gpt-4o-mini", api_key="-")
            >>> round(m.cost(Completion("", 1_000_000, 0)), 2)
            0.15
        """
        if self.prices is None:
            return None
        return (completion.input_tokens * self.prices[0]
                + completion.output_tokens * self.prices[1]) / 1e6

    def complete(self, messages: Sequence[Message], *, temperature: float | None = 0.0,
                 response_schema: Mapping[str, Any] | None = None,
                 max_tokens: int | None = None) -> Completion:
        """Send ``messages`` with retries; see :meth:`Model.complete`.

        Raises:
            JudgeError: a 4xx answer other than 429, a body that is not a
                completion, a ``Retry-After`` beyond ``max_retry_wait``, or
                ``max_attempts`` attempts failed.
        """
        payload = self._payload(messages, temperature, response_schema, max_tokens)
        url = self._url()
        where = f"{self.uri} at {url}"
        problem = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._send(url, payload)
            except httpx.TimeoutException as exc:
                problem = f"timed out after {self.timeout:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                problem = f"connection failed: {type(exc).__name__}: {exc}"
            except httpx.HTTPError as exc:  # a bad answer (decoding, redirects): not retried
                raise JudgeError(f"{where}: {type(exc).__name__}: {exc}") from exc
            else:
                status = response.status_code
                if status < 300:
                    self._gate.succeeded()
                    return self._read(response, where)
                text = _excerpt(response.text)
                problem = f"HTTP {status}: {text}"
                if status == 429 or (status >= 500 and "retry-after" in response.headers):
                    wait = retry_after(response.headers.get("retry-after"))
                    if wait is not None and wait > self.max_retry_wait:
                        raise JudgeError(f"{where}: rate limited (HTTP {status}) and asked "
                                         f"to retry after {wait:g} s, more than "
                                         f"max_retry_wait={self.max_retry_wait:g} s")
                    if attempt < self.max_attempts:
                        self._gate.rate_limited(wait, self.backoff_base, self.backoff_max)
                    continue
                if status < 500 and status not in (408, 409):
                    raise JudgeError(f"{where}: {problem}")
            if attempt < self.max_attempts:
                time.sleep(self._backoff(attempt))
        raise JudgeError(f"{where}: gave up after {self.max_attempts} attempt"
                         f"{'s' if self.max_attempts != 1 else ''}; last: {problem}")

    def _backoff(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` + 1: exponential, with jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def _send(self, url: str, payload: dict[str, Any]) -> httpx.Response:
        """One POST: take a concurrency slot, wait for the rate gate, send."""
        client = self.client
        if self._slots is None:
            self._gate.wait()
            return client.post(url, json=payload)
        with self._slots:
            # Waiting inside the slot: a not-before time set while this thread
            # queued for the slot still holds it back.
            self._gate.wait()
            return client.post(url, json=payload)

    def _read(self, response: httpx.Response, where: str) -> Completion:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise JudgeError(f"{where}: the answer is not JSON ({exc}): "
                             f"{_excerpt(response.text)}") from exc
        try:
            return self._completion(body)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise JudgeError(f"{where}: the answer is not a completion "
                             f"({type(exc).__name__}: {exc}): {_excerpt(response.text)}"
                             ) from exc


def _tokens(usage: Any, key: str) -> int:
    value = usage.get(key) if isinstance(usage, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class OpenAIModel(HTTPModel):
    """OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, a LiteLLM proxy).

    Structured output: with a schema, the request carries ``response_format``
    ``json_schema`` (strict); an endpoint that rejects it with a 400 answer
    mentioning ``response_format`` or ``json_schema`` is asked again with
    ``json_object``, and the model object remembers that for later calls.
    ``structured_output="json_object"`` starts there; ``"none"`` sends no
    ``response_format`` at all (the prompt alone asks for JSON).

    Example:
        >>> m = OpenAIModel("gpt-4o-mini", base_url="http://127.0.0.1:8000/v1", api_key="-")
        >>> m.uri, m.base_url
        ('openai:/gpt-4o-mini', 'http://127.0.0.1:8000/v1')
    """

    scheme = "openai"
    _base_url_env = "OPENAI_BASE_URL"
    _default_base_url = "https://api.openai.com/v1"
    _api_key_env = "OPENAI_API_KEY"

    def __init__(self, model: str, *, structured_output: str = "json_schema",
                 **options: Any) -> None:
        """
        Args:
            model: the model name.
            structured_output: ``"json_schema"``, ``"json_object"`` or ``"none"``.
            **options: see :class:`HTTPModel`.
        """
        if structured_output not in ("json_schema", "json_object", "none"):
            raise JudgeError(f"openai:/{model}: structured_output must be 'json_schema', "
                             f"'json_object' or 'none', got {structured_output!r}")
        super().__init__(model, **options)
        self.structured_output = structured_output

    def _url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _payload(self, messages: Sequence[Message], temperature: float | None,
                 response_schema: Mapping[str, Any] | None,
                 max_tokens: int | None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        }
        if temperature is not None:
            payload["temperature"] = temperature
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if response_schema is not None and self.structured_output == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "judgement", "strict": True,
                                "schema": dict(response_schema)},
            }
        elif response_schema is not None and self.structured_output == "json_object":
            payload["response_format"] = {"type": "json_object"}
        return payload

    def complete(self, messages: Sequence[Message], *, temperature: float | None = 0.0,
                 response_schema: Mapping[str, Any] | None = None,
                 max_tokens: int | None = None) -> Completion:
        """Send ``messages``; see :meth:`Model.complete`."""
        try:
            return super().complete(messages, temperature=temperature,
                                    response_schema=response_schema, max_tokens=max_tokens)
        except JudgeError as exc:
            text = str(exc)
            rejected = ("HTTP 400" in text and response_schema is not None
                        and self.structured_output == "json_schema"
                        and ("response_format" in text or "json_schema" in text))
            if not rejected:
                raise
        self.structured_output = "json_object"
        return super().complete(messages, temperature=temperature,
                                response_schema=response_schema, max_tokens=max_tokens)

    def _completion(self, body: Any) -> Completion:
        message = body["choices"][0]["message"]
        content = message.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
        if content is None and message.get("refusal"):
            content = str(message["refusal"])
        if not isinstance(content, str):
            raise TypeError(f"choices[0].message.content is {type(content).__name__}")
        usage = body.get("usage")
        return Completion(content, _tokens(usage, "prompt_tokens"),
                          _tokens(usage, "completion_tokens"), body.get("model"))


class AnthropicModel(HTTPModel):
    """The Anthropic messages API.

    System messages go into the request's ``system`` field. With a schema, the
    system prompt gains an instruction to reply with one JSON object matching
    it (the API has no JSON mode). ``max_tokens``, which the API requires,
    defaults to 1024.

    Example:
        >>> AnthropicModel("claude-3-5-haiku-latest", api_key="-").uri
        'anthropic:/claude-3-5-haiku-latest'
    """

    scheme = "anthropic"
    _base_url_env = "ANTHROPIC_BASE_URL"
    _default_base_url = "https://api.anthropic.com"
    _api_key_env = "ANTHROPIC_API_KEY"
    #: The ``anthropic-version`` header sent with every request.
    api_version = "2023-06-01"

    def _url(self) -> str:
        base = self.base_url
        return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.api_version}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers

    def _payload(self, messages: Sequence[Message], temperature: float | None,
                 response_schema: Mapping[str, Any] | None,
                 max_tokens: int | None) -> dict[str, Any]:
        system = [m["content"] for m in messages if m["role"] == "system"]
        if response_schema is not None:
            system.append("Reply with exactly one JSON object that matches this JSON "
                          "schema, with no other text before or after it:\n"
                          + json.dumps(response_schema, ensure_ascii=False))
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens or 1024,
            "messages": [{"role": m["role"], "content": m["content"]}
                         for m in messages if m["role"] != "system"],
        }
        if system:
            payload["system"] = "\n\n".join(system)
        if temperature is not None:
            payload["temperature"] = temperature
        return payload

    def _completion(self, body: Any) -> Completion:
        blocks = body["content"]
        if not isinstance(blocks, list):
            raise TypeError(f"content is {type(blocks).__name__}, not a list")
        text = "".join(b["text"] for b in blocks
                       if isinstance(b, Mapping) and b.get("type") == "text")
        usage = body.get("usage")
        return Completion(text, _tokens(usage, "input_tokens"), _tokens(usage, "output_tokens"),
                          body.get("model"))


#: Model URI schemes and the classes that serve them.
SCHEMES: dict[str, type[HTTPModel]] = {"openai": OpenAIModel, "anthropic": AnthropicModel}


def parse_model_uri(uri: str) -> tuple[str, str]:
    """Split ``scheme:/model`` into ``(scheme, model)``.

    Raises:
        JudgeError: ``uri`` is not of that form or names an unknown scheme.

    Example:
        >>> parse_model_uri("openai:/meta-llama/Llama-3.1-8B-Instruct")
        ('openai', 'meta-llama/Llama-3.1-8B-Instruct')
    """
    match = _URI.match(uri.strip()) if isinstance(uri, str) else None
    if match is None:
        raise JudgeError(f"malformed judge model URI {uri!r}; expected '<scheme>:/<model>' "
                         f"such as 'openai:/gpt-4o-mini' or 'anthropic:/claude-3-5-haiku-latest'")
    scheme, model = match.group(1).lower(), match.group(2).strip()
    if scheme not in SCHEMES:
        raise JudgeError(f"unknown judge model scheme {scheme!r} in {uri!r}; "
                         f"known: {', '.join(sorted(SCHEMES))}")
    return scheme, model


def get_model(uri: str, **options: Any) -> HTTPModel:
    """A new model object for ``uri`` (``openai:/<model>`` or ``anthropic:/<model>``).

    Args:
        uri: the model URI.
        **options: passed to the model class (``base_url``, ``api_key``,
            ``timeout``, ``max_attempts``, ``max_concurrency``,
            ``cost_per_million_tokens``, ...; see :class:`HTTPModel`).

    Returns:
        An :class:`OpenAIModel` or :class:`AnthropicModel`, owned by the caller
        (``close()`` it, or use it as a context manager).

    Raises:
        JudgeError: the URI is malformed, its scheme unknown, or an option invalid.

    Example:
        >>> get_model("anthropic:/claude-3-5-haiku-latest", api_key="-").base_url
        'https://api.anthropic.com'
    """
    scheme, model = parse_model_uri(uri)
    try:
        return SCHEMES[scheme](model, **options)
    except TypeError as exc:
        raise JudgeError(f"{uri}: {exc}") from exc


_shared: dict[tuple[Any, ...], HTTPModel] = {}
_shared_lock = threading.Lock()


def shared_model(uri: str, **options: Any) -> HTTPModel:
    """The process-wide model object for ``uri`` and these options.

    Judges on the same endpoint share one object, hence one connection pool,
    one rate-limit gate and one concurrency bound. The objects are closed at
    interpreter exit.

    Raises:
        JudgeError: as :func:`get_model`.
    """
    scheme, model = parse_model_uri(uri)
    cls = SCHEMES[scheme]
    # The environment is read now, so that a changed OPENAI_BASE_URL gives a new object.
    options = dict(options)
    if options.get("base_url") is None:
        options["base_url"] = os.environ.get(cls._base_url_env) or cls._default_base_url
    if options.get("api_key") is None:
        options["api_key"] = os.environ.get(cls._api_key_env)
    key = (scheme, model, tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _shared_lock:
        found = _shared.get(key)
        if found is None:
            found = _shared[key] = get_model(uri, **options)
        return found


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        models = list(_shared.values())
        _shared.clear()
    for m in models:
        m.close()
