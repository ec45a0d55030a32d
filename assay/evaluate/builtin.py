"""Built-in deterministic scorers: text checks, JSON checks and trace checks.

Each factory returns a :class:`~assay.evaluate.scorers.Scorer` whose
:meth:`~assay.evaluate.scorers.Scorer.spec` records the arguments it was built
with. A row a scorer cannot judge (no outputs, no trace, a missing
expectation) gets a :class:`~assay.Feedback` with ``error`` set, never an
exception.

Text rule (:func:`output_text`): a ``str`` is scored as it is; any other value
(a dict, a list, a number) as its JSON text.

    from assay.evaluate import builtin

    scorers = [builtin.exact_match(ignore_case=True),
               builtin.regex(r"\\d+ items"),
               builtin.latency(max_ms=2000),
               builtin.tool_call_sequence(["search", "answer"])]
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from assay.errors import ScorerError
from assay.evaluate.scorers import Feedback, PassIf, Scorer
from assay.tracing.models import Span, Trace
from assay.tracing.types import SpanType

__all__ = [
    "contains",
    "exact_match",
    "is_json",
    "json_schema",
    "latency",
    "output_text",
    "regex",
    "response_length",
    "token_usage",
    "tool_call_sequence",
    "tool_called",
    "validate_schema",
]

_MODULE = __name__


def output_text(value: Any) -> str:
    """The text a text scorer looks at: a ``str`` as is, anything else as JSON text.

    Example:
        >>> output_text({"answer": "42"})
        '{"answer": "42"}'
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _builtin(kind: str, func: Callable[..., Any], name: str | None,
             arguments: Mapping[str, Any], pass_if: PassIf | None = None) -> Scorer:
    return Scorer(func, name=name or kind, arguments=arguments, pass_if=pass_if,
                  function=f"{_MODULE}.{kind}")


def _missing(what: str) -> Feedback:
    return Feedback(None, error=what)


_ABSENT = object()


def _expected(given: Any, expectations: Any, key: str) -> Any:
    """The value a built-in compares with: its own argument when given, else
    ``expectations[key]``, else ``_ABSENT``."""
    if given is not None:
        return given
    if not isinstance(expectations, Mapping) or key not in expectations:
        return _ABSENT
    return expectations[key]


def _normalise(text: str, ignore_case: bool, normalize_whitespace: bool) -> str:
    if normalize_whitespace:
        text = " ".join(text.split())
    return text.casefold() if ignore_case else text


# -- text -------------------------------------------------------------------------


def exact_match(*, expected: Any = None, key: str = "expected_response",
                ignore_case: bool = False, normalize_whitespace: bool = False,
                name: str | None = None) -> Scorer:
    """``outputs`` equals the expected value: ``expected`` or ``expectations[key]``.

    Two non-strings compare as values; otherwise both sides compare as
    :func:`output_text`, optionally case-folded and with whitespace runs
    collapsed and trimmed.

    Example:
        >>> exact_match(ignore_case=True)(
        ...     outputs="Paris", expectations={"expected_response": "paris"}).value
        True
    """
    def score(outputs: Any, expectations: Any) -> Feedback | bool:
        want = _expected(expected, expectations, key)
        if want is _ABSENT:
            return _missing(f"expectations has no {key!r}")
        if outputs is None:
            return _missing("no outputs to compare")
        if not isinstance(outputs, str) and not isinstance(want, str):
            return bool(outputs == want)
        got_text = _normalise(output_text(outputs), ignore_case, normalize_whitespace)
        want_text = _normalise(output_text(want), ignore_case, normalize_whitespace)
        return got_text == want_text

    return _builtin("exact_match", score, name, {
        "expected": expected, "key": key, "ignore_case": ignore_case,
        "normalize_whitespace": normalize_whitespace})


def contains(substrings: str | Sequence[str] | None = None, *,
             key: str = "expected_substrings", ignore_case: bool = False,
             name: str | None = None) -> Scorer:
    """The text of ``outputs`` contains every substring (given or ``expectations[key]``).

    Example:
        >>> contains(["Paris", "France"])(outputs="Paris is in France").value
        True
    """
    def score(outputs: Any, expectations: Any) -> Feedback:
        wanted = _expected(substrings, expectations, key)
        if wanted is _ABSENT:
            return _missing(f"expectations has no {key!r}")
        needles = [wanted] if isinstance(wanted, str) else wanted
        if not isinstance(needles, Sequence) or not all(isinstance(n, str) for n in needles):
            return _missing(f"substrings must be a str or a list of str, "
                            f"got {type(wanted).__name__}")
        if outputs is None:
            return _missing("no outputs to search")
        text = _normalise(output_text(outputs), ignore_case, False)
        missing = [n for n in needles if _normalise(n, ignore_case, False) not in text]
        rationale = ("all present" if not missing
                     else "missing: " + ", ".join(repr(n) for n in missing))
        return Feedback(not missing, rationale)

    if isinstance(substrings, str):
        recorded: Any = substrings
    else:
        recorded = None if substrings is None else list(substrings)
    return _builtin("contains", score, name, {
        "substrings": recorded, "key": key, "ignore_case": ignore_case})


def regex(pattern: str, *, ignore_case: bool = False, full_match: bool = False,
          name: str | None = None) -> Scorer:
    """The text of ``outputs`` matches ``pattern`` (anywhere, or whole with ``full_match``).

    An invalid pattern is a :class:`~assay.ScorerError` when the scorer is built.

    Example:
        >>> regex(r"\\d{4}")(outputs="founded in 1998").value
        True
    """
    try:
        compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except (re.error, TypeError) as exc:
        raise ScorerError(f"regex: invalid pattern {pattern!r}: {exc}") from exc
    find = compiled.fullmatch if full_match else compiled.search

    def score(outputs: Any) -> Feedback | bool:
        if outputs is None:
            return _missing("no outputs to match")
        return find(output_text(outputs)) is not None

    return _builtin("regex", score, name, {
        "pattern": pattern, "ignore_case": ignore_case, "full_match": full_match})


def response_length(*, unit: str = "chars", min_length: int | None = None,
                    max_length: int | None = None, name: str | None = None) -> Scorer:
    """The length of :func:`output_text` in characters or words (``unit="words"``).

    Without bounds the value is the length; with ``min_length`` and/or
    ``max_length`` it is whether the length lies within them (inclusive), the
    length in metadata.

    Example:
        >>> response_length(unit="words", max_length=3)(outputs="one two three four").value
        False
    """
    if unit not in ("chars", "words"):
        raise ScorerError(f"response_length: unit must be 'chars' or 'words', got {unit!r}")
    low, high = min_length, max_length

    def score(outputs: Any) -> Feedback:
        if outputs is None:
            return _missing("no outputs to measure")
        text = output_text(outputs)
        length = len(text.split()) if unit == "words" else len(text)
        if low is None and high is None:
            return Feedback(length, f"{length} {unit}")
        ok = (low is None or length >= low) and (high is None or length <= high)
        bounds = f"[{'' if low is None else low}, {'' if high is None else high}]"
        return Feedback(ok, f"{length} {unit}, bounds {bounds}",
                        metadata={"length": str(length)})

    return _builtin("response_length", score, name, {
        "unit": unit, "min_length": min_length, "max_length": max_length})


# -- JSON -------------------------------------------------------------------------


def _parse(outputs: Any) -> tuple[Any, str | None]:
    """``outputs`` as a JSON value: a str is parsed, anything else taken as is."""
    if not isinstance(outputs, str):
        return outputs, None
    try:
        return json.loads(outputs), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc}"


def is_json(*, name: str | None = None) -> Scorer:
    """``outputs`` is valid JSON text (a dict or list counts as JSON already).

    Example:
        >>> is_json()(outputs='{"a": 1}').value, is_json()(outputs="{a: 1}").value
        (True, False)
    """
    def score(outputs: Any) -> Feedback:
        if outputs is None:
            return _missing("no outputs to parse")
        _, problem = _parse(outputs)
        return Feedback(problem is None, problem or "valid JSON")

    return _builtin("is_json", score, name, {})


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}
_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "minItems", "maxItems", "pattern",
})
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default",
                          "examples"})


def _check_schema(schema: Any, path: str = "#") -> None:
    """Raise :class:`ScorerError` on a schema using keywords outside the supported subset."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise ScorerError(f"json_schema: schema at {path} must be an object")
    unknown = sorted(set(schema) - _KEYWORDS - _ANNOTATIONS)
    if unknown:
        raise ScorerError(f"json_schema: unsupported keyword(s) {', '.join(unknown)} at "
                          f"{path}; supported: {', '.join(sorted(_KEYWORDS))}")
    types = schema.get("type")
    for t in [types] if isinstance(types, str) else (types or []):
        if t not in _TYPES:
            raise ScorerError(f"json_schema: unknown type {t!r} at {path}")
    for key, sub in (schema.get("properties") or {}).items():
        _check_schema(sub, f"{path}/properties/{key}")
    for key in ("items", "additionalProperties"):
        if key in schema:
            _check_schema(schema[key], f"{path}/{key}")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as exc:
            raise ScorerError(f"json_schema: invalid pattern at {path}: {exc}") from exc


def validate_schema(value: Any, schema: Any, path: str = "$") -> list[str]:
    """Errors of ``value`` against ``schema`` (a JSON Schema subset); empty when valid.

    Supported keywords: ``type`` (a name or a list), ``properties``,
    ``required``, ``additionalProperties`` (bool or schema), ``items`` (one
    schema for every item), ``enum``, ``const``, ``minimum``, ``maximum``,
    ``exclusiveMinimum``, ``exclusiveMaximum`` (numbers), ``minLength``,
    ``maxLength``, ``pattern``, ``minItems``, ``maxItems``; ``title``,
    ``description`` and similar annotations are ignored. ``$ref``,
    ``oneOf``/``anyOf``/``allOf`` and formats are not supported (the
    :func:`json_schema` factory rejects schemas that use them).

    Example:
        >>> validate_schema({"n": "x"}, {"type": "object",
        ...                  "properties": {"n": {"type": "integer"}}})
        ["$.n: expected integer, got 'x'"]
    """
    if schema is True:
        return []
    if schema is False:
        return [f"{path}: no value is allowed here"]
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](value) for t in names):
            errors.append(f"{path}: expected {' or '.join(names)}, got {_short(value)}")
            return errors
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        errors.append(f"{path}: {_short(value)} is not one of {schema['enum']!r}")
    if "const" in schema and not _same(value, schema["const"]):
        errors.append(f"{path}: expected {schema['const']!r}, got {_short(value)}")
    if _TYPES["number"](value):
        for key, bad, word in (("minimum", lambda v, b: v < b, "below the minimum"),
                               ("maximum", lambda v, b: v > b, "above the maximum"),
                               ("exclusiveMinimum", lambda v, b: v <= b, "not above"),
                               ("exclusiveMaximum", lambda v, b: v >= b, "not below")):
            if key in schema and bad(value, schema[key]):
                errors.append(f"{path}: {value!r} is {word} {schema[key]!r}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            errors.append(f"{path}: does not match {schema['pattern']!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors.extend(validate_schema(item, schema["items"], f"{path}[{i}]"))
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                errors.append(f"{path}: missing required property {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors.extend(validate_schema(item, properties[key], f"{path}.{key}"))
            elif extra is not True:
                errors.extend(validate_schema(item, extra, f"{path}.{key}"))
    return errors


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``True`` is not ``1``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_schema(schema: Mapping[str, Any], *, name: str | None = None) -> Scorer:
    """``outputs`` (JSON text, or a dict/list as is) is valid against ``schema``.

    The schema may use the subset :func:`validate_schema` supports; anything
    else is a :class:`~assay.ScorerError` when the scorer is built. The
    rationale lists the first five violations.

    Example:
        >>> check = json_schema({"type": "object", "required": ["answer"]})
        >>> check(outputs='{"answer": "42"}').value, check(outputs="{}").value
        (True, False)
    """
    _check_schema(schema)

    def score(outputs: Any) -> Feedback:
        if outputs is None:
            return _missing("no outputs to validate")
        value, problem = _parse(outputs)
        if problem:
            return Feedback(False, problem)
        errors = validate_schema(value, schema)
        return Feedback(not errors, "; ".join(errors[:5]) if errors else "valid")

    return _builtin("json_schema", score, name, {"schema": dict(schema)})


# -- trace ------------------------------------------------------------------------


def _need_trace(trace: Any) -> Feedback | None:
    if isinstance(trace, Trace):
        return None
    if trace is None:
        return _missing("needs a trace; this row has none")
    return _missing(f"needs a Trace, got {type(trace).__name__}")


def latency(*, max_ms: float | None = None, name: str | None = None) -> Scorer:
    """The root span's duration in milliseconds; with ``max_ms``, whether it is within it.

    Example:
        >>> latency(max_ms=500)(trace=None).error
        'needs a trace; this row has none'
    """
    def score(trace: Any) -> Feedback:
        problem = _need_trace(trace)
        if problem:
            return problem
        root = trace.root_span
        duration = None if root is None else root.duration_ms
        if duration is None:
            return _missing("the trace has no finished root span")
        if max_ms is None:
            return Feedback(duration, f"{duration:g} ms")
        return Feedback(duration <= max_ms, f"{duration:g} ms, limit {max_ms:g} ms",
                        metadata={"latency_ms": f"{duration:g}"})

    return _builtin("latency", score, name, {"max_ms": max_ms})


_INPUT_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
_MODEL_SPANS = frozenset({SpanType.LLM.value, SpanType.CHAT_MODEL.value})


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


def _first(mapping: Mapping[str, Any], keys: Sequence[str]) -> int | None:
    for key in keys:
        n = _count(mapping.get(key))
        if n is not None:
            return n
    return None


def _span_usage(span: Span) -> tuple[int, int] | None:
    """(input, output) tokens of one span, from gen_ai attributes or an LLM ``usage``."""
    attrs = span.attributes
    tokens_in, tokens_out = _first(attrs, _INPUT_KEYS), _first(attrs, _OUTPUT_KEYS)
    if tokens_in is not None or tokens_out is not None:
        return tokens_in or 0, tokens_out or 0
    if span.span_type not in _MODEL_SPANS or not isinstance(span.outputs, Mapping):
        return None
    usage = span.outputs.get("usage")
    if not isinstance(usage, Mapping):
        return None
    tokens_in = _first(usage, ("input_tokens", "prompt_tokens"))  # Anthropic, OpenAI
    tokens_out = _first(usage, ("output_tokens", "completion_tokens"))
    if tokens_in is None and tokens_out is None:
        return None
    return tokens_in or 0, tokens_out or 0


def token_usage(*, max_tokens: int | None = None, name: str | None = None) -> Scorer:
    """Total tokens the trace's model calls used; with ``max_tokens``, whether within it.

    Per span, the OpenTelemetry GenAI attributes ``gen_ai.usage.input_tokens``
    and ``gen_ai.usage.output_tokens`` (or the older ``prompt_tokens`` /
    ``completion_tokens``) count; failing those, an LLM or CHAT_MODEL span
    whose outputs carry an OpenAI (``prompt_tokens``/``completion_tokens``)
    or Anthropic (``input_tokens``/``output_tokens``) ``usage``. Input and
    output totals are in metadata. A trace without any usage scores ``None``.

    Example:
        >>> token_usage()(trace="not a trace").error
        'needs a Trace, got str'
    """
    def score(trace: Any) -> Feedback:
        problem = _need_trace(trace)
        if problem:
            return problem
        counted = [u for u in map(_span_usage, trace.spans) if u is not None]
        if not counted:
            return Feedback(None, "no token usage recorded in the trace")
        tokens_in = sum(u[0] for u in counted)
        tokens_out = sum(u[1] for u in counted)
        total = tokens_in + tokens_out
        metadata = {"input_tokens": str(tokens_in), "output_tokens": str(tokens_out),
                    "model_calls": str(len(counted))}
        rationale = f"{total} tokens ({tokens_in} in, {tokens_out} out)"
        if max_tokens is None:
            return Feedback(total, rationale, metadata=metadata)
        return Feedback(total <= max_tokens, f"{rationale}, limit {max_tokens}",
                        metadata=metadata)

    return _builtin("token_usage", score, name, {"max_tokens": max_tokens})


def _tool_names(trace: Trace) -> list[str]:
    tools = [s for s in trace.spans if s.span_type == SpanType.TOOL.value]
    return [s.name for s in sorted(tools, key=lambda s: s.start_time_ns)]


def tool_called(tool_name: str, *, name: str | None = None) -> Scorer:
    """The trace has a TOOL span named ``tool_name``.

    Example:
        >>> tool_called("search").spec()["arguments"]
        {'tool_name': 'search'}
    """
    if not isinstance(tool_name, str) or not tool_name:
        raise ScorerError("tool_called: tool_name must be a non-empty string")

    def score(trace: Any) -> Feedback:
        problem = _need_trace(trace)
        if problem:
            return problem
        called = _tool_names(trace)
        return Feedback(tool_name in called, f"tools called: {called}")

    return _builtin("tool_called", score, name, {"tool_name": tool_name})


def _is_subsequence(wanted: Sequence[str], actual: Sequence[str]) -> bool:
    remaining = iter(actual)
    return all(any(a == w for a in remaining) for w in wanted)


def tool_call_sequence(expected: Sequence[str] | None = None, *,
                       key: str = "expected_tool_calls", mode: str = "exact",
                       name: str | None = None) -> Scorer:
    """The TOOL span names, in start order, match the expected list.

    ``expected`` comes from the argument or ``expectations[key]``. With
    ``mode="exact"`` the lists are equal; with ``mode="subsequence"`` the
    expected names occur in that order, other calls allowed in between.

    Example:
        >>> tool_call_sequence(["search", "answer"], mode="subsequence").spec()["arguments"]
        {'expected': ['search', 'answer'], 'key': 'expected_tool_calls', 'mode': 'subsequence'}
    """
    if mode not in ("exact", "subsequence"):
        raise ScorerError(f"tool_call_sequence: mode must be 'exact' or 'subsequence', "
                          f"got {mode!r}")
    if isinstance(expected, str):
        raise ScorerError("tool_call_sequence: expected must be a list of tool names")

    def score(trace: Any, expectations: Any) -> Feedback:
        wanted = _expected(expected, expectations, key)
        if wanted is _ABSENT:
            return _missing(f"expectations has no {key!r}")
        if isinstance(wanted, str) or not isinstance(wanted, Sequence) or not all(
                isinstance(w, str) for w in wanted):
            return _missing(f"expected tool calls must be a list of str, "
                            f"got {type(wanted).__name__}")
        problem = _need_trace(trace)
        if problem:
            return problem
        actual = _tool_names(trace)
        ok = (list(wanted) == actual if mode == "exact"
              else _is_subsequence(wanted, actual))
        return Feedback(ok, f"expected {list(wanted)}, called {actual}")

    return _builtin("tool_call_sequence", score, name, {
        "expected": None if expected is None else list(expected), "key": key, "mode": mode})
