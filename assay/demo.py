"""The bundled demo: a small support bot, traced and evaluated over a bundled data set.

``assay demo`` runs :func:`support_bot` over the questions in
``assay/demo_data.json`` with :func:`assay.evaluate`, scores every answer
with :func:`scorers` and prints what was traced, the metrics, the worst rows
and how to find their traces. Everything is local and deterministic: the
"embeddings" are word hashes, the "model" answers with the context sentence
that best overlaps the question, so most answers are right and a few are
wrong or incomplete, the way a real retrieval bot's are.

The app, step by step, for one question:

- ``lookup_order`` (TOOL) when the question names an order such as ``A-100``
  (an unknown order raises ``KeyError``: that row's prediction fails);
- otherwise ``retrieve`` (RETRIEVER) the two closest documents, after an
  ``embed`` (EMBEDDING) of the question;
- ``chat_model`` (CHAT_MODEL) streams the answer and reports ``gen_ai.*``
  token usage on its span.

Used on its own::

    import assay
    from assay import demo

    assay.configure(store="sqlite:///assay.db", experiment="demo")
    result = demo.run()
    print(demo.report(result, store="sqlite:///assay.db"))
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import assay
from assay.evaluate import builtin

if TYPE_CHECKING:
    from assay.evaluate.results import EvaluationResult
    from assay.evaluate.scorers import Scorer

__all__ = [
    "DATA_FILE",
    "DOCS",
    "MODEL",
    "ORDERS",
    "fact_coverage",
    "judge_scorers",
    "load_data",
    "report",
    "right_document",
    "run",
    "scorers",
    "support_bot",
]

#: The bundled data set, inside the ``assay`` package.
DATA_FILE = "demo_data.json"
#: The name the demo's chat model reports as ``gen_ai.request.model``.
MODEL = "demo-1"

DOCS: dict[str, str] = {
    "returns": "Items can be returned within 30 days of delivery for a full refund. "
               "Refunds reach your card within 5 business days. "
               "Opened coffee and tea cannot be returned.",
    "shipping": "Standard shipping takes 3 to 5 business days and is free over 50 euros. "
                "Express shipping takes 1 business day and costs 9 euros. "
                "We ship to every country in the EU.",
    "warranty": "Every kettle carries a two year warranty against manufacturing faults. "
                "The warranty does not cover limescale damage.",
    "descaling": "Descale the kettle monthly with a mix of water and white vinegar. "
                 "Rinse it twice with clean water afterwards.",
    "support": "Support is open 9:00 to 17:00 on weekdays at help@example.com. "
               "Urgent safety issues can be reported by phone at +31 20 555 0100 at any time.",
    "payment": "We accept Visa, Mastercard and PayPal. "
               "Invoices are sent by email after each order.",
    "kettle": "The Brewline kettle holds 1.7 litres and boils in about 3 minutes. "
              "Its base turns a full 360 degrees.",
    "cancelling": "An order can be cancelled free of charge until it ships. "
                  "After it ships, cancel it by returning the items.",
}
ORDERS: dict[str, dict[str, Any]] = {
    "A-100": {"status": "shipped", "eta_days": 2},
    "A-101": {"status": "delivered"},
    "A-102": {"status": "processing"},
}

_WHY_WIDTH = 100  # the characters of a worst row's "why" that the report shows
_JUDGE_ENV = ("ASSAY_JUDGE_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY")
_STOP = frozenset({
    "a", "an", "and", "any", "are", "at", "be", "by", "can", "do", "does", "for", "get",
    "has", "have", "how", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "the",
    "to", "was", "what", "when", "where", "which", "who", "why", "will", "with", "you",
    "your"})
_ORDER_ID = re.compile(r"\b[A-Z]-\d+\b")  # upper case only: "a-101" is missed
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _stems(text: str) -> list[str]:
    """Lower-cased content words cut to five letters ("shipping" and "ships" meet)."""
    return [w[:5] for w in re.findall(r"[a-z0-9+@.:-]+", text.lower())
            if w.strip(".:") and w not in _STOP]


def _vector(text: str, dims: int = 256) -> list[float]:
    vec = [0.0] * dims
    for stem in _stems(text):
        vec[int(hashlib.sha1(stem.encode()).hexdigest(), 16) % dims] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [round(v / norm, 4) for v in vec]


@cache
def _index() -> dict[str, list[float]]:
    """The documents' vectors, computed once (outside any trace)."""
    return {doc_id: _vector(text) for doc_id, text in DOCS.items()}


@assay.trace(span_type="EMBEDDING")
def embed(text: str) -> list[float]:
    """A bag-of-words vector built from word hashes."""
    return _vector(text)


@assay.trace(span_type="RETRIEVER")
def retrieve(query: str, k: int = 2) -> list[dict[str, Any]]:
    """The ``k`` documents closest to ``query`` (cosine of the hashed vectors)."""
    q = embed(query)
    scores = {doc_id: round(sum(a * b for a, b in zip(q, vec, strict=True)), 4)
              for doc_id, vec in _index().items()}
    ranked = sorted(scores, key=lambda doc_id: -scores[doc_id])[:k]
    return [{"id": doc_id, "text": DOCS[doc_id], "score": scores[doc_id]} for doc_id in ranked]


@assay.trace(span_type="TOOL")
def lookup_order(order_id: str) -> dict[str, Any]:
    """An order's status; ``KeyError`` for an unknown order."""
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return {"order_id": order_id, **ORDERS[order_id]}


def _order_sentence(order: dict[str, Any]) -> str:
    status = order["status"]
    if status == "shipped":
        return (f"Order {order['order_id']} has shipped and should arrive in "
                f"{order['eta_days']} days.")
    if status == "delivered":
        return f"Order {order['order_id']} was delivered."
    return f"Order {order['order_id']} is being prepared and has not shipped yet."


def _best_sentence(question: str, context: str) -> str:
    """The context sentence sharing the most words with the question (the first on a tie)."""
    wanted = set(_stems(question))
    sentences = [s for line in context.splitlines() for s in _SENTENCE.split(line) if s]
    return max(sentences, key=lambda s: len(wanted & set(_stems(s))))


@assay.trace(span_type="CHAT_MODEL", output_reducer="".join)
def chat_model(messages: list[dict[str, str]], model: str = MODEL) -> Iterator[str]:
    """Streams an answer token by token and reports token usage like a real model.

    The "model" answers with the context sentence that best overlaps the question.
    """
    prompt = messages[-1]["content"]
    context, _, question = prompt.partition("\n\nQuestion: ")
    reply = _best_sentence(question, context.removeprefix("Context:\n"))
    span = assay.get_current_span()
    if span is not None:
        span.set_attributes({
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "assay-demo",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": sum(len(m["content"].split()) for m in messages),
            "gen_ai.usage.output_tokens": len(reply.split()),
        })
    for i, token in enumerate(reply.split(" ")):
        yield token if i == 0 else " " + token


def support_bot(question: str, user: str = "guest") -> str:
    """Answer a customer's question from the order system or the help pages.

    ``evaluate()`` runs it under a trace per question; to trace it outside an
    evaluation, wrap it: ``assay.trace(support_bot)``.
    """
    assay.update_current_trace(tags={"app": "support-bot"}, user=user)
    order = _ORDER_ID.search(question)
    if order:
        context = _order_sentence(lookup_order(order.group(0)))
    else:
        context = "\n".join(doc["text"] for doc in retrieve(question))
    messages = [{"role": "system", "content": "Answer the question from the context only."},
                {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"}]
    return "".join(chat_model(messages))


# -- the data set and the scorers ------------------------------------------------

def load_data() -> list[dict[str, Any]]:
    """The bundled questions: ``inputs`` (question, user) and ``expectations``
    (``expected_response``, ``expected_facts``, ``must_mention``,
    ``expected_doc``, ``expected_tool_calls``)."""
    text = resources.files("assay").joinpath(DATA_FILE).read_text(encoding="utf-8")
    rows: list[dict[str, Any]] = json.loads(text)
    return rows


@assay.scorer(aggregations=["mean", "min"], pass_if=">= 1")
def fact_coverage(outputs: Any, expectations: Any) -> assay.Feedback:
    """The share of ``expected_facts`` the answer states (case-insensitive); passes at 1."""
    facts = (expectations or {}).get("expected_facts") or []
    if not facts:
        return assay.Feedback(None, "no expected facts")
    text = str(outputs).casefold()
    missing = [f for f in facts if f.casefold() not in text]
    rationale = "all facts stated" if not missing else "missing: " + ", ".join(
        repr(f) for f in missing)
    return assay.Feedback((len(facts) - len(missing)) / len(facts), rationale)


@assay.scorer
def right_document(trace: Any, expectations: Any) -> assay.Feedback:
    """The retriever returned ``expected_doc`` (read from the trace's RETRIEVER span);
    no verdict for questions that need no document."""
    wanted = (expectations or {}).get("expected_doc")
    if wanted is None:
        return assay.Feedback(None, "no document expected")
    retrieved = [d.get("id") for span in trace.search_spans(span_type="RETRIEVER")
                 for d in (span.outputs or []) if isinstance(d, dict)]
    return assay.Feedback(wanted in retrieved, f"wanted {wanted!r}, retrieved {retrieved}")


def judge_scorers() -> list[Scorer]:
    """An LLM judge of correctness when a model endpoint is configured
    (``ASSAY_JUDGE_MODEL``, or ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``); otherwise,
    or when the judges cannot be imported, none."""
    if not any(os.environ.get(k) for k in _JUDGE_ENV):
        return []
    try:
        from assay.judges import Correctness
    except ImportError:
        return []
    return [Correctness()]  # the model: ASSAY_JUDGE_MODEL, else the judges' default


def scorers() -> list[Scorer]:
    """The demo's scorers: built-ins over the expectations and the trace, two custom
    scorers, and an LLM judge when one is configured."""
    return [
        builtin.exact_match(ignore_case=True, normalize_whitespace=True),
        builtin.contains(key="must_mention", ignore_case=True, name="mentions"),
        fact_coverage,
        right_document,
        builtin.tool_call_sequence(),
        builtin.latency(max_ms=1000),
        builtin.token_usage(),
        *judge_scorers(),
    ]


def run(*, run_name: str = "support-bot") -> EvaluationResult:
    """Evaluate :func:`support_bot` over the bundled data set with :func:`scorers`
    in the configured store and experiment."""
    return assay.evaluate(load_data(), scorers=scorers(), predict_fn=support_bot,
                          run_name=run_name)


# -- the report -----------------------------------------------------------------

def report(result: EvaluationResult, *, store: str) -> str:
    """What ``assay demo`` prints: what was traced, one trace, the metrics, the
    worst rows and how to find their traces."""
    return "\n\n".join([_traced(result, store), _metrics_table(result),
                        _worst(result, store)])


def _traced(result: EvaluationResult, store: str) -> str:
    from assay.cli import render_tree

    run_filter = f"run_id = '{result.run_id}'"
    traces = assay.search_traces(run_filter, experiment=result.experiment,
                                 max_results=len(result.table) or 1, return_type="list")
    kinds = Counter(s.span_type for t in traces for s in t.spans)
    failed = sum(t.info.state == "ERROR" for t in traces)
    spans = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    lines = ["assay demo: a small support bot (a retriever, a tool, a streaming chat model) "
             "answers the bundled questions; evaluate() traces and scores every answer.", "",
             f"Traced {len(result.table)} questions into {store} "
             f"(experiment {result.experiment!r}, run {result.run_id}):",
             f"  {len(traces)} traces, {sum(kinds.values())} spans ({spans}); "
             f"{failed} trace(s) in ERROR.", "",
             "One of them, as `assay traces show` prints it:"]
    shown = _example_trace(result, traces)
    if shown is not None:
        lines.append(render_tree(shown))
    frame = assay.search_traces(run_filter, experiment=result.experiment, max_results=5)
    lines += ["", f'assay.search_traces("{run_filter}", max_results=5):']
    columns = ["trace_id", "state", "execution_time_ms", "response"]
    lines.append(frame[columns].to_string(index=False, max_colwidth=48,
                                          float_format=lambda v: f"{v:.2f}"))
    return "\n".join(lines)


def _example_trace(result: EvaluationResult, traces: list[assay.Trace]) -> assay.Trace | None:
    """The first row's trace that retrieved and answered, else any."""
    by_id = {t.trace_id: t for t in traces}
    for trace_id in result.table["trace_id"]:
        trace = by_id.get(trace_id)
        types = {s.span_type for s in trace.spans} if trace is not None else set()
        if trace is not None and trace.info.state == "OK" and {
                "RETRIEVER", "CHAT_MODEL"} <= types:
            return trace
    return traces[0] if traces else None


def _metrics_table(result: EvaluationResult) -> str:
    m = result.metrics
    rows = [("scorer", "mean", "pass rate", "errors")]
    for name in result.feedback_names:
        mean = m.get(f"{name}/mean")
        rate = m.get(f"{name}/pass_rate")
        rows.append((name,
                     "-" if mean is None or not math.isfinite(mean) else f"{mean:.3f}",
                     "-" if rate is None else f"{rate:.0%}",
                     str(int(m.get(f"{name}/error_count", 0)))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"Metrics of run {result.run_id} ({int(m.get('rows', 0))} rows):"]
    for r in rows:
        lines.append("  " + "  ".join([r[0].ljust(widths[0]),
                                       *(c.rjust(w) for c, w in zip(r[1:], widths[1:],
                                                                   strict=True))]))
    if "predict/latency_ms_p50" in m:
        lines.append(f"  predict_fn: {int(m.get('predict/error_count', 0))} of "
                     f"{int(m.get('rows', 0))} rows failed; latency "
                     f"p50 {m['predict/latency_ms_p50']:.1f} ms, "
                     f"p90 {m['predict/latency_ms_p90']:.1f} ms")
    if m.get("judge/calls"):
        lines.append(f"  judge: {int(m.get('judge/cache_misses', 0))} model calls, "
                     f"{int(m.get('judge/cache_hits', 0))} verdicts from the cache")
    else:
        lines.append("  (no LLM judge: set ASSAY_JUDGE_MODEL or OPENAI_BASE_URL / "
                     "OPENAI_API_KEY to add one)")
    return "\n".join(lines)


def _worst(result: EvaluationResult, store: str) -> str:
    worst = result.worst_rows(5)
    questions = {r["row"]: r["inputs"].get("question", "")
                 for r in result.table[["row", "inputs"]].to_dict("records")}
    lines = ["Worst rows:"]
    for r in worst:
        lines.append(f"  row {r['row']:>2}  trace {r['trace_id']}  "
                     f"{questions.get(r['row'], '')!r}")
        why = r["why"] if len(r["why"]) <= _WHY_WIDTH else r["why"][:_WHY_WIDTH - 1] + "…"
        lines.append(f"          {why}")
    run_filter = f"run_id = '{result.run_id}'"
    queries = [f"{run_filter} AND {where}" for where in (
        "feedback.exact_match = false", "feedback.fact_coverage < 1",
        "trace.status = 'ERROR'")]
    width = max(len(q) for q in queries) + len('assay.search_traces("")')
    lines += ["", "Find them:"]
    for query in queries:
        found = assay.count_traces(query, experiment=result.experiment)
        call = f'assay.search_traces("{query}")'
        lines.append(f"  {call:<{width}}  # {found} trace{'' if found == 1 else 's'}")
    lines.append(f"  assay.get_run('{result.run_id}').metrics")
    if worst:
        lines.append(f"  assay traces show {worst[0]['trace_id']} --store {store}")
    lines.append(f"  assay traces list --experiment {result.experiment} --store {store}")
    return "\n".join(lines)
