"""Evaluation: scorers that judge a row, and the built-in deterministic ones.

    import assay
    from assay.evaluate import builtin

    @assay.scorer
    def mentions_source(outputs) -> bool:
        return "[1]" in outputs

    scorers = [mentions_source, builtin.exact_match(), builtin.latency(max_ms=2000)]
"""

from assay.evaluate import builtin
from assay.evaluate.scorers import Feedback, Scorer, aggregate, check_unique_names, scorer

__all__ = ["builtin", "Feedback", "Scorer", "aggregate", "check_unique_names", "scorer"]
