"""The option that adds assay's processing to the application's global TracerProvider."""

from __future__ import annotations

import json

from tests.conftest import run_python


def test_assay_processing_on_the_global_provider(db_uri):
    code = f"""
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
import assay

app_provider = TracerProvider()
trace.set_tracer_provider(app_provider)
assay.configure(store={db_uri!r}, use_global_tracer_provider=True)
assert trace.get_tracer_provider() is app_provider

app_tracer = trace.get_tracer("app-instrumentation")

@assay.trace(span_type="TOOL")
def tool():
    with app_tracer.start_as_current_span("db-query"):
        return 1

with app_tracer.start_as_current_span("request") as root:
    tool()
assay.flush()
t = assay.get_trace(format(root.get_span_context().trace_id, "032x"))
print(json.dumps({{"names": sorted(s.name for s in t.spans), "root": t.info.name,
                  "types": {{s.name: s.span_type for s in t.spans}}}}))
"""
    data = json.loads(run_python(code))
    assert data["names"] == ["db-query", "request", "tool"]
    assert data["root"] == "request"
    assert data["types"] == {"db-query": "UNKNOWN", "request": "UNKNOWN", "tool": "TOOL"}


def test_global_option_installs_assays_provider_when_there_is_none(db_uri):
    code = f"""
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
import assay
assay.configure(store={db_uri!r}, use_global_tracer_provider=True)
print(isinstance(trace.get_tracer_provider(), TracerProvider))
"""
    assert run_python(code).strip() == "True"
