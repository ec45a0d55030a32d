"""Settings: every ``ASSAY_*`` environment variable, declared once, and ``configure()``.

Importing assay reads no environment. The environment is read when
``configure()`` is called, or, if it never is, when the first span starts.
Explicit arguments to ``configure()`` win over the environment, which wins over
the defaults below. A value that cannot be parsed raises
:class:`~assay.errors.ConfigurationError` naming the variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from assay.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from assay.tracing.models import Span

__all__ = ["ENV_VARS", "Settings", "configure", "settings_from_env"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")


def _parse_ratio(text: str) -> float:
    return _check_ratio(float(text))


def _check_ratio(value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError("expected a number between 0 and 1")
    return float(value)


def _parse_positive_int(text: str) -> int:
    return _check_positive_int(int(text))


def _check_positive_int(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _parse_policy(text: str) -> str:
    return _check_policy(text.strip().lower())


def _check_policy(value: str) -> str:
    if value not in ("block", "drop"):
        raise ValueError("expected 'block' or 'drop'")
    return value


_BYTE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _parse_bytes(text: str) -> int:
    """A size in bytes: ``268435456``, ``256MiB``, ``512 MB`` (KB/MB/GB are powers of
    1000, KiB/MiB/GiB powers of 1024)."""
    raw = text.strip().lower().replace("_", "")
    digits = raw.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
    unit = raw[len(raw.rstrip("abcdefghijklmnopqrstuvwxyz")):]
    if not digits.isdigit() or unit not in _BYTE_UNITS:
        raise ValueError("expected a number of bytes, optionally with KB, MB, GB, KiB, MiB "
                         "or GiB")
    return _check_positive_int(int(digits) * _BYTE_UNITS[unit])


def _check_spool_dir(value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a directory path")
    return value


def _parse_errors(text: str) -> str:
    value = text.strip().lower()
    if value not in ("log", "raise"):
        raise ValueError("expected 'log' or 'raise'")
    return value


@dataclass(frozen=True)
class _EnvVar:
    name: str
    field: str
    parse: Callable[[str], Any]
    doc: str


#: Every environment variable assay reads, with the setting it feeds.
ENV_VARS: tuple[_EnvVar, ...] = (
    _EnvVar("ASSAY_STORE", "store", str,
            "Trace store URI: sqlite:///path.db (default sqlite:///assay.db), memory://, "
            "postgresql://..., or 'none' for no local store (exporters only)."),
    _EnvVar("ASSAY_EXPERIMENT", "experiment", str,
            "Experiment new traces belong to (default 'default')."),
    _EnvVar("ASSAY_TRACING_ENABLED", "enabled", _parse_bool,
            "true/false: false turns every @trace and start_span into a plain call."),
    _EnvVar("ASSAY_SAMPLING_RATIO", "sampling_ratio", _parse_ratio,
            "Fraction of traces kept, decided at the root (0..1, default 1)."),
    _EnvVar("ASSAY_MAX_VALUE_BYTES", "max_value_bytes", _parse_positive_int,
            "Largest recorded input/output in bytes of JSON before it is cut (default 1 MB)."),
    _EnvVar("ASSAY_FLUSH_INTERVAL_MS", "flush_interval_ms", _parse_positive_int,
            "How often the background writer persists ended spans (default 500)."),
    _EnvVar("ASSAY_MAX_QUEUE_SIZE", "max_queue_size", _parse_positive_int,
            "Ended spans held in memory per exporter before the queue-full policy applies."),
    _EnvVar("ASSAY_QUEUE_FULL_POLICY", "queue_full_policy", _parse_policy,
            "'block' (default): wait for the writer, up to 5 s, then drop; 'drop': drop at once."),
    _EnvVar("ASSAY_SPOOL", "spool", _parse_bool,
            "true/false: keep what an OTLP collector or a PostgreSQL store cannot take in "
            "time in a disk spool and send it later (default true)."),
    _EnvVar("ASSAY_SPOOL_DIR", "spool_dir", _check_spool_dir,
            "Directory under which each destination gets its spool (default: the user's cache "
            "directory, e.g. ~/.cache/assay/spool)."),
    _EnvVar("ASSAY_SPOOL_MAX_BYTES", "spool_max_bytes", _parse_bytes,
            "Bound of one process's spool per destination, e.g. 268435456 or 256MiB (the "
            "default); past it the oldest spooled spans are dropped and counted."),
    _EnvVar("ASSAY_INTERNAL_ERRORS", "internal_errors", _parse_errors,
            "'log' (default): assay's own failures are logged and counted; 'raise' re-raises them "
            "(for assay's test suite)."),
)


@dataclass(frozen=True)
class Settings:
    """Validated settings of one ``configure()`` call."""

    store: str = "sqlite:///assay.db"
    experiment: str = "default"
    enabled: bool = True
    sampling_ratio: float = 1.0
    max_value_bytes: int = 1_000_000
    flush_interval_ms: int = 500
    max_queue_size: int = 50_000
    queue_full_policy: str = "block"
    spool: bool = True
    spool_dir: str | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    internal_errors: str = "log"


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every ``ASSAY_*`` variable into :class:`Settings` (defaults for the rest).

    Raises:
        ConfigurationError: a variable is set to a value that cannot be parsed.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var in ENV_VARS:
        raw = env.get(var.name)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[var.field] = var.parse(raw)
        except ValueError as exc:
            raise ConfigurationError(
                f"environment variable {var.name}={raw!r} is invalid: {exc}"
            ) from None
    return Settings(**values)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "sampling_ratio": _check_ratio,
    "max_value_bytes": _check_positive_int,
    "flush_interval_ms": _check_positive_int,
    "max_queue_size": _check_positive_int,
    "queue_full_policy": _check_policy,
    "spool_dir": _check_spool_dir,
    "spool_max_bytes": _check_positive_int,
}


def _merge(base: Settings, overrides: dict[str, Any]) -> Settings:
    clean: dict[str, Any] = {}
    names = {f.name for f in fields(Settings)}
    for key, value in overrides.items():
        if value is None:
            continue
        assert key in names, key
        check = _CHECKS.get(key)
        if check is not None:
            try:
                value = check(value)
            except ValueError as exc:
                raise ConfigurationError(f"configure({key}={value!r}): {exc}") from None
        elif key in ("store", "experiment") and (not isinstance(value, str) or not value):
            raise ConfigurationError(f"configure({key}={value!r}): expected a non-empty string")
        elif key in ("enabled", "spool") and not isinstance(value, bool):
            raise ConfigurationError(f"configure({key}={value!r}): expected True or False")
        clean[key] = value
    return replace(base, **clean)


def configure(
    store: str | None = None,
    experiment: str | None = None,
    *,
    sampling_ratio: float | None = None,
    enabled: bool | None = None,
    redact: Callable[[Span], Span | None] | None = None,
    exporters: Sequence[SpanExporter] | None = None,
    max_value_bytes: int | None = None,
    flush_interval_ms: int | None = None,
    max_queue_size: int | None = None,
    queue_full_policy: Literal["block", "drop"] | None = None,
    spool: bool | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    spool_max_bytes: int | None = None,
    use_global_tracer_provider: bool = False,
) -> None:
    """Configure tracing: where spans go, which experiment, sampling, redaction.

    Arguments left as ``None`` come from the ``ASSAY_*`` environment variables
    (see :data:`ENV_VARS`), then from the defaults. Calling ``configure()``
    again flushes what the previous configuration still holds and replaces it.

    Args:
        store: trace store URI, ``sqlite:///path.db``, ``memory://`` or
            ``postgresql://...``; ``"none"`` keeps no local store, so spans go
            to ``exporters`` only (an OTLP collector, say) and searches raise
            ``ConfigurationError``.
        experiment: the experiment new traces belong to.
        sampling_ratio: fraction of traces recorded, decided once at the root
            span and inherited by every child (and by remote children through
            ``traceparent``).
        enabled: ``False`` makes every traced function a plain call.
        redact: called with each finished :class:`~assay.Span` on the thread
            that ends it; return the span (changed as you like) or ``None`` to
            drop it. A redactor that raises drops the span and is counted.
        exporters: extra OpenTelemetry ``SpanExporter`` objects that receive
            every span besides the store, each behind its own queue. An exporter
            of the live configuration passed again is handed over to the new one
            (flushed, not shut down); an exporter that an earlier configuration
            shut down (when it was replaced without it, or by ``assay.shutdown()``)
            cannot be used again and raises ``ConfigurationError``.
        max_value_bytes: largest JSON form of one recorded value; larger
            values are cut with a visible marker.
        flush_interval_ms: how often the background writer persists spans.
        max_queue_size: ended spans held per exporter before the
            queue-full policy applies.
        queue_full_policy: ``"block"`` waits for the writer (up to 5 s, then
            drops and counts); ``"drop"`` drops at once and counts.
        spool: keep what an OTLP exporter, or a store on a PostgreSQL server,
            cannot deliver in time (its collector or server down or slow, its
            queue full) in a disk spool, and send it when the destination answers
            again or from the next process that uses the same spool (default
            ``True``). A SQLite store and exporters of other kinds have no spool.
        spool_dir: the directory under which each destination gets its spool,
            in a subdirectory named after a hash of its endpoint (default: the
            user's cache directory, ``$XDG_CACHE_HOME/assay/spool`` or
            ``~/.cache/assay/spool`` on Linux).
        spool_max_bytes: the bound of each spool (default 256 MiB); past it
            the oldest spooled spans are dropped and counted.
        use_global_tracer_provider: add assay's processing to the application's
            global OpenTelemetry ``TracerProvider`` (installing one if there is
            none) instead of using assay's own provider.

    Raises:
        ConfigurationError: an argument or environment variable is invalid, the
            store URI has an unknown scheme, or an exporter was shut down by an
            earlier configuration.
        StoreError: the store cannot be opened (unwritable file, newer schema).

    Example:
        >>> import assay
        >>> assay.configure(store="sqlite:///traces.db", experiment="checkout-bot")
    """
    from assay.tracing import _runtime

    settings = _merge(settings_from_env(), {
        "store": store,
        "experiment": experiment,
        "sampling_ratio": sampling_ratio,
        "enabled": enabled,
        "max_value_bytes": max_value_bytes,
        "flush_interval_ms": flush_interval_ms,
        "max_queue_size": max_queue_size,
        "queue_full_policy": queue_full_policy,
        "spool": spool,
        "spool_dir": spool_dir,
        "spool_max_bytes": spool_max_bytes,
    })
    if redact is not None and not callable(redact):
        raise ConfigurationError(f"configure(redact={redact!r}): expected a callable or None")
    _runtime.install(settings, redact=redact, exporters=list(exporters or ()),
                     use_global_provider=use_global_tracer_provider, open_now=True)
