"""HTTP helpers shared by assay's clients (the OTLP exporter, the judges' models)."""

from __future__ import annotations

import email.utils
import math
import time
from datetime import timezone

__all__ = ["retry_after"]


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or
    ``None`` when there is none or it cannot be read (a negative or infinite number).

    Example:
        >>> retry_after("2.5")
        2.5
        >>> retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date gone by
        True
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:  # pragma: no cover - older Pythons returned None
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(when.timestamp() - (time.time() if now is None else now), 0.0)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
