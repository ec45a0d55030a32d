"""A pytest plugin for quality gates in a test suite (registered as ``assay``).

Nothing happens unless a test asks for it: the ``assay_eval`` fixture runs
``assay.evaluate`` and fails the test with the gate's reason when the gate
fails; ``@pytest.mark.assay(...)`` gives the evaluation's defaults for one test::

    import pytest
    from assay.scorers import exact_match

    @pytest.mark.assay(thresholds={"exact_match/mean": ">= 0.8 @lower"})
    def test_answers_are_right(assay_eval):
        result = assay_eval(DATA, [exact_match()], predict_fn=answer)
        assert result.metrics["rows"] == len(DATA)

A suite that configured assay itself keeps its configuration (its store,
redaction and exporters). Otherwise the evaluations go to the store given by
``--assay-store URI`` (or ``ASSAY_STORE``), else to a SQLite file in the
session's temporary directory, experiment ``pytest`` unless the marker or the
call says otherwise, and that configuration is undone after each test. The
runs are tagged with the test's node id (``pytest.nodeid``). ``assert_gate(result)``
does the same check for a result obtained any other way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

__all__ = ["assert_gate"]

_MARKER = "assay"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("assay", "assay evaluation gates")
    group.addoption("--assay-store", default=None, metavar="URI",
                    help="trace store for the assay_eval fixture's evaluations "
                         "(default: ASSAY_STORE, else a SQLite file in the session's "
                         "temporary directory)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{_MARKER}(**options): defaults for the assay_eval fixture's evaluation "
                   "(thresholds=, max_error_rate=, repeats=, baseline=, fail_on_regression=, "
                   "experiment=, ...)")


def assert_gate(result: Any, thresholds: Mapping[str, str | float] | None = None, *,
                max_error_rate: float = 0.0) -> None:
    """Fail the running test when the evaluation's gate fails, with the gate's reason.

    With ``thresholds`` the result is checked against them (and the error policy);
    without, its own gate (``evaluate(thresholds=...)``) is used.

    Raises:
        pytest.fail.Exception: the gate failed (the message is ``gate.reason``).
        ValueError: no thresholds given and the result has no gate.
    """
    gate = result.check(thresholds, max_error_rate=max_error_rate) if thresholds is not None \
        else result.gate
    if gate is None:
        raise ValueError("assert_gate(result): the evaluation had no thresholds and no "
                         "baseline; pass thresholds={...}")
    if not gate.passed:
        pytest.fail(f"assay gate failed for run {result.run_id}:\n{gate.reason}",
                    pytrace=False)


@pytest.fixture(scope="session")
def _assay_store_uri(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> str | None:
    """The store the command line asks for, or a session file when tracing is not
    configured yet; ``None`` to use the configuration the suite already has."""
    given = request.config.getoption("--assay-store")
    if given:
        return str(given)
    if _configured() or os.environ.get("ASSAY_STORE"):
        return None
    return f"sqlite:///{tmp_path_factory.mktemp('assay') / 'assay.db'}"


@pytest.fixture
def assay_eval(request: pytest.FixtureRequest,
               _assay_store_uri: str | None) -> Iterator[Callable[..., Any]]:
    """Run ``assay.evaluate(...)`` and fail the test if its gate fails.

    Keyword arguments of ``@pytest.mark.assay(...)`` are defaults for every call
    in the test; the call's own arguments win. Returns the EvaluationResult.

    A suite that configured assay itself (``assay.configure`` in a conftest, with
    its redaction and exporters) keeps its configuration; otherwise the
    evaluations go to ``--assay-store``, ``ASSAY_STORE`` or a session file, and
    the configuration made for them is undone after the test.
    """
    import assay

    marker = request.node.get_closest_marker(_MARKER)
    defaults: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    experiment = defaults.pop("experiment", "pytest")
    installed = False
    if _assay_store_uri is not None and _configured_store() != _assay_store_uri:
        assay.configure(store=_assay_store_uri, experiment=experiment)
        installed = True

    def run(data: Any, scorers: Any = None, **options: Any) -> Any:
        kwargs = {**defaults, **options}
        kwargs.setdefault("experiment", experiment)
        kwargs["tags"] = {"pytest.nodeid": request.node.nodeid, **(kwargs.get("tags") or {})}
        kwargs.setdefault("progress", False)
        result = assay.evaluate(data, scorers, **kwargs)
        if result.gate is not None and not result.gate.passed:
            pytest.fail(f"assay gate failed for run {result.run_id}:\n{result.gate.reason}",
                        pytrace=False)
        return result

    yield run
    assay.flush()
    if installed:
        assay.shutdown()  # back to unconfigured: later tests see what they saw before


def _configured() -> bool:
    """Whether tracing was configured (explicitly, or by a first span) already."""
    from assay.tracing import _runtime

    return _runtime._STATE.rt is not None


def _configured_store() -> str | None:
    from assay.tracing import _runtime

    if not _configured():
        return None
    return getattr(_runtime.current().store, "uri", None)
