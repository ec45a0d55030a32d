"""@assay.trace on the six function kinds, exceptions, and what is recorded."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import random
import traceback

import pytest

import assay

# -- inputs, outputs, metadata ---------------------------------------------------


def test_sync_function_records_bound_inputs_with_defaults_and_output(tracing, fetch):
    @assay.trace
    def add(a, b=2, *, scale=1):
        return (a + b) * scale

    assert add(1) == 3
    trace = fetch()
    (span,) = trace.spans
    assert span.name == "add"
    assert span.inputs == {"a": 1, "b": 2, "scale": 1}
    assert span.outputs == 3
    assert span.status == "OK"
    assert span.span_type == "UNKNOWN"
    assert trace.info.state == "OK"
    assert trace.info.name == "add"


def test_options_name_type_and_attributes(tracing, fetch):
    @assay.trace(name="retrieve-docs", span_type=assay.SpanType.RETRIEVER,
                 attributes={"k": 3, "index": "main", "cfg": {"a": [1, 2]}})
    def retrieve(query):
        return [query]

    retrieve("q")
    (span,) = fetch().spans
    assert span.name == "retrieve-docs"
    assert span.span_type == "RETRIEVER"
    assert span.attributes == {"k": 3, "index": "main", "cfg": {"a": [1, 2]}}


def test_custom_span_type_string_is_kept(tracing, fetch):
    @assay.trace(span_type="MY_KIND")
    def f():
        return None

    f()
    assert fetch().spans[0].span_type == "MY_KIND"


def test_wrapper_keeps_name_doc_wrapped_and_signature():
    def original(x: int, y: str = "a") -> str:
        """Docstring."""
        return y * x

    wrapped = assay.trace(original)
    assert wrapped.__name__ == "original"
    assert wrapped.__doc__ == "Docstring."
    assert wrapped.__wrapped__ is original
    assert inspect.signature(wrapped) == inspect.signature(original)


def test_kinds_are_preserved_for_introspection():
    @assay.trace
    async def coro():
        return 1

    @assay.trace
    def gen():
        yield 1

    @assay.trace
    async def agen():
        yield 1

    assert inspect.iscoroutinefunction(coro)
    assert inspect.isgeneratorfunction(gen)
    assert inspect.isasyncgenfunction(agen)


def test_return_value_is_the_same_object(tracing):
    payload = {"big": list(range(10))}

    @assay.trace
    def identity(x):
        return x

    assert identity(payload) is payload


def test_wrapping_a_third_party_callable(tracing, fetch):
    traced_dumps = assay.trace(json.dumps)
    assert traced_dumps({"a": 1}, sort_keys=True) == '{"a": 1}'
    (span,) = fetch().spans
    assert span.name == "dumps"
    assert span.inputs["obj"] == {"a": 1}
    assert span.inputs["sort_keys"] is True


def test_callable_object_is_traced(tracing, fetch):
    class Scorer:
        def __call__(self, text):
            return len(text)

    traced = assay.trace(Scorer(), name="scorer")
    assert traced("abcd") == 4
    (span,) = fetch().spans
    assert span.name == "scorer"
    assert span.inputs == {"text": "abcd"}
    assert span.outputs == 4


def test_wrong_arguments_raise_the_functions_own_type_error(tracing, fetch):
    @assay.trace
    def f(a):
        return a

    with pytest.raises(TypeError) as excinfo:
        f(1, 2, 3)
    assert "positional argument" in str(excinfo.value)
    (span,) = fetch().spans
    assert span.status == "ERROR"
    assert span.inputs == {"args": [1, 2, 3], "kwargs": {}}


def test_varargs_and_kwargs_are_bound(tracing, fetch):
    @assay.trace
    def f(a, *rest, flag=False, **extra):
        return a

    f(1, 2, 3, flag=True, colour="red")
    (span,) = fetch().spans
    assert span.inputs == {"a": 1, "rest": [2, 3], "flag": True, "extra": {"colour": "red"}}


# -- methods --------------------------------------------------------------------------


class Bot:
    greeting = "hi"

    @assay.trace
    def reply(self, name):
        return f"{self.greeting} {name}"

    @assay.trace
    @classmethod
    def build(cls, n):
        return [cls.greeting] * n

    @classmethod
    @assay.trace
    def build_inner(cls, n):
        return n

    @assay.trace
    @staticmethod
    def helper(x):
        return x * 2

    @staticmethod
    @assay.trace
    def helper_inner(x):
        return x * 3


def test_methods_drop_self_and_cls(tracing, fetch):
    bot = Bot()
    assert bot.reply("ana") == "hi ana"
    assert fetch().spans[0].inputs == {"name": "ana"}
    assert Bot.build(2) == ["hi", "hi"]
    assert fetch().spans[0].inputs == {"n": 2}
    assert Bot.build_inner(5) == 5
    assert fetch().spans[0].inputs == {"n": 5}
    assert bot.build(1) == ["hi"]


def test_staticmethods_both_orders(tracing, fetch):
    assert Bot.helper(2) == 4
    assert fetch().spans[0].inputs == {"x": 2}
    assert Bot().helper_inner(2) == 6
    span = fetch().spans[0]
    assert span.inputs == {"x": 2}
    assert span.outputs == 6


# -- nesting across sync and async ---------------------------------------------------------


def test_nesting_across_sync_and_async(tracing, fetch):
    @assay.trace
    def leaf(x):
        return x

    @assay.trace
    async def middle(x):
        await asyncio.sleep(0)
        return leaf(x) + 1

    @assay.trace
    async def top():
        return await asyncio.gather(middle(1), middle(2))

    assert asyncio.run(top()) == [2, 3]
    trace = fetch()
    by_name: dict[str, list] = {}
    for span in trace.spans:
        by_name.setdefault(span.name, []).append(span)
    (root,) = by_name["top"]
    assert root.parent_id is None
    assert {m.parent_id for m in by_name["middle"]} == {root.span_id}
    middle_ids = {m.span_id for m in by_name["middle"]}
    assert {leaf_span.parent_id for leaf_span in by_name["leaf"]} == middle_ids
    assert len({s.trace_id for s in trace.spans}) == 1


def test_coroutine_span_covers_the_whole_await(tracing, fetch):
    @assay.trace
    async def slow():
        await asyncio.sleep(0.05)
        return "done"

    assert asyncio.run(slow()) == "done"
    (span,) = fetch().spans
    assert span.duration_ms >= 45
    assert span.outputs == "done"


# -- generators ------------------------------------------------------------------------


def test_generator_span_spans_iteration_and_children_nest(tracing, fetch):
    @assay.trace
    def step(i):
        return i * 10

    @assay.trace
    def produce(n):
        for i in range(n):
            yield step(i)

    assert list(produce(3)) == [0, 10, 20]
    trace = fetch()
    (gen_span,) = trace.search_spans(name="produce")
    steps = trace.search_spans(name="step")
    assert len(steps) == 3
    assert all(s.parent_id == gen_span.span_id for s in steps)
    assert gen_span.outputs == [0, 10, 20]
    assert gen_span.inputs == {"n": 3}
    assert all(gen_span.start_time_ns <= s.start_time_ns <= s.end_time_ns <= gen_span.end_time_ns
               for s in steps)
    (event,) = [e for e in gen_span.events if e.name == "first_item"]
    assert gen_span.start_time_ns <= event.timestamp_ns <= gen_span.end_time_ns


def test_generator_consumer_code_is_not_inside_the_span(tracing, fetch):
    @assay.trace
    def produce():
        yield 1
        yield 2

    @assay.trace
    def consumer_work(x):
        return x

    @assay.trace
    def outer():
        return [consumer_work(x) for x in produce()]

    outer()
    trace = fetch()
    (outer_span,) = trace.search_spans(name="outer")
    assert all(s.parent_id == outer_span.span_id
               for s in trace.search_spans(name="consumer_work"))


def test_generator_output_reducer(tracing, fetch):
    @assay.trace(output_reducer="".join)
    def stream():
        yield "Hel"
        yield "lo"

    assert "".join(stream()) == "Hello"
    assert fetch().spans[0].outputs == "Hello"


def test_generator_return_value_and_send_pass_through(tracing, fetch):
    @assay.trace
    def echo():
        received = []
        while True:
            value = yield len(received)
            if value is None:
                return received
            received.append(value)

    gen = echo()
    assert next(gen) == 0
    assert gen.send("a") == 1
    assert gen.send("b") == 2
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value == ["a", "b"]
    assert fetch().spans[0].status == "OK"


def test_generator_throw_reaches_the_body(tracing, fetch):
    @assay.trace
    def guarded():
        try:
            yield 1
        except ValueError:
            yield "recovered"

    gen = guarded()
    next(gen)
    assert gen.throw(ValueError("x")) == "recovered"
    gen.close()
    span = fetch().spans[0]
    assert span.outputs == [1, "recovered"]


@pytest.mark.parametrize("how", ["break", "close", "gc"])
def test_generator_stopped_early_still_ends_its_span(tracing, fetch, how):
    finalised = []

    @assay.trace
    def numbers():
        try:
            yield from range(100)
        finally:
            finalised.append(True)

    if how == "break":
        for i in numbers():
            if i == 2:
                break
    elif how == "close":
        gen = numbers()
        next(gen)
        gen.close()
    else:
        gen = numbers()
        next(gen)
        del gen
        gc.collect()
    assert finalised == [True]
    span = fetch().spans[0]
    assert span.end_time_ns is not None
    assert span.attributes.get("assay.span.stopped_early") is True
    assert span.status == "OK"


def test_generator_exception_marks_error_and_propagates(tracing, fetch):
    @assay.trace
    def broken():
        yield 1
        raise RuntimeError("stream broke")

    gen = broken()
    assert next(gen) == 1
    with pytest.raises(RuntimeError, match="stream broke"):
        next(gen)
    span = fetch().spans[0]
    assert span.status == "ERROR"
    assert span.outputs is None or span.outputs == [1]
    assert any(e.name == "exception" for e in span.events)


def test_async_generator_spans_iteration_and_nests(tracing, fetch):
    @assay.trace
    async def step(i):
        return i + 1

    @assay.trace(span_type="CHAT_MODEL")
    async def stream(n):
        for i in range(n):
            yield await step(i)

    async def main():
        return [x async for x in stream(3)]

    assert asyncio.run(main()) == [1, 2, 3]
    trace = fetch()
    (gen_span,) = trace.search_spans(name="stream")
    assert gen_span.outputs == [1, 2, 3]
    assert gen_span.span_type == "CHAT_MODEL"
    assert all(s.parent_id == gen_span.span_id for s in trace.search_spans(name="step"))
    assert any(e.name == "first_item" for e in gen_span.events)


def test_async_generator_stopped_early(tracing, fetch):
    closed = []

    @assay.trace
    async def ticks():
        try:
            for i in range(100):
                yield i
        finally:
            closed.append(True)

    async def main():
        agen = ticks()
        async for i in agen:
            if i == 1:
                break
        await agen.aclose()

    asyncio.run(main())
    assert closed == [True]
    span = fetch().spans[0]
    assert span.attributes.get("assay.span.stopped_early") is True
    assert span.outputs == [0, 1]


def test_async_generator_asend_and_athrow(tracing, fetch):
    @assay.trace
    async def acc():
        total = 0
        while True:
            try:
                value = yield total
            except KeyError:
                value = 100
            total += value or 0

    async def main():
        agen = acc()
        assert await agen.__anext__() == 0
        assert await agen.asend(5) == 5
        assert await agen.athrow(KeyError()) == 105
        await agen.aclose()

    asyncio.run(main())
    assert fetch().spans[0].outputs == [0, 5, 105]


# -- exceptions --------------------------------------------------------------------------


class AppError(Exception):
    pass


def test_exception_propagates_as_the_same_object_with_its_traceback(tracing, fetch):
    raised = AppError("boom")

    @assay.trace
    def fail():
        raise raised

    with pytest.raises(AppError) as excinfo:
        fail()
    assert excinfo.value is raised
    frames = [f.name for f in traceback.extract_tb(excinfo.value.__traceback__)]
    assert frames[-1] == "fail"
    assert excinfo.value.__cause__ is None and excinfo.value.__context__ is None
    (span,) = fetch().spans
    assert span.status == "ERROR"
    assert span.status_message == "AppError: boom"
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"].endswith("AppError")
    assert event.attributes["exception.message"] == "boom"
    assert "raise raised" in event.attributes["exception.stacktrace"]


def test_async_exception_propagates(tracing, fetch):
    @assay.trace
    async def fail():
        raise AppError("async boom")

    with pytest.raises(AppError, match="async boom"):
        asyncio.run(fail())
    assert fetch().info.state == "ERROR"


def test_keyboard_interrupt_is_not_reported_as_an_error(tracing, fetch):
    @assay.trace
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    (span,) = fetch().spans
    assert span.status == "OK"
    assert span.attributes["assay.span.interrupted"] == "KeyboardInterrupt"
    assert not any(e.name == "exception" for e in span.events)


def test_cancelled_task_ends_its_span_without_error(tracing, fetch):
    @assay.trace
    async def wait_forever():
        await asyncio.sleep(3600)

    async def main():
        task = asyncio.create_task(wait_forever())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert assay.flush()
    trace = assay.search_traces(return_type="list")[0]
    (span,) = trace.spans
    assert span.status == "OK"
    assert span.attributes["assay.span.interrupted"] == "CancelledError"


def test_exception_with_broken_str_is_still_recorded(tracing, fetch):
    class Nasty(Exception):
        def __str__(self):
            raise RuntimeError("no str for you")

    @assay.trace
    def fail():
        raise Nasty()

    with pytest.raises(Nasty):
        fail()
    assert fetch().spans[0].status == "ERROR"


# -- ids -----------------------------------------------------------------------------


def test_ids_are_lowercase_hex_and_unaffected_by_random_seed(tracing):
    @assay.trace
    def f():
        span = assay.get_current_span()
        return span.trace_id, span.span_id

    random.seed(1234)
    first = f()
    random.seed(1234)
    second = f()
    assert first != second
    trace_id, span_id = first
    assert len(trace_id) == 32 and len(span_id) == 16
    assert trace_id == trace_id.lower()
    int(trace_id, 16), int(span_id, 16)


def test_works_before_configure_is_called(db_uri, monkeypatch, fetch):
    monkeypatch.setenv("ASSAY_STORE", db_uri)
    monkeypatch.setenv("ASSAY_EXPERIMENT", "from-env")

    @assay.trace
    def f(x):
        return x

    f(1)
    trace = fetch()
    assert trace.info.experiment == "from-env"
    assert trace.spans[0].inputs == {"x": 1}


def test_decorating_a_non_callable_is_a_type_error():
    with pytest.raises(TypeError):
        assay.trace(42)
    with pytest.raises(TypeError):
        assay.trace(output_reducer=3)
