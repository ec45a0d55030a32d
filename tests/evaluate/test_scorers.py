"""@assay.scorer: parameter binding, return normalisation, run(), spec() and helpers."""

from __future__ import annotations

import json

import pytest

import assay
from assay.evaluate.scorers import Feedback, Scorer, aggregate, check_unique_names, scorer

ROW = {"inputs": {"q": "hi"}, "outputs": "hello", "expectations": {"x": 1}, "trace": "T"}


# -- decorator forms and binding -------------------------------------------------------


def test_bare_decorator_names_the_scorer_after_the_function():
    @assay.scorer
    def polite(outputs):
        """Says please."""
        return "please" in outputs

    assert isinstance(polite, Scorer)
    assert polite.name == "polite"
    assert polite.__doc__ == "Says please."
    assert polite.aggregations == ["mean"]
    assert polite.timeout is None
    assert polite(**ROW) == Feedback(False, name="polite")


def test_decorator_with_options():
    @assay.scorer(name="len", aggregations=["mean", "p90", "std"], pass_if="< 10", timeout=2)
    def length(outputs):
        return len(outputs)

    assert (length.name, length.aggregations, length.timeout) == ("len", ["mean", "p90", "std"],
                                                                   2.0)
    assert length(outputs="abc") == Feedback(3, name="len")
    assert (length.passed(3), length.passed(10), length.passed(None)) == (True, False, None)


@pytest.mark.parametrize("field", ["inputs", "outputs", "expectations", "trace"])
def test_each_field_is_passed_by_name_and_only_it(field):
    seen: dict = {}
    ns: dict = {}
    exec(f"def one({field}):\n    seen['{field}'] = {field}\n    return 1.0", {"seen": seen},
         ns)
    s = scorer(ns["one"])
    assert s.parameters == (field,)
    assert s(**ROW) == Feedback(1.0, name="one")
    assert seen == {field: ROW[field]}


def test_several_fields_and_defaults():
    @scorer
    def both(outputs, expectations, threshold=0.5):
        return f"{outputs}:{expectations['x']}:{threshold}"

    assert both.parameters == ("outputs", "expectations")
    assert both(**ROW).value == "hello:1:0.5"


def test_kwargs_receives_all_four():
    @scorer
    def everything(outputs, **kwargs):
        return json.dumps({"outputs": outputs, **{k: kwargs[k] for k in sorted(kwargs)}})

    assert everything.parameters == ("inputs", "outputs", "expectations", "trace")
    assert json.loads(everything(**ROW).value) == ROW
    assert everything(outputs="o").value == json.dumps(
        {"outputs": "o", "expectations": None, "inputs": None, "trace": None})


def test_keyword_only_parameters_bind():
    @scorer
    def kw(*, inputs, trace):
        return f"{inputs['q']}{trace}"

    assert kw(**ROW).value == "hiT"


def test_unknown_required_parameter_is_an_error_naming_function_and_parameter():
    def needs_context(outputs, context):
        return True

    with pytest.raises(assay.ScorerError) as info:
        scorer(needs_context)
    assert "needs_context" in str(info.value)
    assert "'context'" in str(info.value)


def test_positional_only_field_is_an_error():
    def positional(outputs, /):
        return True

    with pytest.raises(assay.ScorerError, match="'outputs'"):
        scorer(positional)


def test_bad_options_are_errors():
    def f(outputs):
        return 1

    with pytest.raises(assay.ScorerError, match="unknown aggregation 'avg'"):
        scorer(aggregations=["avg"])(f)
    with pytest.raises(assay.ScorerError, match="pass_if"):
        scorer(pass_if=">> 1")(f)
    with pytest.raises(assay.ScorerError, match="timeout"):
        scorer(timeout=0)(f)
    with pytest.raises(assay.ScorerError, match="needs a name"):
        scorer(lambda outputs: 1)


def test_pass_if_callable_and_bool_default():
    s = scorer(pass_if=lambda v: v in ("yes", "maybe"))(_answer_yes)
    assert (s.passed("yes"), s.passed("no")) == (True, False)
    plain = scorer(_answer_yes)
    assert (plain.passed(True), plain.passed(False), plain.passed(0.3)) == (True, False, None)
    assert scorer(pass_if=">= 1")(_answer_yes).passed("text") is None


def _answer_yes(outputs):
    return "yes"


# -- normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), (3, 3), (2.5, 2.5), ("good", "good")])
def test_primitive_returns_become_one_named_feedback(value, expected):
    s = Scorer(lambda: value, name="s")
    result = s()
    assert result == Feedback(expected, name="s")
    assert type(result.value) is type(expected)


def test_feedback_return_gets_the_scorer_name_unless_named():
    unnamed = Scorer(lambda: Feedback(0.5, "half", metadata={"n": 2}), name="s")()
    assert unnamed == Feedback(0.5, "half", name="s", metadata={"n": "2"})
    named = Scorer(lambda: Feedback(1, name="other"), name="s")()
    assert named.name == "other"


def test_list_of_feedback_is_named_and_kept_in_order():
    s = Scorer(lambda: [Feedback(1, name="a"), Feedback(2)], name="s")
    assert s() == [Feedback(1, name="a"), Feedback(2, name="s")]


def test_list_with_duplicate_names_is_an_error_value():
    s = Scorer(lambda: [Feedback(1), Feedback(2)], name="s")
    result = s()
    assert isinstance(result, Feedback)
    assert result.value is None and result.name == "s"
    assert "several Feedback named 's'" in (result.error or "")


@pytest.mark.parametrize(("value", "shown"), [
    (None, "NoneType"), ({"a": 1}, "dict"), ([1, 2], "list"), ([], "an empty list"),
    (object(), "object")])
def test_other_returns_become_error_feedback(value, shown):
    result = Scorer(lambda: value, name="s")()
    assert isinstance(result, Feedback)
    assert result.value is None
    assert result.error is not None
    assert result.error.startswith(f"returned {shown}, expected bool, int, float, str")


def test_call_propagates_and_run_catches():
    @scorer
    def broken(outputs):
        raise KeyError("missing")

    with pytest.raises(KeyError):
        broken(outputs="x")
    assert broken.run(outputs="x") == [Feedback(None, name="broken",
                                                error="KeyError: 'missing'")]


def test_run_always_returns_a_list():
    single = Scorer(lambda outputs: outputs == "hello", name="eq")
    assert single.run(**ROW) == [Feedback(True, name="eq")]
    several = Scorer(lambda: [Feedback(1, name="a"), Feedback(2, name="b")], name="s")
    assert [f.name for f in several.run()] == ["a", "b"]


# -- Feedback ---------------------------------------------------------------------------


def test_feedback_positional_fields_and_dict():
    fb = Feedback(0.75, "mostly", "score", {"k": "v"}, None)
    assert fb.to_dict() == {"value": 0.75, "rationale": "mostly", "name": "score",
                            "metadata": {"k": "v"}, "error": None}
    with pytest.raises(AttributeError):
        fb.value = 1  # type: ignore[misc]


def test_feedback_rejects_bad_values():
    with pytest.raises(TypeError, match="list"):
        Feedback([1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        Feedback(1, metadata=["a"])  # type: ignore[arg-type]
    assert Feedback.from_error(ValueError("bad"), name="n").error == "ValueError: bad"


# -- spec and helpers ------------------------------------------------------------------


def test_spec_is_json_safe_and_complete():
    @scorer(name="rel", aggregations=["mean", "p90"], pass_if=">= 0.8", timeout=5)
    def relevance(inputs, outputs):
        return 1.0

    spec = relevance.spec()
    assert spec == {
        "name": "rel", "kind": "code",
        "function": "tests.evaluate.test_scorers.test_spec_is_json_safe_and_complete."
                    "<locals>.relevance",
        "aggregations": ["mean", "p90"], "pass_if": ">= 0.8", "timeout": 5.0, "arguments": {}}
    assert json.loads(json.dumps(spec)) == spec


def test_spec_records_a_callable_pass_if_by_name():
    s = scorer(pass_if=_is_yes)(_answer_yes)
    assert s.spec()["pass_if"] == "tests.evaluate.test_scorers._is_yes"
    assert s.spec()["function"] == "tests.evaluate.test_scorers._answer_yes"


def _is_yes(value):
    return value == "yes"


def test_check_unique_names():
    a, b = Scorer(lambda: 1, name="a"), Scorer(lambda: 1, name="b")
    check_unique_names([a, b])
    with pytest.raises(ValueError, match="several scorers are named 'a'"):
        check_unique_names([a, b, Scorer(lambda: 2, name="a")])


def test_aggregate():
    values = [1, 2, 3, 4, True]
    out = aggregate(values, ["mean", "min", "max", "median", "std", "sum", "count", "p90",
                             "p0", "p100"])
    assert out == {"mean": 2.2, "min": 1.0, "max": 4.0, "median": 2.0,
                   "std": pytest.approx(1.1661903789690602), "sum": 11.0, "count": 5.0,
                   "p90": pytest.approx(3.6), "p0": 1.0, "p100": 4.0}
    assert aggregate([], ["mean", "count"]) == {"count": 0.0}
    with pytest.raises(assay.ScorerError):
        aggregate([1], ["p101"])
