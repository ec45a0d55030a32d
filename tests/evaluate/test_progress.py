"""The progress bar: drawn on a terminal, silent elsewhere, safe from many threads."""

from __future__ import annotations

import io
import threading

from assay.evaluate.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_redrawn_in_place_and_a_final_line():
    stream = _Terminal()
    with Progress("score", 4, stream=stream) as bar:
        for _ in range(4):
            bar.advance(failed=0)
        bar.advance(0, failed=1)
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert "score [" in last and "4/4" in last and "1 failed" in last
    assert "#" * 28 in last


def test_a_stream_that_is_not_a_terminal_gets_nothing():
    stream = io.StringIO()
    with Progress("predict", 3, stream=stream) as bar:
        bar.advance(3)
    assert stream.getvalue() == ""
    assert bar.done == 3


def test_counts_from_many_threads_add_up():
    bar = Progress("score", 8000, enabled=False)

    def work() -> None:
        for _ in range(1000):
            bar.advance()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bar.done == 8000


def test_a_closed_stream_stops_the_drawing_instead_of_failing():
    stream = _Terminal()
    bar = Progress("score", 2, stream=stream)
    stream.close()
    bar.advance(2)
    bar.close()
    assert bar.enabled is False


def test_a_stream_closed_before_the_end_does_not_fail_the_close():
    stream = _Terminal()
    bar = Progress("score", 2, stream=stream)
    bar.advance(1)
    stream.close()
    bar.close()
    assert bar.enabled is False
