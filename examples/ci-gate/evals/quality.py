"""The help-desk bot's quality gate, run by ``assay eval evals/quality.py``.

``evaluation()`` returns the arguments of ``assay.evaluate``: the questions
with what a right answer must contain, the scorers, the app and the
thresholds the gate holds it to. Everything here is deterministic; an LLM
judge of correctness is added only when a judge model is configured
(``ASSAY_JUDGE_MODEL``, or ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import os
from typing import Any

import assay
from assay.evaluate import builtin

from app import answer  # the project root: `assay eval` runs from there


def row(question: str, facts: list[str], mention: list[str]) -> dict[str, Any]:
    return {"inputs": {"question": question},
            "expectations": {"expected_facts": facts, "must_mention": mention}}


QUESTIONS = [
    row("How long does shipping take?", ["3 to 5 business days"], ["days"]),
    row("How fast can you deliver if I'm in a hurry?", ["next business day"], ["express"]),
    row("Can I return my kettle?", ["30 days", "full refund"], ["30 days"]),
    row("How do I get a refund for a toaster?", ["full refund"], ["refund"]),
    row("My kettle is broken, what now?", ["2-year warranty"], ["warranty"]),
    row("Do you repair a toaster with a defect?", ["repair or replace"], ["repair"]),
    row("Can I pay with PayPal?", ["PayPal"], ["PayPal"]),
    row("Which credit card can I use?", ["Visa", "Mastercard"], ["Visa"]),
    row("When are you open?", ["Monday to Friday", "9:00 to 17:00"], ["Monday"]),
    row("Can I call you on a Saturday?", ["Monday to Friday"], ["Friday"]),
    row("I can't log in to my account", ["Forgot password"], ["password"]),
    # two topics in one question: the bot answers only the first
    row("Is shipping free, and can I pay by card?", ["free over $50", "Visa"], ["Visa"]),
]


@assay.scorer(pass_if=">= 1")
def fact_coverage(outputs: str, expectations: dict[str, Any]) -> float:
    """The share of the expected facts the answer states."""
    facts = expectations["expected_facts"]
    return sum(fact.lower() in outputs.lower() for fact in facts) / len(facts)


def judges() -> list[assay.Scorer]:
    """An LLM judge of correctness, when a judge model is configured."""
    if not any(os.environ.get(k) for k in ("ASSAY_JUDGE_MODEL", "OPENAI_BASE_URL",
                                           "OPENAI_API_KEY")):
        return []
    from assay.judges import Correctness

    return [Correctness()]


def evaluation() -> dict[str, Any]:
    return {
        "data": QUESTIONS,
        "predict_fn": answer,
        "scorers": [
            fact_coverage,
            builtin.contains(key="must_mention", ignore_case=True, name="mentions"),
            builtin.response_length(unit="words", max_length=40, name="concise"),
            *judges(),
        ],
        "thresholds": {
            # the lower bound of the 95% interval, not the lucky point estimate
            "fact_coverage/mean": ">= 0.8 @lower",
            "mentions/pass_rate": ">= 0.9",
            "concise/pass_rate": ">= 1",
        },
        "run_name": "help-desk-quality",
        "experiment": "help-desk",
    }
