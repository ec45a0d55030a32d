#!/usr/bin/env python
"""What does ``assay.evaluate`` cost around the scorers and judges it runs? Run by hand:

    python bench/evaluate.py            # 1,000 rows, about half a minute
    python bench/evaluate.py --quick    # 200 rows, for a smoke test
    python bench/evaluate.py --json out.json

The judge's model is a local endpoint on 127.0.0.1 (tests/evaluate/judge_server.py,
speaking the OpenAI chat-completions protocol, in a process of its own so that it
does not share this interpreter's GIL) that answers every request after a fixed
delay; the store is a fresh SQLite file. Machines are noisy: every figure is
a ratio against a baseline measured in the same run.

[1/3] judge-bound: N rows with outputs, one LLM judge whose endpoint answers in 50 ms,
      16 workers, the judge cache off. Baseline: the ideal wall time,
      N x 50 ms / 16. Target: evaluate's wall time <= 1.2 x the ideal.
[2/3] the framework's own cost per row: the same rows with one instant deterministic
      scorer (exact match), and again with a trivial predict_fn: evaluate's whole wall
      time (checking the data, a trace per row, scoring, feedback on every trace,
      metrics, the run and its per-row table, the final flush) over N. Target: < 1 ms
      per row each.
[3/3] the judge cache: [1/3] with the cache on (a fresh directory), then the same
      evaluation three times more. Targets: the reruns make zero model calls, and the
      median rerun takes < 10% of the first run's wall time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from _common import (
    REPO,
    base_environment,
    load_average,
    print_run_footer,
    print_summary,
    say,
    verdict,
)

import assay
from assay.judges import make_judge
from assay.scorers import exact_match

JUDGE_DELAY_S = 0.050
WORKERS = 16
RERUNS = 3


def rows(n: int) -> list[dict[str, Any]]:
    return [{"inputs": {"question": f"question {i}?"},
             "outputs": f"answer {i}" if i % 7 else "wrong",
             "expectations": {"expected_response": f"answer {i}"}} for i in range(n)]


def predict(question: str) -> str:
    return "answer " + question.split()[1].rstrip("?")


class Endpoint:
    """The judge endpoint, served by tests/evaluate/judge_server.py in a child process."""

    def __init__(self, delay_s: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "evaluate" / "judge_server.py"),
             "--port", "0", "--delay", str(delay_s)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        match = re.search(r"OpenAI base URL (\S+),", self.proc.stdout.readline())
        if match is None:
            self.close()
            raise SystemExit("the judge endpoint did not start")
        self.openai_base_url = match.group(1)

    def count(self) -> int:
        """Requests the endpoint has answered so far."""
        stats = httpx.get(self.openai_base_url.removesuffix("/v1") + "/stats").json()
        return int(stats["requests"])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def timed(fn: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    result = fn()
    return time.perf_counter() - began, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 rows instead of 1,000")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    n = 200 if args.quick else 1000
    env = base_environment()
    env["load_average_start"] = load_average()
    began = time.perf_counter()
    say(f"assay evaluate benchmark: {n} rows, {WORKERS} workers, judge endpoint delay "
        f"{JUDGE_DELAY_S * 1000:.0f} ms")
    for key in ("date", "python", "platform", "cpus", "assay_commit"):
        say(f"  {key}: {env[key]}")

    figures: dict[str, Any] = {}
    server = Endpoint(JUDGE_DELAY_S)
    with tempfile.TemporaryDirectory() as tmp:
        assay.configure(store=f"sqlite:///{tmp}/bench.db", experiment="bench")
        data = rows(n)

        def judge(cache: Any) -> Any:
            return make_judge("correct", "Does {{ outputs }} answer {{ inputs }}?",
                              model="openai:/bench-model", base_url=server.openai_base_url,
                              api_key="bench", cache=cache)

        # Warm up: imports, the store's schema, the HTTP client.
        assay.evaluate(rows(20), [exact_match(), judge(False)], max_workers=WORKERS)

        say("\n[1/3] judge-bound evaluation, cache off")
        before = server.count()
        wall, result = timed(lambda: assay.evaluate(data, [judge(False)],
                                                    max_workers=WORKERS))
        calls = server.count() - before
        ideal = n * JUDGE_DELAY_S / WORKERS
        figures["judge_wall_s"] = wall
        figures["judge_ideal_s"] = ideal
        figures["judge_ratio"] = wall / ideal
        say(f"  wall {wall:.2f} s, ideal {ideal:.2f} s, ratio {wall / ideal:.3f}; "
            f"{calls} model calls, errors {int(result.metrics['correct/error_count'])}")

        say("\n[2/3] the framework's own cost per row (instant scorer)")
        per_row: dict[str, list[float]] = {"outputs": [], "predict_fn": []}
        inputs_only = [{"inputs": r["inputs"], "expectations": r["expectations"]}
                       for r in data]
        for _ in range(3):
            w, _r = timed(lambda: assay.evaluate(data, [exact_match()], max_workers=WORKERS))
            per_row["outputs"].append(w / n * 1000)
            w, _r = timed(lambda: assay.evaluate(inputs_only, [exact_match()],
                                                 predict_fn=predict, max_workers=WORKERS))
            per_row["predict_fn"].append(w / n * 1000)
        for key, values in per_row.items():
            figures[f"per_row_ms_{key}"] = statistics.median(values)
            say(f"  rows with {key}: {statistics.median(values):.3f} ms per row "
                f"(median of {len(values)}: {', '.join(f'{v:.3f}' for v in values)})")

        say("\n[3/3] judge cache: first run, then three unchanged reruns")
        cached = judge(str(Path(tmp) / "judge-cache"))
        before = server.count()
        first_wall, first = timed(lambda: assay.evaluate(data, [cached], max_workers=WORKERS))
        first_calls = server.count() - before
        before = server.count()
        reruns = [timed(lambda: assay.evaluate(data, [cached], max_workers=WORKERS))
                  for _ in range(RERUNS)]
        rerun_calls = server.count() - before
        rerun_wall = statistics.median(w for w, _ in reruns)
        hits = [int(r.metrics["judge/cache_hits"]) for _, r in reruns]
        figures.update({"cache_first_s": first_wall, "cache_first_calls": first_calls,
                        "cache_rerun_s": rerun_wall,
                        "cache_rerun_walls_s": [w for w, _ in reruns],
                        "cache_rerun_calls": rerun_calls,
                        "cache_ratio": rerun_wall / first_wall})
        say(f"  first {first_wall:.2f} s ({first_calls} model calls, "
            f"{int(first.metrics['judge/cache_misses'])} misses); reruns "
            f"{', '.join(f'{w:.3f}' for w, _ in reruns)} s, median {rerun_wall:.3f} s "
            f"({rerun_calls} model calls in all, hits {hits})")
        assay.shutdown()
    server.close()

    env["load_average_end"] = load_average()
    say("\nsummary")
    print_summary([
        {"figure": "judge-bound wall / ideal", "value": f"{figures['judge_ratio']:.3f}",
         "target": "<= 1.2", "result": verdict(figures["judge_ratio"] <= 1.2)},
        {"figure": "own cost per row, outputs given",
         "value": f"{figures['per_row_ms_outputs']:.3f} ms", "target": "< 1 ms",
         "result": verdict(figures["per_row_ms_outputs"] < 1.0)},
        {"figure": "own cost per row, predict_fn",
         "value": f"{figures['per_row_ms_predict_fn']:.3f} ms", "target": "< 1 ms",
         "result": verdict(figures["per_row_ms_predict_fn"] < 1.0)},
        {"figure": "model calls on a cached rerun", "value": str(figures["cache_rerun_calls"]),
         "target": "0", "result": verdict(figures["cache_rerun_calls"] == 0)},
        {"figure": "cached rerun / first run", "value": f"{figures['cache_ratio']:.3f}",
         "target": "< 0.10", "result": verdict(figures["cache_ratio"] < 0.10)},
    ])
    print_run_footer(env, time.perf_counter() - began)
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "figures": figures},
                                              indent=2))


if __name__ == "__main__":
    main()
