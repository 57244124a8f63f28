"""Settings for :func:`qt_telemetry.init`: argument > ``QT_TELEMETRY_*`` > standard ``OTEL_*`` > default.

Every value is resolved and validated once, at ``init()``; a bad value raises :class:`ConfigurationError`
naming the setting, so a typo fails at startup rather than silently dropping telemetry mid-session.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import urlsplit

Mode = Literal["otlp", "local", "none"]
Protocol = Literal["grpc", "http/protobuf"]

# --- qt-telemetry's own variables (each overrides the OTEL_* equivalent) --------------------------------
#: ``otlp`` (default: export to a collector), ``local`` (Prometheus /metrics on loopback + console trace
#: summary, no servers needed) or ``none`` (instrument but export nothing).
QT_TELEMETRY_MODE: Final = "QT_TELEMETRY_MODE"
#: Service name; overrides OTEL_SERVICE_NAME. Default ``qt-trading-bot``.
QT_TELEMETRY_SERVICE_NAME: Final = "QT_TELEMETRY_SERVICE_NAME"
#: Base OTLP endpoint (``http://host:4318`` for HTTP, ``http://host:4317`` for gRPC); overrides
#: OTEL_EXPORTER_OTLP_ENDPOINT and the per-signal variants.
QT_TELEMETRY_ENDPOINT: Final = "QT_TELEMETRY_ENDPOINT"
#: ``grpc`` or ``http/protobuf``; overrides OTEL_EXPORTER_OTLP_PROTOCOL. Default ``http/protobuf``.
QT_TELEMETRY_PROTOCOL: Final = "QT_TELEMETRY_PROTOCOL"
#: Metric export interval in milliseconds; overrides OTEL_METRIC_EXPORT_INTERVAL. Default 10000.
QT_TELEMETRY_METRIC_EXPORT_INTERVAL: Final = "QT_TELEMETRY_METRIC_EXPORT_INTERVAL"
#: Upper bound in seconds for shutdown()/force_flush() even when the collector is down. Default 2.
QT_TELEMETRY_SHUTDOWN_TIMEOUT: Final = "QT_TELEMETRY_SHUTDOWN_TIMEOUT"
#: Local mode: address and port of the /metrics server; override OTEL_EXPORTER_PROMETHEUS_HOST/_PORT.
QT_TELEMETRY_METRICS_HOST: Final = "QT_TELEMETRY_METRICS_HOST"
QT_TELEMETRY_METRICS_PORT: Final = "QT_TELEMETRY_METRICS_PORT"
#: Print a one-line summary per finished trade / order to stderr. Default: on in local mode only.
QT_TELEMETRY_CONSOLE: Final = "QT_TELEMETRY_CONSOLE"
#: Distinct values accepted per metric attribute key before the rest report as ``_other``. Default 250.
QT_TELEMETRY_MAX_LABEL_VALUES: Final = "QT_TELEMETRY_MAX_LABEL_VALUES"

# --- standard OpenTelemetry variables we read (the SDK and exporters read the rest themselves) ---------
OTEL_SDK_DISABLED: Final = "OTEL_SDK_DISABLED"
OTEL_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES: Final = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_EXPORTER_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
OTEL_EXPORTER_OTLP_HEADERS: Final = "OTEL_EXPORTER_OTLP_HEADERS"
OTEL_METRIC_EXPORT_INTERVAL: Final = "OTEL_METRIC_EXPORT_INTERVAL"
OTEL_METRIC_EXPORT_TIMEOUT: Final = "OTEL_METRIC_EXPORT_TIMEOUT"
OTEL_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
OTEL_METRICS_EXPORTER: Final = "OTEL_METRICS_EXPORTER"
OTEL_EXPORTER_PROMETHEUS_HOST: Final = "OTEL_EXPORTER_PROMETHEUS_HOST"
OTEL_EXPORTER_PROMETHEUS_PORT: Final = "OTEL_EXPORTER_PROMETHEUS_PORT"

DEFAULT_SERVICE_NAME: Final = "qt-trading-bot"
DEFAULT_HTTP_ENDPOINT: Final = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT: Final = "http://localhost:4317"
_PROTOCOLS: Final = ("grpc", "http/protobuf")
_MODES: Final = ("otlp", "local", "none")
_SIGNAL_PATHS: Final = {"traces": "/v1/traces", "metrics": "/v1/metrics"}


class ConfigurationError(ValueError):
    """A setting has a value qt-telemetry cannot use; the message names the setting and the fix."""


@dataclass(frozen=True)
class SignalExport:
    """Where and how one signal (traces or metrics) is exported over OTLP."""

    protocol: Protocol
    #: The exporter's ``endpoint`` argument, or None to let the exporter read the OTEL_* variables.
    endpoint: str | None
    #: The endpoint actually used (for messages and ``doctor``).
    effective_endpoint: str
    enabled: bool = True


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :func:`resolve`."""

    disabled: bool
    mode: Mode
    service_name: str | None
    resource_attributes: Mapping[str, str]
    traces: SignalExport
    metrics: SignalExport
    headers: Mapping[str, str] | None
    metric_export_interval_s: float
    shutdown_timeout_s: float
    metrics_host: str
    metrics_port: int
    console: bool
    max_label_values: int
    environ: Mapping[str, str] = field(repr=False, default_factory=dict)


def resolve(
    *,
    mode: str | None = None,
    service_name: str | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    metric_export_interval: float | None = None,
    shutdown_timeout: float | None = None,
    metrics_host: str | None = None,
    metrics_port: int | None = None,
    console: bool | None = None,
    max_label_values: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting from arguments, then the environment, then defaults; validate each."""
    env = dict(os.environ if environ is None else environ)

    def pick(arg: object, *names: str) -> tuple[object, str]:
        if arg is not None:
            return arg, "argument"
        for name in names:
            value = env.get(name, "").strip()
            if value:
                return value, name
        return None, "default"

    disabled = _bool(env.get(OTEL_SDK_DISABLED, ""), OTEL_SDK_DISABLED, default=False)

    raw_mode, src = pick(mode, QT_TELEMETRY_MODE)
    resolved_mode = str(raw_mode or "otlp").lower()
    if resolved_mode not in _MODES:
        raise ConfigurationError(f"{_name(src, 'mode')}={raw_mode!r}: expected one of {', '.join(_MODES)}")

    raw_service, _ = pick(service_name, QT_TELEMETRY_SERVICE_NAME)

    raw_endpoint, endpoint_src = pick(endpoint, QT_TELEMETRY_ENDPOINT)
    traces = _signal("traces", protocol, raw_endpoint, endpoint_src, env)
    metrics = _signal("metrics", protocol, raw_endpoint, endpoint_src, env)
    traces, metrics = _apply_exporter_selection(traces, metrics, env)

    raw_interval, src = pick(metric_export_interval, QT_TELEMETRY_METRIC_EXPORT_INTERVAL, OTEL_METRIC_EXPORT_INTERVAL)
    if raw_interval is None:
        interval_s = 10.0
    elif src == "argument":
        interval_s = _positive_float(raw_interval, "metric_export_interval")
    else:
        interval_s = _positive_float(raw_interval, src) / 1000.0

    raw_timeout, src = pick(shutdown_timeout, QT_TELEMETRY_SHUTDOWN_TIMEOUT)
    timeout_s = 2.0 if raw_timeout is None else _positive_float(raw_timeout, _name(src, "shutdown_timeout"))

    raw_host, _ = pick(metrics_host, QT_TELEMETRY_METRICS_HOST, OTEL_EXPORTER_PROMETHEUS_HOST)
    raw_port, src = pick(metrics_port, QT_TELEMETRY_METRICS_PORT, OTEL_EXPORTER_PROMETHEUS_PORT)
    port = 9464 if raw_port is None else _int(raw_port, _name(src, "metrics_port"), 0, 65535)

    raw_console, src = pick(console, QT_TELEMETRY_CONSOLE)
    console_on = (resolved_mode == "local") if raw_console is None else _bool(raw_console, _name(src, "console"))

    raw_max, src = pick(max_label_values, QT_TELEMETRY_MAX_LABEL_VALUES)
    max_labels = 250 if raw_max is None else _int(raw_max, _name(src, "max_label_values"), 1, 100_000)

    if headers is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ConfigurationError("headers: every header name and value must be a string")

    return Settings(
        disabled=disabled,
        mode=resolved_mode,  # type: ignore[arg-type]
        service_name=str(raw_service) if raw_service else None,
        resource_attributes=dict(resource_attributes or {}),
        traces=traces,
        metrics=metrics,
        headers=dict(headers) if headers is not None else None,
        metric_export_interval_s=interval_s,
        shutdown_timeout_s=timeout_s,
        metrics_host=str(raw_host or "127.0.0.1"),
        metrics_port=port,
        console=console_on,
        max_label_values=max_labels,
        environ=env,
    )


def _signal(signal: str, protocol: str | None, base: object, base_src: str, env: Mapping[str, str]) -> SignalExport:
    upper = signal.upper()
    raw_protocol = protocol
    src = "protocol"
    if raw_protocol is None:
        for name in (QT_TELEMETRY_PROTOCOL, f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL", OTEL_EXPORTER_OTLP_PROTOCOL):
            if env.get(name, "").strip():
                raw_protocol, src = env[name].strip(), name
                break
    proto = (raw_protocol or "http/protobuf").lower()
    if proto == "http/json":
        raise ConfigurationError(f"{src}='http/json' is not supported by the Python OTLP exporters; use "
                                 "'http/protobuf' or 'grpc'")
    if proto not in _PROTOCOLS:
        raise ConfigurationError(f"{src}={raw_protocol!r}: expected 'grpc' or 'http/protobuf'")

    grpc = proto == "grpc"
    if base is not None:  # our own base endpoint: we compute the per-signal URL ourselves
        url = _url(str(base), _name(base_src, "endpoint"), grpc)
        endpoint = url if proto == "grpc" else url.rstrip("/") + _SIGNAL_PATHS[signal]
        return SignalExport(proto, endpoint, endpoint)  # type: ignore[arg-type]

    specific = env.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT", "").strip()
    general = env.get(OTEL_EXPORTER_OTLP_ENDPOINT, "").strip()
    if specific:
        effective = _url(specific, f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT", grpc)
    elif general:
        url = _url(general, OTEL_EXPORTER_OTLP_ENDPOINT, grpc)
        effective = url if proto == "grpc" else url.rstrip("/") + _SIGNAL_PATHS[signal]
    else:
        default = DEFAULT_GRPC_ENDPOINT if proto == "grpc" else DEFAULT_HTTP_ENDPOINT
        effective = default if proto == "grpc" else default + _SIGNAL_PATHS[signal]
        # The HTTP exporter's built-in default is already this URL; gRPC's too. Pass it explicitly anyway
        # so that what we report is what is used.
        return SignalExport(proto, effective, effective)  # type: ignore[arg-type]
    # Let the exporter read the OTEL_* variables itself, so every standard rule keeps applying.
    return SignalExport(proto, None, effective)  # type: ignore[arg-type]


def _apply_exporter_selection(traces: SignalExport, metrics: SignalExport,
                              env: Mapping[str, str]) -> tuple[SignalExport, SignalExport]:
    out = []
    for sig, name in ((traces, OTEL_TRACES_EXPORTER), (metrics, OTEL_METRICS_EXPORTER)):
        value = env.get(name, "").strip().lower()
        if value in ("", "otlp"):
            out.append(sig)
        elif value == "none":
            out.append(SignalExport(sig.protocol, sig.endpoint, sig.effective_endpoint, enabled=False))
        else:
            raise ConfigurationError(f"{name}={value!r}: qt-telemetry supports 'otlp' or 'none' here; "
                                     f"for a collector-less setup use {QT_TELEMETRY_MODE}=local")
    return out[0], out[1]


def _url(value: str, setting: str, grpc: bool = False) -> str:
    if grpc and "://" not in value:  # the gRPC exporter also takes a bare host:port (insecure per its settings)
        try:
            port = int(value.rsplit(":", 1)[1]) if ":" in value else -1
        except ValueError:
            port = -1
        if value.rsplit(":", 1)[0] and 0 < port < 65536:
            return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{setting}={value!r} is not an OTLP endpoint URL: expected e.g. 'http://localhost:4318' "
            "(HTTP) or 'http://localhost:4317' (gRPC)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigurationError(f"{setting}={value!r} has an invalid port") from None
    return value


def _name(src: str, argument: str) -> str:
    return argument if src in ("argument", "default") else src


def _bool(value: object, setting: str, default: bool | None = None) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text and default is not None:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{setting}={value!r}: expected true or false")


def _positive_float(value: object, setting: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigurationError(f"{setting}={value!r}: expected a positive number") from None
    if not number > 0 or number == float("inf"):
        raise ConfigurationError(f"{setting}={value!r}: expected a positive number")
    return number


def _int(value: object, setting: str, low: int, high: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigurationError(f"{setting}={value!r}: expected a whole number") from None
    if not low <= number <= high:
        raise ConfigurationError(f"{setting}={value!r}: expected a number from {low} to {high}")
    return number


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")


def checked_name(value: str, what: str) -> str:
    """Validate a rule/switch/feed name at configuration time (it becomes a metric label)."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(f"{what}={value!r}: use 1-64 characters, a letter first, then letters, digits, "
                                 "'_', '.', ':' or '-'")
    return value
