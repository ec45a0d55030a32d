"""Scorers, in one import: the decorator, the types and the built-in deterministic ones.

    from assay.scorers import contains, exact_match, latency, scorer

    @scorer
    def cites_a_source(outputs) -> bool:
        return "[1]" in outputs

    assay.evaluate(data, scorers=[exact_match(), latency(max_ms=2000), cites_a_source],
                   predict_fn=app)

LLM judges live in :mod:`assay.judges`.
"""

from assay.evaluate.builtin import (
    contains,
    exact_match,
    is_json,
    json_schema,
    latency,
    regex,
    response_length,
    token_usage,
    tool_call_sequence,
    tool_called,
)
from assay.evaluate.scorers import Feedback, Scorer, aggregate, scorer

__all__ = [
    "Feedback",
    "Scorer",
    "aggregate",
    "contains",
    "exact_match",
    "is_json",
    "json_schema",
    "latency",
    "regex",
    "response_length",
    "scorer",
    "token_usage",
    "tool_call_sequence",
    "tool_called",
]
