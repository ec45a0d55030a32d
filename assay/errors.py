"""The exceptions assay raises.

    AssayError
     ├── ConfigurationError   a bad setting, store URI or environment variable
     ├── InvalidFilter        a malformed search filter (carries the position)
     ├── InvalidData          evaluation data or dataset records that cannot be used
     ├── StoreError           the trace store cannot be opened, read or written
     ├── ScorerError          a scorer is misdefined
     └── JudgeError           an LLM judge is misdefined or its endpoint failed

Only the caller's mistakes are raised into application code. Failures of the
telemetry pipeline itself (an exporter that cannot write) are logged and
counted, never raised from a traced function.
"""

from __future__ import annotations

__all__ = [
    "AssayError",
    "ConfigurationError",
    "InvalidData",
    "InvalidFilter",
    "JudgeError",
    "ScorerError",
    "StoreError",
]


class AssayError(Exception):
    """Root of every exception assay raises on purpose."""


class ConfigurationError(AssayError, ValueError):
    """A setting, store URI or ``ASSAY_*`` environment variable is invalid."""


class InvalidFilter(AssayError, ValueError):
    """A search filter string is malformed.

    Attributes:
        message: what is wrong, without the position or the filter.
        filter_string: the filter as given.
        position: the 0-based character offset where parsing failed.
        hint: what was expected there, or a did-you-mean suggestion.
    """

    def __init__(self, message: str, *, filter_string: str = "", position: int = 0,
                 hint: str | None = None) -> None:
        self.message = message
        self.filter_string = filter_string
        self.position = position
        self.hint = hint
        text = f"{message} at position {position}"
        if filter_string:
            # A window of the filter around the position, on one line, with a caret.
            start = max(position - 60, 0)
            window = filter_string[start:position + 60]
            shown = window.replace("\n", " ").replace("\r", " ").replace("\t", " ")
            lead = "..." if start else ""
            tail = "..." if position + 60 < len(filter_string) else ""
            text += f"\n  {lead}{shown}{tail}\n  {' ' * (len(lead) + position - start)}^"
        if hint:
            text += f"\n{hint}"
        super().__init__(text)


class InvalidData(AssayError, ValueError):
    """Data given to ``evaluate()`` or merged into a dataset is malformed; the
    message names the row (by position) and what is wrong with it."""


class StoreError(AssayError):
    """The trace store cannot be opened, read or written.

    Attributes:
        may_pass: the store may take the same write later, with nothing changed
            in what is written: its schema is one this assay may not write until
            the store (``assay db upgrade``) or this assay is upgraded. Spans a
            store with a spool could not write for such a reason are kept.
    """

    def __init__(self, *args: object, may_pass: bool = False) -> None:
        super().__init__(*args)
        self.may_pass = may_pass


class ScorerError(AssayError):
    """A scorer is misdefined (bad signature, unknown name)."""


class JudgeError(AssayError):
    """An LLM judge is misdefined, or its model endpoint failed for good."""
