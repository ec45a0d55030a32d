"""A small bundled app to trace: a support bot that retrieves, calls a tool and streams.

``assay demo`` runs it over a few questions. Everything is local and
deterministic: the "model" is a template, the "embeddings" are word hashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections.abc import Iterator
from typing import Any

import assay

DOCS = [
    {"id": "returns",
     "text": "Items can be returned within 30 days of delivery for a full refund."},
    {"id": "shipping",
     "text": "Standard shipping takes 3 to 5 business days; express takes 1 day."},
    {"id": "warranty",
     "text": "Every kettle carries a two year warranty against manufacturing faults."},
    {"id": "descaling",
     "text": "Descale the kettle monthly with a mix of water and white vinegar."},
    {"id": "support",
     "text": "Support is open 9:00 to 17:00 on weekdays at help@example.com."},
]
ORDERS: dict[str, dict[str, Any]] = {
    "A-100": {"status": "shipped", "eta_days": 2},
    "A-101": {"status": "delivered"},
}
QUESTIONS = [
    ("How long does shipping take?", "ana"),
    ("Can I return my kettle?", "ben"),
    ("Where is my order A-100?", "ana"),
    ("Where is my order Z-999?", "chen"),
]


_STOP = {"a", "an", "and", "at", "can", "does", "for", "how", "i", "is", "my", "of", "on",
         "the", "to", "where", "with", "within"}


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9-]+", text.lower()) if w not in _STOP]


@assay.trace(span_type="EMBEDDING")
def embed(text: str, dims: int = 256) -> list[float]:
    """A bag-of-words vector built from word hashes."""
    vec = [0.0] * dims
    for word in _words(text):
        stem = word[:5]  # crude stemming: "shipping" and "ship" meet
        vec[int(hashlib.sha1(stem.encode()).hexdigest(), 16) % dims] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [round(v / norm, 4) for v in vec]


@assay.trace(span_type="RETRIEVER")
def retrieve(query: str, k: int = 2) -> list[dict[str, Any]]:
    q = embed(query)
    scored: list[dict[str, Any]] = []
    for doc in DOCS:
        d = embed(doc["text"])
        scored.append({"id": doc["id"], "text": doc["text"],
                       "score": round(sum(a * b for a, b in zip(q, d, strict=True)), 4)})
    return sorted(scored, key=lambda x: -x["score"])[:k]


@assay.trace(span_type="TOOL")
def lookup_order(order_id: str) -> dict[str, Any]:
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return ORDERS[order_id]


@assay.trace(span_type="CHAT_MODEL", output_reducer="".join)
def chat_model(messages: list[dict[str, str]], model: str = "demo-1") -> Iterator[str]:
    """Streams an answer token by token, reporting token usage like a real model."""
    context = messages[-1]["content"]
    reply = f"Here is what I found: {context}"
    span = assay.get_current_span()
    if span is not None:
        span.set_attributes({"gen_ai.request.model": model,
                             "gen_ai.usage.input_tokens": sum(len(_words(m["content"]))
                                                              for m in messages),
                             "gen_ai.usage.output_tokens": len(reply.split())})
    for token in reply.split(" "):
        yield token + " "


@assay.trace(span_type="AGENT")
def answer(question: str, user: str) -> str:
    assay.update_current_trace(tags={"app": "support-bot"}, user=user)
    order = re.search(r"\b[A-Z]-\d+\b", question)
    if order:
        facts = str(lookup_order(order.group(0)))
    else:
        facts = " ".join(str(d["text"]) for d in retrieve(question))
    messages = [{"role": "system", "content": "Answer from the facts."},
                {"role": "user", "content": facts}]
    return "".join(chat_model(messages)).strip()


def run() -> list[str]:
    """Answer every demo question; returns their trace ids (a failed one included)."""
    ids = []
    for question, user in QUESTIONS:
        with contextlib.suppress(KeyError):  # recorded on the trace as an ERROR
            answer(question, user)
        trace_id = assay.get_last_trace_id()
        if trace_id is not None:
            ids.append(trace_id)
    return ids
