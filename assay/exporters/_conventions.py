"""The attributes other tools read on a span, derived from assay's own, and back.

This module is the one place that knows these conventions. The OpenTelemetry
GenAI ones are still marked experimental, so when they change, only this file
does.

Outgoing (:func:`derive`, applied when a span is encoded for OTLP; the span in
memory is not changed). A key is added only when the span does not carry it
already: an attribute the application set always wins. assay's own
``assay.*`` keys travel unchanged besides.

============================  =================================================
added key                     derived from
============================  =================================================
``openinference.span.kind``   ``assay.span.type``: LLM and CHAT_MODEL -> LLM,
                              PARSER -> CHAIN; EMBEDDING, RETRIEVER, RERANKER,
                              TOOL, AGENT, CHAIN, GUARDRAIL, EVALUATOR, PROMPT
                              and UNKNOWN as they are; any other -> UNKNOWN
``input.value``               ``assay.span.inputs``: the JSON text, or the plain
                              string when the inputs are one JSON string
``input.mime_type``           ``application/json``, or ``text/plain`` for a
                              plain string
``output.value``,             the same from ``assay.span.outputs``
``output.mime_type``
============================  =================================================

For spans of type LLM, CHAT_MODEL and EMBEDDING, the GenAI attributes that the
recorded inputs and outputs allow (inputs are read at the top level and inside
a ``kwargs`` dict; outputs in the OpenAI or the Anthropic response shape):

=====================================  ========================================
``gen_ai.operation.name``              ``embeddings`` for EMBEDDING, ``chat``
                                       for CHAT_MODEL or inputs with
                                       ``messages``, ``text_completion`` for
                                       inputs with ``prompt``; else from the
                                       response's ``object`` / ``type``
``gen_ai.request.model``               inputs ``model``, less a provider
                                       prefix such as ``openai:/``
``gen_ai.provider.name``,              the ``provider:/`` prefix of the model,
``gen_ai.system`` (its older name)     else an Anthropic-shaped response, else
                                       the model family (``gpt-``, ``claude``,
                                       ``gemini``, ``mistral``, ...); a guess:
                                       set the attribute to be exact
``gen_ai.request.temperature``, ...    inputs ``temperature``, ``top_p``,
                                       ``top_k``, ``max_tokens`` (or
                                       ``max_completion_tokens``), ``seed``,
                                       ``frequency_penalty``,
                                       ``presence_penalty``, ``stop``
``gen_ai.response.model``, ``.id``     outputs ``model``, ``id``
``gen_ai.response.finish_reasons``     outputs ``choices[].finish_reason`` or
                                       ``stop_reason``
``gen_ai.usage.input_tokens``          outputs ``usage.prompt_tokens``, or
                                       ``usage.input_tokens`` (plus Anthropic's
                                       cache creation and cache read tokens)
``gen_ai.usage.output_tokens``         ``usage.completion_tokens`` or
                                       ``usage.output_tokens``
``gen_ai.input.messages``              inputs ``messages`` (OpenAI or Anthropic
                                       shape) as GenAI messages, JSON text
``gen_ai.system_instructions``         inputs ``system`` (Anthropic), JSON text
``gen_ai.output.messages``             outputs ``choices`` or an Anthropic
                                       message, JSON text
=====================================  ========================================

Incoming (:func:`lift`, for spans that other instrumentations produced, which
carry no ``assay.*`` keys): ``input.value`` / ``output.value`` become
``assay.span.inputs`` / ``assay.span.outputs`` (JSON text when the mime type
says JSON, else the value as a JSON string) and ``openinference.span.kind``
becomes ``assay.span.type``; those keys then leave the attributes, since
:func:`derive` puts them back on the way out. Without a span kind,
``gen_ai.operation.name`` gives the type (``chat`` -> CHAT_MODEL, ``embeddings``
-> EMBEDDING, ``execute_tool`` -> TOOL, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from assay.tracing.types import SPAN_INPUTS, SPAN_OUTPUTS, SPAN_TYPE

__all__ = ["derive", "lift"]

OPENINFERENCE_KIND = "openinference.span.kind"
INPUT_VALUE = "input.value"
INPUT_MIME = "input.mime_type"
OUTPUT_VALUE = "output.value"
OUTPUT_MIME = "output.mime_type"
JSON_MIME = "application/json"
TEXT_MIME = "text/plain"

_OPENINFERENCE_KINDS = frozenset({
    "LLM", "EMBEDDING", "RETRIEVER", "RERANKER", "TOOL", "AGENT", "CHAIN", "GUARDRAIL",
    "EVALUATOR", "PROMPT", "UNKNOWN",
})
_KIND = {"CHAT_MODEL": "LLM", "PARSER": "CHAIN", **{k: k for k in _OPENINFERENCE_KINDS}}
_GENAI_TYPES = frozenset({"LLM", "CHAT_MODEL", "EMBEDDING"})
_TYPE_OF_OPERATION = {
    "chat": "CHAT_MODEL", "text_completion": "LLM", "generate_content": "LLM",
    "embeddings": "EMBEDDING", "execute_tool": "TOOL", "invoke_agent": "AGENT",
    "create_agent": "AGENT",
}

#: ``provider:/model`` prefixes (assay's model URIs) -> ``gen_ai.provider.name``.
_PROVIDER_PREFIXES = {
    "openai": "openai", "anthropic": "anthropic", "azure": "azure.ai.openai",
    "gemini": "gcp.gemini", "google": "gcp.gemini", "vertex_ai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock", "mistral": "mistral_ai", "cohere": "cohere", "groq": "groq",
    "deepseek": "deepseek", "xai": "x_ai", "perplexity": "perplexity",
}
#: Model families served by their maker's API alone (names with '/' or ':' are not guessed).
_FAMILIES = (
    (re.compile(r"(gpt-|chatgpt-|o[134](-|$)|text-embedding-|davinci|babbage)"), "openai"),
    (re.compile(r"claude"), "anthropic"),
    (re.compile(r"gemini"), "gcp.gemini"),
    (re.compile(r"(mistral|mixtral|codestral|ministral|pixtral|magistral)"), "mistral_ai"),
    (re.compile(r"deepseek"), "deepseek"),
    (re.compile(r"grok"), "x_ai"),
)
#: ``gen_ai.provider.name`` -> the older ``gen_ai.system`` value, where they differ.
_SYSTEM = {"gcp.gemini": "gemini", "gcp.vertex_ai": "vertex_ai", "x_ai": "xai",
           "azure.ai.openai": "az.ai.openai"}
_REQUEST_NUMBERS = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("top_k", "gen_ai.request.top_k"),
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("seed", "gen_ai.request.seed"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
)


def derive(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The convention attributes for a span with ``attributes``, less those it has."""
    out: dict[str, Any] = {}
    span_type = attributes.get(SPAN_TYPE)
    if isinstance(span_type, str) and OPENINFERENCE_KIND not in attributes:
        out[OPENINFERENCE_KIND] = _KIND.get(span_type, "UNKNOWN")
    _value_and_mime(attributes.get(SPAN_INPUTS), INPUT_VALUE, INPUT_MIME, attributes, out)
    _value_and_mime(attributes.get(SPAN_OUTPUTS), OUTPUT_VALUE, OUTPUT_MIME, attributes, out)
    if isinstance(span_type, str) and span_type in _GENAI_TYPES:
        for key, value in _genai(span_type, attributes).items():
            if value is not None and key not in attributes:
                out[key] = value
    return out


def lift(attributes: Mapping[str, Any]) -> dict[str, Any] | None:
    """assay's keys for a span from another instrumentation, read from the conventions.

    Returns the new attributes, or ``None`` when there is nothing to lift.
    """
    changed: dict[str, Any] = dict(attributes)
    lifted = False
    for value_key, mime_key, target in ((INPUT_VALUE, INPUT_MIME, SPAN_INPUTS),
                                        (OUTPUT_VALUE, OUTPUT_MIME, SPAN_OUTPUTS)):
        value = attributes.get(value_key)
        if target in attributes or not isinstance(value, str):
            continue
        mime = attributes.get(mime_key)
        changed[target] = value if mime == JSON_MIME and _is_json(value) else json.dumps(
            value, ensure_ascii=False)
        changed.pop(value_key)
        changed.pop(mime_key, None)
        lifted = True
    if SPAN_TYPE not in attributes:
        kind = attributes.get(OPENINFERENCE_KIND)
        operation = attributes.get("gen_ai.operation.name")
        if isinstance(kind, str) and kind:
            changed[SPAN_TYPE] = kind.upper()
            changed.pop(OPENINFERENCE_KIND)
            lifted = True
        elif isinstance(operation, str) and operation in _TYPE_OF_OPERATION:
            changed[SPAN_TYPE] = _TYPE_OF_OPERATION[operation]
            lifted = True
    return changed if lifted else None


# -- outgoing --------------------------------------------------------------------------


def _value_and_mime(text: Any, value_key: str, mime_key: str, attributes: Mapping[str, Any],
                    out: dict[str, Any]) -> None:
    if not isinstance(text, str) or value_key in attributes:
        return
    value, mime = text, JSON_MIME
    if text.startswith('"'):
        plain = _loads(text)
        if isinstance(plain, str):
            value, mime = plain, TEXT_MIME
    out[value_key] = value
    if mime_key not in attributes:
        out[mime_key] = mime


def _genai(span_type: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    inputs = _dict(_loads(attributes.get(SPAN_INPUTS)))
    nested = inputs.get("kwargs")
    if isinstance(nested, dict):
        inputs = {**nested, **inputs}
    outputs = _dict(_loads(attributes.get(SPAN_OUTPUTS)))
    usage = _dict(outputs.get("usage"))
    named_provider, model = _split_model(inputs.get("model"))
    response_model = _str(outputs.get("model"))
    provider = None
    if "gen_ai.provider.name" not in attributes and "gen_ai.system" not in attributes:
        provider = named_provider or _provider(outputs, model or response_model)
    out: dict[str, Any] = {
        "gen_ai.operation.name": _operation(span_type, inputs, outputs),
        "gen_ai.provider.name": provider,
        "gen_ai.system": _SYSTEM.get(provider, provider) if provider else None,
        "gen_ai.request.model": model,
    }
    for name, key in _REQUEST_NUMBERS:
        if out.get(key) is None:
            out[key] = _number(inputs.get(name))
    stop = inputs.get("stop", inputs.get("stop_sequences"))
    out["gen_ai.request.stop_sequences"] = _strings(stop)
    out["gen_ai.response.model"] = response_model
    out["gen_ai.response.id"] = _str(outputs.get("id"))
    out["gen_ai.response.finish_reasons"] = _finish_reasons(outputs)
    out["gen_ai.usage.input_tokens"] = _input_tokens(usage)
    out["gen_ai.usage.output_tokens"] = _int(usage.get("completion_tokens",
                                                       usage.get("output_tokens")))
    out["gen_ai.input.messages"] = _input_messages(inputs.get("messages"))
    if isinstance(inputs.get("messages"), list):
        instructions = _parts(inputs.get("system"))
        out["gen_ai.system_instructions"] = _dumps(instructions) if instructions else None
    out["gen_ai.output.messages"] = _output_messages(outputs)
    return out


def _operation(span_type: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> str | None:
    if span_type == "EMBEDDING":
        return "embeddings"
    if span_type == "CHAT_MODEL" or "messages" in inputs:
        return "chat"
    if "prompt" in inputs:
        return "text_completion"
    kind = outputs.get("object")
    if kind == "chat.completion" or outputs.get("type") == "message":
        return "chat"
    if kind == "text_completion":
        return "text_completion"
    return None


def _split_model(value: Any) -> tuple[str | None, str | None]:
    """(provider, model) of ``provider:/model``; (None, model) for any other name."""
    if not isinstance(value, str) or not value:
        return None, None
    prefix, sep, rest = value.partition(":/")
    provider = _PROVIDER_PREFIXES.get(prefix.lower()) if sep and rest else None
    return (provider, rest) if provider else (None, value)


def _provider(outputs: dict[str, Any], model: str | None) -> str | None:
    if outputs.get("type") == "message" and str(outputs.get("id", "")).startswith("msg_"):
        return "anthropic"
    if not model or "/" in model or ":" in model:
        return None
    low = model.lower()
    for pattern, provider in _FAMILIES:
        if pattern.match(low):
            return provider
    return None


def _input_tokens(usage: dict[str, Any]) -> int | None:
    prompt = _int(usage.get("prompt_tokens"))
    if prompt is not None:
        return prompt
    tokens = _int(usage.get("input_tokens"))
    if tokens is None:
        return None
    # Anthropic counts cached prompt tokens apart; the convention counts them in.
    for key in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        tokens += _int(usage.get(key)) or 0
    return tokens


def _finish_reasons(outputs: dict[str, Any]) -> tuple[str, ...] | None:
    choices = outputs.get("choices")
    if isinstance(choices, list):
        reasons = tuple(c["finish_reason"] for c in choices
                        if isinstance(c, dict) and isinstance(c.get("finish_reason"), str))
        return reasons or None
    reason = outputs.get("stop_reason")
    return (reason,) if isinstance(reason, str) else None


def _parts(content: Any) -> list[dict[str, Any]]:
    """GenAI message parts of an OpenAI or Anthropic ``content``."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if not isinstance(content, list):
        return [{"type": "text", "content": _dumps(content)}]
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, str):
            parts.append({"type": "text", "content": block})
        elif not isinstance(block, dict):
            continue
        elif block.get("type") in ("text", "input_text", "output_text") and isinstance(
                block.get("text"), str):
            parts.append({"type": "text", "content": block["text"]})
        elif block.get("type") == "tool_use":
            parts.append(_clean({"type": "tool_call", "id": block.get("id"),
                                 "name": block.get("name"), "arguments": block.get("input")}))
        elif block.get("type") == "tool_result":
            parts.append(_clean({"type": "tool_call_response", "id": block.get("tool_use_id"),
                                 "response": block.get("content")}))
        elif isinstance(block.get("type"), str):
            parts.append(block)
    return parts


def _message(message: Any) -> dict[str, Any] | None:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        return None
    role = message["role"]
    if role == "tool":
        parts = [_clean({"type": "tool_call_response", "id": message.get("tool_call_id"),
                         "response": message.get("content")})]
    else:
        parts = _parts(message.get("content"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            arguments = function.get("arguments")
            parsed = _loads(arguments) if isinstance(arguments, str) else arguments
            parts.append(_clean({"type": "tool_call", "id": call.get("id"),
                                 "name": function.get("name"),
                                 "arguments": arguments if parsed is None else parsed}))
    return {"role": role, "parts": parts}


def _input_messages(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return None
    converted = [m for m in map(_message, messages) if m is not None]
    return _dumps(converted) if converted else None


def _output_messages(outputs: dict[str, Any]) -> str | None:
    messages: list[dict[str, Any]] = []
    choices = outputs.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if isinstance(choice.get("text"), str):
                message: dict[str, Any] | None = {
                    "role": "assistant", "parts": _parts(choice["text"])}
            else:
                message = _message(choice.get("message"))
            if message is not None:
                message["finish_reason"] = _str(choice.get("finish_reason"))
                messages.append(_clean(message))
    elif outputs.get("type") == "message" and isinstance(outputs.get("role"), str):
        messages.append(_clean({"role": outputs["role"], "parts": _parts(outputs.get("content")),
                                "finish_reason": _str(outputs.get("stop_reason"))}))
    return _dumps(messages) if messages else None


# -- small readers ---------------------------------------------------------------------


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _clean(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _strings(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None
