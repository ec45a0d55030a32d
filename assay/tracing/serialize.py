"""Turning recorded values into JSON, eagerly, without ever raising.

A value is serialised at the moment it is recorded, so that a caller that
mutates its objects afterwards does not change the record. pydantic models,
dataclasses, enums, datetimes, UUIDs, paths, sets and bytes are handled by
pydantic-core; numpy and pandas values are converted natively; anything else
becomes its ``repr``. Cycles and values whose JSON is larger than the limit are
cut with a visible marker, never with an exception.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pydantic_core

__all__ = ["CYCLE_MARKER", "dumps", "to_jsonable", "truncation_marker"]

log = logging.getLogger("assay")

CYCLE_MARKER = "<cycle>"
_MAX_REPR = 2_000
_MAX_DEPTH = 64


def truncation_marker(total: int) -> str:
    return f"...[truncated by assay: {total} bytes in all]"


def _fallback(obj: Any) -> Any:
    """Convert what pydantic-core does not know; the result is serialised again."""
    module = type(obj).__module__ or ""
    try:
        if module.startswith("numpy"):
            if hasattr(obj, "tolist"):
                return obj.tolist()
        elif module.startswith("pandas"):
            if hasattr(obj, "to_dict"):
                if hasattr(obj, "columns"):  # DataFrame
                    return obj.to_dict(orient="records")
                return obj.to_dict()
            if hasattr(obj, "isoformat"):
                return obj.isoformat()
            if obj is getattr(__import__("pandas"), "NA", None) or module == "pandas._libs.missing":
                return None
        text = repr(obj)
    except Exception:
        return f"<unrepresentable {type(obj).__name__}>"
    if len(text) > _MAX_REPR:
        text = text[:_MAX_REPR] + truncation_marker(len(text))
    return text


def _walk(value: Any, seen: set[int], depth: int) -> Any:
    """Slow path: a JSON-safe copy with cycles and unserialisable parts replaced."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > _MAX_DEPTH:
        return "<too deep>"
    key = id(value)
    if key in seen:
        return CYCLE_MARKER
    if isinstance(value, dict):
        seen.add(key)
        try:
            return {str(k): _walk(v, seen, depth + 1) for k, v in list(value.items())}
        finally:
            seen.discard(key)
    if isinstance(value, (list, tuple, set, frozenset)):
        seen.add(key)
        try:
            return [_walk(v, seen, depth + 1) for v in list(value)]
        finally:
            seen.discard(key)
    try:
        converted = pydantic_core.to_jsonable_python(
            value, fallback=_fallback, inf_nan_mode="strings", bytes_mode="base64")
    except Exception:
        # A container pydantic-core cannot take whole (cycles inside a model):
        # go through its fields when it has any, else its repr.
        inner = getattr(value, "__dict__", None)
        if isinstance(inner, dict):
            seen.add(key)
            try:
                return {str(k): _walk(v, seen, depth + 1) for k, v in list(inner.items())
                        if not str(k).startswith("_")}
            finally:
                seen.discard(key)
        return _fallback(value)
    if converted is value:
        return _fallback(value)
    seen.add(key)
    try:
        return _walk(converted, seen, depth + 1)
    finally:
        seen.discard(key)


def to_jsonable(value: Any) -> Any:
    """A JSON-safe copy of ``value`` (dicts, lists, str, numbers, bool, None)."""
    try:
        return pydantic_core.to_jsonable_python(
            value, fallback=_fallback, inf_nan_mode="strings", bytes_mode="base64")
    except Exception:
        try:
            return _walk(value, set(), 0)
        except Exception:  # pragma: no cover - last resort
            return f"<unrepresentable {type(value).__name__}>"


def _shrink(value: Any, max_str: int, max_items: int) -> Any:
    if isinstance(value, str):
        if len(value) > max_str:
            return value[:max_str] + truncation_marker(len(value.encode("utf-8", "replace")))
        return value
    if isinstance(value, dict):
        items = list(value.items())
        out = {k: _shrink(v, max_str, max_items) for k, v in items[:max_items]}
        if len(items) > max_items:
            out["..."] = f"[truncated by assay: {len(items) - max_items} more keys]"
        return out
    if isinstance(value, list):
        out_list = [_shrink(v, max_str, max_items) for v in value[:max_items]]
        if len(value) > max_items:
            out_list.append(f"...[truncated by assay: {len(value) - max_items} more items]")
        return out_list
    return value


def _fit(text: bytes, value: Any, max_bytes: int) -> str:
    """Cut an oversized value down to ``max_bytes`` of JSON, keeping its shape if possible."""
    total = len(text)
    try:
        data = json.loads(text) if value is None else to_jsonable(value)
        max_str, max_items = max(max_bytes // 2, 16), 1_000
        for _ in range(12):
            cut = json.dumps(_shrink(data, max_str, max_items), ensure_ascii=False)
            if len(cut.encode("utf-8")) <= max_bytes:
                return cut
            max_str, max_items = max(max_str // 4, 16), max(max_items // 4, 1)
    except Exception:
        pass
    marker = truncation_marker(total)
    keep = max(max_bytes - len(marker) - 2, 0)
    while True:
        out = json.dumps(text[:keep].decode("utf-8", "ignore") + marker, ensure_ascii=False)
        overflow = len(out.encode("utf-8")) - max_bytes
        if overflow <= 0 or keep == 0:
            return out
        keep = max(keep - overflow, 0)


def dumps(value: Any, max_bytes: int) -> str:
    """The JSON text of ``value``, at most about ``max_bytes`` long; never raises."""
    try:
        text = pydantic_core.to_json(
            value, fallback=_fallback, inf_nan_mode="strings", bytes_mode="base64")
    except Exception:
        try:
            value = _walk(value, set(), 0)
            text = json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        except Exception as exc:  # pragma: no cover - last resort
            log.debug("assay could not serialise a %s: %r", type(value).__name__, exc)
            return json.dumps(f"<unrepresentable {type(value).__name__}>")
    if len(text) > max_bytes:
        return _fit(text, value, max_bytes)
    return text.decode("utf-8")
