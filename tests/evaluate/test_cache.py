"""The judge cache: keys by content, hits on rerun, off, and failures that fall back."""

from __future__ import annotations

import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from assay.evaluate.cache import CACHE_FILENAME, JudgeCache, default_cache_dir, shared_cache
from assay.judges import make_judge
from tests.conftest import ROOT
from tests.evaluate.judge_server import JudgeServer, Reply, verdict

ROWS = [{"inputs": {"question": f"q{i}"}, "outputs": f"answer {i}"} for i in range(5)]
MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


@pytest.fixture
def server(monkeypatch):
    with JudgeServer() as s:
        monkeypatch.setenv("OPENAI_BASE_URL", s.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        yield s


def judge(cache, instructions="Is {{ outputs }} right for {{ inputs }}?", **options):
    return make_judge("quality", instructions, model="openai:/gpt-4o-mini", cache=cache,
                      **options)


def key(**changes):
    args = {"model": "openai:/gpt-4o-mini", "base_url": "http://h/v1", "messages": MESSAGES,
            "temperature": 0.0, "feedback_type": {"type": "boolean"}}
    args.update(changes)
    return JudgeCache.key(**args)


# -- keys and storage ------------------------------------------------------------------


def test_key_is_content():
    assert key() == key() and len(key()) == 64
    assert key(messages=[dict(m) for m in MESSAGES]) == key()
    changed = [key(model="openai:/gpt-4o"), key(base_url="http://other/v1"),
               key(messages=[*MESSAGES[:1], {"role": "user", "content": "u2"}]),
               key(temperature=0.5), key(temperature=None),
               key(feedback_type={"type": "integer"})]
    assert len({key(), *changed}) == len(changed) + 1


def test_put_get_stats(tmp_path):
    cache = JudgeCache(tmp_path / "c")
    assert cache.get("k") is None
    assert cache.put("k", {"result": True, "rationale": "é", "input_tokens": 3})
    assert cache.get("k") == {"result": True, "rationale": "é", "input_tokens": 3}
    assert cache.stats() == {"hits": 1, "misses": 1, "errors": 0, "writes": 1}
    assert len(cache) == 1 and (tmp_path / "c" / CACHE_FILENAME).is_file()
    cache.close()
    reopened = JudgeCache(tmp_path / "c")
    assert reopened.get("k")["rationale"] == "é"
    reopened.clear()
    assert reopened.get("k") is None and len(reopened) == 0
    reopened.close()


def test_default_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("ASSAY_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "assay"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "assay"
    monkeypatch.setenv("ASSAY_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    assert shared_cache().directory == tmp_path / "explicit"
    assert shared_cache() is shared_cache(tmp_path / "explicit")


def test_many_threads_share_one_cache(tmp_path):
    cache = JudgeCache(tmp_path)

    def work(i):
        cache.put(f"k{i}", {"result": i})
        return cache.get(f"k{i}")

    with ThreadPoolExecutor(16) as pool:
        assert [v["result"] for v in pool.map(work, range(200))] == list(range(200))
    assert cache.stats()["hits"] == 200 and cache.stats()["errors"] == 0
    assert len(cache) == 200
    cache.close()


def test_many_processes_share_one_file(tmp_path):
    code = (
        "import sys\n"
        "from assay.evaluate.cache import JudgeCache\n"
        "c = JudgeCache(sys.argv[1])\n"
        "for i in range(100):\n"
        "    assert c.put(f'{sys.argv[2]}-{i}', {'result': i})\n"
        "    assert c.get(f'{sys.argv[2]}-{i}') == {'result': i}\n"
        "assert c.stats()['errors'] == 0\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(n)], cwd=ROOT)
             for n in range(3)]
    assert [p.wait(timeout=30) for p in procs] == [0, 0, 0]
    cache = JudgeCache(tmp_path)
    assert len(cache) == 300
    cache.close()


# -- judges with a cache ---------------------------------------------------------------


def test_unchanged_rerun_makes_no_model_calls(server, tmp_path):
    first = judge(tmp_path)
    before = [first(**row) for row in ROWS]
    assert server.count() == 5
    assert {fb.metadata["cache"] for fb in before} == {"miss"}
    assert before[0].metadata["input_tokens"] == "10"
    assert first.cache_stats() == {"hits": 0, "misses": 5}

    again = judge(tmp_path)  # a new judge object, as in a new run
    after = [again(**row) for row in ROWS]
    assert server.count() == 5  # zero new requests
    assert [(fb.value, fb.rationale) for fb in after] == [
        (fb.value, fb.rationale) for fb in before]
    assert all(fb.metadata == {"model": "openai:/gpt-4o-mini", "input_tokens": "0",
                               "output_tokens": "0", "cost_usd": "0.00000000",
                               "cache": "hit", "reasked": "false"} for fb in after)
    assert again.cache_stats() == {"hits": 5, "misses": 0}
    assert again.usage()["model_calls"] == 0
    assert again.cache is not None and again.cache.stats()["hits"] == 5


def test_a_change_misses(server, tmp_path):
    judge(tmp_path)(**ROWS[0])
    judge(tmp_path, "Is {{ outputs }} correct for {{ inputs }}?")(**ROWS[0])
    judge(tmp_path, temperature=0.7)(**ROWS[0])
    judge(tmp_path, feedback_type=int)(**ROWS[0])
    judge(tmp_path)(inputs=ROWS[0]["inputs"], outputs="another answer")
    assert server.count() == 5
    judge(tmp_path)(**ROWS[0])
    assert server.count() == 5


def test_default_cache_directory_from_env(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_CACHE_DIR", str(tmp_path / "env-cache"))
    j = judge(True)
    assert j(**ROWS[0]).metadata["cache"] == "miss"
    assert judge(True)(**ROWS[0]).metadata["cache"] == "hit"
    assert (tmp_path / "env-cache" / CACHE_FILENAME).is_file()
    assert server.count() == 1


def test_cache_off(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_CACHE_DIR", str(tmp_path))
    for _ in range(2):
        fb = judge(False)(**ROWS[0])
        assert fb.metadata["cache"] == "off"
    assert server.count() == 2
    assert judge(False).cache is None and judge(False).cache_stats() == {"hits": 0, "misses": 0}
    assert not (tmp_path / CACHE_FILENAME).exists()


def test_errors_are_not_cached(server, tmp_path):
    server.replies.extend(["garbage", "garbage", "not json either"])
    fb = judge(tmp_path)(**ROWS[0])
    assert fb.error is not None and fb.metadata["cache"] == "miss"
    fb = judge(tmp_path)(**ROWS[0])  # garbage, then the auto verdict after re-asking
    assert fb.value is True and fb.metadata["reasked"] == "true"
    assert fb.metadata["input_tokens"] == "20"
    fb = judge(tmp_path)(**ROWS[0])
    assert fb.metadata["cache"] == "hit" and fb.metadata["input_tokens"] == "0"
    assert server.count() == 4


def test_corrupt_cache_file_falls_back(server, tmp_path, caplog):
    (tmp_path / CACHE_FILENAME).write_bytes(b"this is not an SQLite database" * 100)
    with caplog.at_level(logging.WARNING, logger="assay"):
        results = [judge(JudgeCache(tmp_path))(**ROWS[0]) for _ in range(2)]
    assert [fb.value for fb in results] == [True, True]
    assert {fb.metadata["cache"] for fb in results} == {"miss"}
    assert server.count() == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "cannot be used" in warnings[0].getMessage()
    assert CACHE_FILENAME in warnings[0].getMessage()


def test_unusable_cache_directory_falls_back(server, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cache = JudgeCache(blocker / "cache")
    with caplog.at_level(logging.WARNING, logger="assay"):
        fb = judge(cache)(**ROWS[0])
        assert judge(cache)(**ROWS[0]).value is True
    assert fb.value is True and server.count() == 2
    assert cache.stats()["errors"] == 1  # warned once, then skipped
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_unreadable_entry_is_a_miss(server, tmp_path, caplog):
    cache = JudgeCache(tmp_path)
    j = judge(cache)
    j(**ROWS[0])
    conn = cache._connect()
    assert conn is not None
    conn.execute("UPDATE judge_verdicts SET value = 'not json'")
    with caplog.at_level(logging.WARNING, logger="assay"):
        fb = j(**ROWS[0])
    assert fb.metadata["cache"] == "miss" and server.count() == 2
    assert judge(cache)(**ROWS[0]).metadata["cache"] == "hit"  # rewritten
    cache.close()


def test_cached_judge_from_many_threads(server, tmp_path):
    server.replies.extend(Reply(text=verdict(True)) for _ in range(20))
    rows = [{"inputs": {"n": i % 10}, "outputs": "x"} for i in range(40)]
    j = judge(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda row: j.run(**row)[0], rows))
    assert all(fb.value is True for fb in results)
    stats = j.cache_stats()
    assert stats["hits"] + stats["misses"] == 40
    assert server.count() == stats["misses"] >= 10
    rerun = [judge(tmp_path)(**row) for row in rows]
    assert {fb.metadata["cache"] for fb in rerun} == {"hit"}


def test_cache_path_argument_is_a_directory(server, tmp_path):
    target = tmp_path / "deep" / "dir"
    judge(str(target))(**ROWS[0])
    assert (target / CACHE_FILENAME).is_file()
    assert isinstance(judge(Path(target)).cache, JudgeCache)
