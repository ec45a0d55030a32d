"""A progress bar for ``evaluate()`` on a terminal; silent anywhere else.

No dependency: one line on stderr, redrawn at most ten times a second.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["Progress"]

_REDRAW_S = 0.1
_WIDTH = 28


class Progress:
    """Counts work done in one phase (``predict``, ``score``) and draws it.

    Thread-safe: workers call :meth:`advance`; :meth:`close` draws the final
    state and ends the line.

    Args:
        label: what is counted, shown before the bar.
        total: how many units the phase has.
        enabled: ``None`` draws only when ``stream`` is a terminal.
        stream: where to draw (stderr by default).

    Example:
        >>> with Progress("score", 10, enabled=False) as bar:
        ...     bar.advance()
    """

    def __init__(self, label: str, total: int, *, enabled: bool | None = None,
                 stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(int(total), 0)
        self.done = 0
        self.failed = 0
        self._stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self._stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._drawn = 0.0

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        """Count ``n`` more units done, ``failed`` of them with an error."""
        with self._lock:
            self.done += n
            self.failed += failed
            self._draw()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if not self.enabled:
            return
        with self._lock:
            self._draw(force=True)
            if self.enabled:
                try:
                    self._stream.write("\n")
                    self._stream.flush()
                except (OSError, ValueError):
                    self.enabled = False

    def line(self) -> str:
        """The text of the bar as it stands."""
        total = self.total or 1
        filled = min(_WIDTH, _WIDTH * self.done // total)
        elapsed = time.monotonic() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        tail = f" {self.failed} failed" if self.failed else ""
        return (f"{self.label:>8} [{'#' * filled}{'.' * (_WIDTH - filled)}] "
                f"{self.done}/{self.total} {elapsed:5.1f}s {rate:6.1f}/s{tail}")

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn < _REDRAW_S and self.done < self.total:
            return
        self._drawn = now
        try:
            self._stream.write("\r" + self.line())
            self._stream.flush()
        except (OSError, ValueError):
            self.enabled = False  # a closed or broken stream: stop drawing
