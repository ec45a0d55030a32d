"""Settings: environment variables declared once, validated, read only when needed."""

from __future__ import annotations

import json
import logging

import pytest

import assay
from assay.config import ENV_VARS, Settings, settings_from_env
from tests.conftest import run_python


def test_every_setting_has_exactly_one_environment_variable():
    fields = [v.field for v in ENV_VARS]
    assert len(fields) == len(set(fields))
    assert all(v.name.startswith("ASSAY_") and v.doc for v in ENV_VARS)
    assert set(fields) <= set(Settings.__dataclass_fields__)


def test_defaults():
    s = settings_from_env({})
    assert s.store == "sqlite:///assay.db"
    assert s.experiment == "default"
    assert s.enabled is True
    assert s.sampling_ratio == 1.0


def test_environment_values_are_parsed():
    s = settings_from_env({"ASSAY_STORE": "memory://", "ASSAY_EXPERIMENT": "exp",
                           "ASSAY_TRACING_ENABLED": "off", "ASSAY_SAMPLING_RATIO": "0.25",
                           "ASSAY_MAX_VALUE_BYTES": "1000", "ASSAY_QUEUE_FULL_POLICY": "DROP"})
    assert (s.store, s.experiment, s.enabled, s.sampling_ratio, s.max_value_bytes,
            s.queue_full_policy) == ("memory://", "exp", False, 0.25, 1000, "drop")


@pytest.mark.parametrize(("name", "value"), [
    ("ASSAY_TRACING_ENABLED", "maybe"),
    ("ASSAY_SAMPLING_RATIO", "1.5"),
    ("ASSAY_SAMPLING_RATIO", "abc"),
    ("ASSAY_MAX_VALUE_BYTES", "-3"),
    ("ASSAY_QUEUE_FULL_POLICY", "wait"),
])
def test_a_bad_environment_value_names_the_variable(name, value, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(assay.ConfigurationError, match=name):
        assay.configure(store="memory://")


@pytest.mark.parametrize("kwargs", [
    {"sampling_ratio": 2}, {"sampling_ratio": -0.1}, {"max_value_bytes": 0},
    {"queue_full_policy": "later"}, {"enabled": "yes"}, {"experiment": ""},
    {"flush_interval_ms": 0}, {"max_queue_size": True},
])
def test_bad_configure_arguments_raise_and_name_the_argument(kwargs):
    (key,) = kwargs
    with pytest.raises(assay.ConfigurationError, match=key):
        assay.configure(store="memory://", **kwargs)


def test_unknown_store_scheme_is_a_configuration_error():
    with pytest.raises(assay.ConfigurationError, match="mongodb"):
        assay.configure(store="mongodb://localhost/x")


def test_a_bad_environment_at_the_first_span_disables_tracing_without_raising(
        monkeypatch, caplog):
    monkeypatch.setenv("ASSAY_SAMPLING_RATIO", "lots")
    monkeypatch.setenv("ASSAY_INTERNAL_ERRORS", "log")

    @assay.trace
    def f():
        return 1

    with caplog.at_level(logging.ERROR, logger="assay"):
        assert f() == 1
    assert "ASSAY_SAMPLING_RATIO" in caplog.text


def test_reconfiguring_flushes_what_the_previous_configuration_held(tmp_path):
    first = f"sqlite:///{tmp_path / 'a.db'}"
    assay.configure(store=first, flush_interval_ms=60_000)

    @assay.trace
    def f():
        return 1

    f()
    tid = assay.get_last_trace_id()
    assay.configure(store=f"sqlite:///{tmp_path / 'b.db'}")
    assay.configure(store=first)
    assert assay.get_trace(tid) is not None


def test_import_reads_no_environment_and_loads_nothing_heavy():
    out = run_python(
        "import sys, json, assay\n"
        "heavy = [m for m in ('pandas', 'sqlalchemy', 'httpx', 'numpy') if m in sys.modules]\n"
        "from assay.tracing import _runtime\n"
        "print(json.dumps({'heavy': heavy, 'configured': _runtime._STATE.rt is not None}))\n",
        env={"ASSAY_SAMPLING_RATIO": "not-a-number"})
    data = json.loads(out)
    assert data == {"heavy": [], "configured": False}


def test_the_first_traced_call_loads_nothing_heavy_on_the_calling_thread():
    out = run_python(
        "import sys, assay\n"
        "@assay.trace\n"
        "def f(x): return x\n"
        "f(1)\n"
        "print([m for m in ('pandas', 'sqlalchemy') if m in sys.modules])\n"
        "assay.flush()\n",
        env={"ASSAY_STORE": "memory://", "ASSAY_FLUSH_INTERVAL_MS": "60000"})
    assert out.strip() == "[]"
