"""LLM judges: :func:`make_judge` and the built-in judges.

    import assay.judges

    correctness = assay.judges.Correctness(model="openai:/gpt-4o-mini")
    polite = assay.judges.make_judge(
        "polite", "Is this reply polite? {{ outputs }}", model="anthropic:/claude-3-5-haiku-latest")
    assay.evaluate(data, scorers=[correctness, polite])

See :mod:`assay.evaluate.judges` for the prompts, the reply format and the
Feedback metadata, :mod:`assay.evaluate.models` for the endpoints, and
:mod:`assay.evaluate.cache` for the verdict cache.
"""

from assay.evaluate.cache import JudgeCache
from assay.evaluate.judges import (
    Correctness,
    Guidelines,
    Judge,
    RelevanceToQuery,
    RetrievalGroundedness,
    RetrievalRelevance,
    Safety,
    ToolCallCorrectness,
    make_judge,
)
from assay.evaluate.models import AnthropicModel, Completion, Model, OpenAIModel, get_model

__all__ = [
    "AnthropicModel",
    "Completion",
    "Correctness",
    "Guidelines",
    "Judge",
    "JudgeCache",
    "Model",
    "OpenAIModel",
    "RelevanceToQuery",
    "RetrievalGroundedness",
    "RetrievalRelevance",
    "Safety",
    "ToolCallCorrectness",
    "get_model",
    "make_judge",
]
