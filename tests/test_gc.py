"""The collector paused while a page of traces is built (assay._gc)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from assay import _gc


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_paused_then_as_it_was() -> None:
    gc.enable()
    with _gc.paused():
        assert not gc.isenabled()
        with _gc.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_off_stays_off() -> None:
    gc.disable()
    with _gc.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_resumed_after_an_error() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), _gc.paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_threads_share_one_pause() -> None:
    """The pause ends with the last thread in it, not the first out."""
    gc.enable()
    inside = threading.Event()
    leave = threading.Event()
    seen: list[bool] = []

    def other() -> None:
        with _gc.paused():
            inside.set()
            leave.wait(10)
            seen.append(gc.isenabled())

    thread = threading.Thread(target=other)
    with _gc.paused():
        thread.start()
        assert inside.wait(10)
    # This thread is out; the other is still building.
    assert not gc.isenabled()
    leave.set()
    thread.join(10)
    assert seen == [False]
    assert gc.isenabled()


def test_cycles_made_while_paused_are_collected_later() -> None:
    gc.enable()

    class Node:
        pass

    with _gc.paused():
        node = Node()
        node.self = node  # type: ignore[attr-defined]
        ref = [node]
        del node
    alive = ref.pop()
    import weakref
    gone = weakref.ref(alive)
    del alive
    gc.collect()
    assert gone() is None
