"""Scorers: functions that judge one row (inputs, outputs, expectations, trace).

A scorer is a plain function decorated with :func:`scorer`. It asks for any of
``inputs``, ``outputs``, ``expectations`` and ``trace`` by parameter name (or
takes ``**kwargs`` to receive all four) and returns a bool, int, float or str,
a :class:`Feedback`, or a list of :class:`Feedback`::

    import assay

    @assay.scorer
    def is_polite(outputs) -> bool:
        return "please" in outputs.lower()

    is_polite(outputs="Please wait.")
    # Feedback(value=True, rationale=None, name='is_polite', metadata={}, error=None)

Calling a :class:`Scorer` normalises what the function returned and lets its
exceptions propagate; :meth:`Scorer.run` never raises and turns an exception
into a :class:`Feedback` carrying ``error``. ``evaluate()`` uses ``run``.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import operator
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Union, overload

from assay.errors import ScorerError

__all__ = [
    "AGGREGATIONS",
    "Feedback",
    "FeedbackValue",
    "PassIf",
    "Scorer",
    "aggregate",
    "check_unique_names",
    "scorer",
]

#: Which repeat of a row ``evaluate(repeats=N)`` is scoring (0 without repeats);
#: judges key their cache by it, so that each repeat is a fresh sample.
CURRENT_REPEAT: ContextVar[int] = ContextVar("assay_current_repeat", default=0)
#: ``False`` while ``evaluate(cache=False)`` runs: judges neither read nor write
#: their cache. ``None`` leaves each judge's own setting.
JUDGE_CACHE: ContextVar[bool | None] = ContextVar("assay_judge_cache", default=None)

#: The types a feedback value may have.
FeedbackValue = Union[bool, int, float, str, None]  # noqa: UP007 - a runtime alias

#: A pass/fail rule: a callable ``value -> bool`` or a comparison such as ``">= 0.8"``.
PassIf = Union[Callable[[Any], bool], str]  # noqa: UP007 - a runtime alias

#: The parameter names a scorer function may ask for.
ROW_FIELDS = ("inputs", "outputs", "expectations", "trace")

#: Aggregation names understood by :func:`aggregate`, besides ``p<N>`` (a percentile).
AGGREGATIONS = frozenset({"mean", "min", "max", "median", "std", "sum", "count"})

_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?|100)$")
_COMPARISON = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq,
    "!=": operator.ne, ">": operator.gt, "<": operator.lt,
}


@dataclass(frozen=True)
class Feedback:
    """What a scorer says about one row.

    Attributes:
        value: the score: a bool, int, float or str, or ``None`` when there is none.
        rationale: why, in words.
        name: the feedback's name; defaults to the scorer's name.
        metadata: string key/value pairs (non-string values are converted with ``str``).
        error: set when the scorer failed on this row; ``value`` is then ``None``.

    Example:
        >>> Feedback(0.5, "half the facts", name="recall").to_dict()["value"]
        0.5
    """

    value: FeedbackValue = None
    rationale: str | None = None
    name: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self) -> None:
        if self.value is not None and not isinstance(self.value, (bool, int, float, str)):
            raise TypeError(f"Feedback value must be bool, int, float, str or None, "
                            f"not {type(self.value).__name__}")
        if not isinstance(self.metadata, Mapping):
            raise TypeError(f"Feedback metadata must be a mapping, "
                            f"not {type(self.metadata).__name__}")
        object.__setattr__(self, "metadata",
                           {str(k): str(v) for k, v in self.metadata.items()})

    @classmethod
    def from_error(cls, error: str | BaseException, *, name: str | None = None) -> Feedback:
        """A feedback recording a failure (``"ExcType: message"`` for an exception).

        Example:
            >>> Feedback.from_error(KeyError("x"), name="f").error
            "KeyError: 'x'"
        """
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        return cls(None, name=name, error=error)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-safe dict of this feedback.

        Example:
            >>> Feedback(True, name="ok").to_dict()
            {'value': True, 'rationale': None, 'name': 'ok', 'metadata': {}, 'error': None}
        """
        return {"value": self.value, "rationale": self.rationale, "name": self.name,
                "metadata": dict(self.metadata), "error": self.error}


def _pass_rule(pass_if: PassIf | None) -> Callable[[Any], bool] | None:
    """Compile ``pass_if`` to a predicate, or raise :class:`ScorerError`."""
    if pass_if is None:
        return None
    if callable(pass_if):
        return pass_if
    if isinstance(pass_if, str):
        match = _COMPARISON.match(pass_if)
        if match:
            try:
                threshold = float(match.group(2))
            except ValueError:
                threshold = math.nan
            if not math.isnan(threshold):
                compare = _OPERATORS[match.group(1)]
                return lambda value: compare(value, threshold)
    raise ScorerError(f"pass_if must be a callable or a comparison such as '>= 0.8', "
                      f"got {pass_if!r}")


def _check_aggregations(aggregations: Iterable[str]) -> list[str]:
    names = list(aggregations)
    for name in names:
        if name not in AGGREGATIONS and not _PERCENTILE.match(name):
            known = ", ".join(sorted(AGGREGATIONS))
            raise ScorerError(f"unknown aggregation {name!r}; use one of {known} "
                              f"or a percentile such as 'p90'")
    return names


def aggregate(values: Iterable[float | bool], aggregations: Sequence[str]) -> dict[str, float]:
    """Aggregate numeric scores: ``mean``, ``min``, ``max``, ``median``, ``std``
    (population), ``sum``, ``count`` and ``p<N>`` (linear-interpolated percentile).

    Bools count as 0/1; an empty input gives only ``count`` (0) and omits the rest.

    Example:
        >>> aggregate([1, 2, 3, 4], ["mean", "max", "p50"])
        {'mean': 2.5, 'max': 4.0, 'p50': 2.5}
    """
    data = sorted(float(v) for v in values)
    out: dict[str, float] = {}
    for name in _check_aggregations(aggregations):
        if name == "count":
            out[name] = float(len(data))
        elif not data:
            continue
        elif name == "mean":
            out[name] = statistics.fmean(data)
        elif name == "min":
            out[name] = data[0]
        elif name == "max":
            out[name] = data[-1]
        elif name == "median":
            out[name] = statistics.median(data)
        elif name == "std":
            out[name] = statistics.pstdev(data)
        elif name == "sum":
            out[name] = math.fsum(data)
        else:
            rank = float(name[1:]) / 100 * (len(data) - 1)
            low = math.floor(rank)
            high = min(low + 1, len(data) - 1)
            out[name] = data[low] + (data[high] - data[low]) * (rank - low)
    return out


def _json_safe(value: Any) -> Any:
    """``value`` with anything JSON cannot carry replaced by its ``repr``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_json_safe(v) for v in items]
    if callable(value):
        return _qualified_name(value)
    return repr(value)


def _qualified_name(func: Any) -> str:
    module = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"{module}.{name}" if module else str(name)


class Scorer:
    """A scorer function with its name, aggregations and pass/fail rule.

    Built by :func:`scorer` (user code) or by the factories in
    :mod:`assay.evaluate.builtin`; rarely constructed directly.

    Example:
        >>> s = Scorer(lambda outputs: len(outputs), name="length")
        >>> s(outputs="abc").value
        3
    """

    #: Who scores, for the feedback a run attaches to traces: ``"CODE"`` here,
    #: ``"LLM_JUDGE"`` for judges.
    source_type: str = "CODE"

    def __init__(self, func: Callable[..., Any], *, name: str | None = None,
                 aggregations: Iterable[str] | None = None, pass_if: PassIf | None = None,
                 timeout: float | None = None, arguments: Mapping[str, Any] | None = None,
                 function: str | None = None) -> None:
        """
        Args:
            func: the scoring function (see :func:`scorer` for what it may ask for).
            name: the scorer's name; defaults to the function's ``__name__``.
            aggregations: how ``evaluate`` aggregates numeric values (default ``["mean"]``).
            pass_if: a callable ``value -> bool`` or a comparison such as ``">= 0.8"``.
            timeout: seconds a call may take; enforced by ``evaluate``, not here.
            arguments: the arguments a built-in was configured with (recorded in :meth:`spec`).
            function: the qualified name recorded in :meth:`spec` (defaults to ``func``'s).
        """
        if not callable(func):
            raise ScorerError(f"a scorer needs a callable, got {type(func).__name__}")
        self.func = func
        self.name = name if name is not None else getattr(func, "__name__", "")
        if not isinstance(self.name, str) or not self.name or self.name == "<lambda>":
            raise ScorerError(f"scorer {_qualified_name(func)} needs a name; pass name=...")
        self.aggregations = _check_aggregations(["mean"] if aggregations is None
                                                else aggregations)
        self.pass_if = pass_if
        self._pass_rule = _pass_rule(pass_if)
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ScorerError(f"scorer {self.name!r}: timeout must be a positive number "
                              f"of seconds, got {timeout!r}")
        self.timeout = None if timeout is None else float(timeout)
        self.arguments = dict(arguments or {})
        self.function = function or _qualified_name(func)
        self._wants, self._wants_all = _bind(func, self.name)
        functools.update_wrapper(self, func, assigned=("__doc__",), updated=())

    def __repr__(self) -> str:
        return f"Scorer(name={self.name!r}, function={self.function!r})"

    @property
    def source_id(self) -> str | None:
        """Which scorer, for the feedback's source: the scorer's name (a judge's model)."""
        return self.name

    @property
    def parameters(self) -> tuple[str, ...]:
        """The row fields the function receives, in the order of :data:`ROW_FIELDS`."""
        return ROW_FIELDS if self._wants_all else tuple(
            f for f in ROW_FIELDS if f in self._wants)

    def __call__(self, *, inputs: Any = None, outputs: Any = None, expectations: Any = None,
                 trace: Any = None) -> Feedback | list[Feedback]:
        """Score one row; exceptions raised by the function propagate.

        Only the fields the function asks for are passed to it. The result is
        normalised: a bool, int, float or str becomes one :class:`Feedback`
        named after the scorer; a Feedback without a name gets the scorer's; a
        list of Feedback stays a list (names defaulted, and they must be
        unique); anything else becomes a Feedback whose ``error`` says what was
        returned.

        Example:
            >>> @scorer
            ... def short(outputs):
            ...     return len(outputs) < 10
            >>> short(inputs={"q": "hi"}, outputs="hello").value
            True
        """
        row = {"inputs": inputs, "outputs": outputs, "expectations": expectations,
               "trace": trace}
        kwargs = row if self._wants_all else {k: row[k] for k in self._wants}
        result = self.func(**kwargs)
        if inspect.isawaitable(result):
            result = run_awaitable(result)
        return self._normalise(result)

    def run(self, *, inputs: Any = None, outputs: Any = None, expectations: Any = None,
            trace: Any = None) -> list[Feedback]:
        """Score one row and never raise: always a list of :class:`Feedback`.

        An exception from the function becomes one Feedback named after the
        scorer with ``value=None`` and ``error="ExcType: message"``.

        Example:
            >>> @scorer
            ... def broken(outputs):
            ...     raise ValueError("no")
            >>> broken.run(outputs="x")[0].error
            'ValueError: no'
        """
        try:
            result = self(inputs=inputs, outputs=outputs, expectations=expectations,
                          trace=trace)
        except Exception as exc:
            return [Feedback.from_error(exc, name=self.name)]
        return result if isinstance(result, list) else [result]

    def passed(self, value: Any) -> bool | None:
        """Whether ``value`` passes: ``pass_if`` when given, else a bool value itself.

        ``None`` when there is no verdict (no rule and a non-bool value, a
        ``None`` value, or a rule that cannot compare the value).

        Example:
            >>> @scorer(pass_if=">= 0.8")
            ... def score(outputs):
            ...     return 0.9
            >>> score.passed(0.9), score.passed(0.5)
            (True, False)
        """
        if value is None:
            return None
        if self._pass_rule is None:
            return value if isinstance(value, bool) else None
        try:
            return bool(self._pass_rule(value))
        except (TypeError, ValueError):
            return None

    def spec(self) -> dict[str, Any]:
        """What this scorer is, JSON-safe, for a run to record.

        Example:
            >>> @scorer(aggregations=["mean", "p90"])
            ... def length(outputs):
            ...     return len(outputs)
            >>> length.spec()["aggregations"]
            ['mean', 'p90']
        """
        return {
            "name": self.name,
            "kind": "code",
            "function": self.function,
            "aggregations": list(self.aggregations),
            "pass_if": _json_safe(self.pass_if),
            "timeout": self.timeout,
            "arguments": _json_safe(self.arguments),
        }

    def _normalise(self, result: Any) -> Feedback | list[Feedback]:
        if isinstance(result, Feedback):
            return result if result.name else replace(result, name=self.name)
        if isinstance(result, list) and result and all(
                isinstance(f, Feedback) for f in result):
            named = [f if f.name else replace(f, name=self.name) for f in result]
            counts = Counter(f.name for f in named)
            duplicates = sorted(str(n) for n, c in counts.items() if c > 1)
            if duplicates:
                return Feedback.from_error(
                    f"returned several Feedback named {', '.join(map(repr, duplicates))}; "
                    f"give each Feedback in the list its own name", name=self.name)
            return named
        if isinstance(result, (bool, str)):
            return Feedback(result, name=self.name)
        if isinstance(result, numbers.Integral):
            return Feedback(int(result), name=self.name)
        if isinstance(result, numbers.Real):
            return Feedback(float(result), name=self.name)
        shown = "an empty list" if isinstance(result, list) and not result else (
            type(result).__name__)
        return Feedback.from_error(
            f"returned {shown}, expected bool, int, float, str, Feedback "
            f"or a non-empty list of Feedback", name=self.name)


def run_awaitable(awaitable: Any) -> Any:
    """Wait for an awaitable from synchronous code: on a fresh event loop, or, when
    this thread already runs one (a notebook), on a helper thread's own loop while
    this thread waits. A coroutine that needs the caller's loop (a client, event or
    timer made on it) cannot run this way: call ``evaluate()`` off that loop
    (``await asyncio.to_thread(assay.evaluate, ...)``)."""
    import asyncio  # imported here: asyncio costs ~35 ms, off ``import assay``

    async def wait() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    context = contextvars.copy_context()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(context.run, asyncio.run, wait()).result()


def _bind(func: Callable[..., Any], name: str) -> tuple[frozenset[str], bool]:
    """The row fields ``func`` asks for, and whether it takes ``**kwargs``."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise ScorerError(f"scorer {name!r}: cannot read the signature of "
                          f"{_qualified_name(func)}: {exc}") from exc
    wants: set[str] = set()
    wants_all = False
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            wants_all = True
        elif param.kind is param.VAR_POSITIONAL:
            continue
        elif param.name in ROW_FIELDS and param.kind is not param.POSITIONAL_ONLY:
            wants.add(param.name)
        elif param.default is param.empty:
            raise ScorerError(
                f"scorer {name!r} ({_qualified_name(func)}) asks for parameter "
                f"{param.name!r}; a scorer may ask only for "
                f"{', '.join(ROW_FIELDS)} (by keyword) or take **kwargs")
    return frozenset(wants), wants_all


@overload
def scorer(func: Callable[..., Any], *, name: str | None = None,
           aggregations: Iterable[str] | None = None, pass_if: PassIf | None = None,
           timeout: float | None = None) -> Scorer: ...


@overload
def scorer(func: None = None, *, name: str | None = None,
           aggregations: Iterable[str] | None = None, pass_if: PassIf | None = None,
           timeout: float | None = None) -> Callable[[Callable[..., Any]], Scorer]: ...


def scorer(func: Callable[..., Any] | None = None, *, name: str | None = None,
           aggregations: Iterable[str] | None = None, pass_if: PassIf | None = None,
           timeout: float | None = None) -> Scorer | Callable[[Callable[..., Any]], Scorer]:
    """Make a function a :class:`Scorer`; bare (``@scorer``) or with options.

    The function asks for any of ``inputs``, ``outputs``, ``expectations`` and
    ``trace`` by parameter name; ``**kwargs`` receives all four. Any other
    parameter without a default is a :class:`~assay.ScorerError` at decoration.

    Args:
        name: the scorer's (and its feedback's) name; default the function's name.
        aggregations: metrics ``evaluate`` computes over the numeric values, from
            ``mean``, ``min``, ``max``, ``median``, ``std``, ``sum``, ``count`` and
            percentiles ``p<N>`` such as ``p90``; default ``["mean"]``.
        pass_if: turns a value into pass/fail: a callable ``value -> bool`` or a
            comparison against a number, one of ``>=``, ``>``, ``<=``, ``<``,
            ``==``, ``!=`` (``">= 0.8"``). Without it a bool value is its own verdict.
        timeout: seconds one call may take (enforced by ``evaluate``).

    Example:
        >>> @scorer(name="relevance", aggregations=["mean", "p90"], pass_if=">= 0.5")
        ... def overlap(inputs, outputs):
        ...     words = set(inputs["question"].split())
        ...     return len(words & set(outputs.split())) / len(words)
        >>> overlap(inputs={"question": "what is assay"}, outputs="assay is a tool").value
        0.6666666666666666
    """
    def wrap(f: Callable[..., Any]) -> Scorer:
        return Scorer(f, name=name, aggregations=aggregations, pass_if=pass_if,
                      timeout=timeout)

    return wrap if func is None else wrap(func)


def check_unique_names(scorers: Iterable[Scorer]) -> None:
    """Raise ``ValueError`` when two scorers share a name (their metrics would collide).

    Example:
        >>> check_unique_names([scorer(name="a")(lambda outputs: 1),
        ...                     scorer(name="a")(lambda outputs: 2)])
        Traceback (most recent call last):
        ...
        ValueError: several scorers are named 'a'; give each a distinct name=
    """
    counts = Counter(s.name for s in scorers)
    duplicates = sorted(n for n, c in counts.items() if c > 1)
    if duplicates:
        raise ValueError(f"several scorers are named {', '.join(map(repr, duplicates))}; "
                         f"give each a distinct name=")
