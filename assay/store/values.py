"""How typed values (span attributes, assessment values) are kept for filtering."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["json_text", "typed_value"]

_MAX_JSON_BYTES = 1 << 20  # of a value only the fallback can write


def typed_value(value: Any) -> tuple[str, float | None, str | None]:
    """``(value_kind, num_value, str_value)`` for one value.

    ``value_kind`` is ``s`` (string), ``n`` (number), ``b`` (boolean) or ``j``
    (anything else). ``num_value`` holds numbers and booleans (1/0); ``str_value``
    holds the string itself, or the JSON text of any other value, so that a
    filter comparing with a string also finds ``5`` for ``'5'`` and ``true`` for
    ``'true'``, as MLflow's text comparison does.
    """
    if isinstance(value, bool):
        return "b", 1.0 if value else 0.0, "true" if value else "false"
    if isinstance(value, (int, float)):
        number = float(value)
        if math.isnan(number):
            return "n", None, "NaN"
        text = json.dumps(value) if math.isfinite(number) else str(value)
        return "n", number, text
    if isinstance(value, str):
        return "s", None, value
    if value is None:
        return "j", None, None
    return "j", None, json_text(value)


def json_text(value: Any) -> str:
    """``value`` as JSON text, whatever it holds: what JSON cannot hold is written
    as its ``str``; a value even that fails on (a cycle, a ``str`` that raises) is
    written as the tracer writes inputs, with markers. Never raises."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except Exception:
        from assay.tracing.serialize import dumps

        return dumps(value, _MAX_JSON_BYTES)
