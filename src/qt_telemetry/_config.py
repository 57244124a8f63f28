"""Settings for :func:`qt_telemetry.init`: argument > ``QT_TELEMETRY_*`` > standard ``OTEL_*`` > default.

One table (:data:`SETTINGS`) lists every setting with its variables, default and parser; :func:`resolve` walks
it once, at ``init()``. A bad value raises :class:`ConfigurationError` naming the setting and what it accepts, so
a typo fails at startup instead of silently dropping telemetry (or crashing an export thread) mid-session. The
standard OTLP variables the exporters read themselves (headers, timeouts, TLS files, batching, sampler,
propagators) are validated here too, with the same rules the exporters apply.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Final, Generic, Literal, TypeVar
from urllib.parse import unquote, urlsplit

Mode = Literal["otlp", "local", "none"]
Protocol = Literal["grpc", "http/protobuf"]
Engine = Literal["auto", "process", "inline", "sdk"]
T = TypeVar("T")

DEFAULT_SERVICE_NAME: Final = "qt-trading-bot"
DEFAULT_HTTP_ENDPOINT: Final = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT: Final = "http://localhost:4317"
_SIGNAL_PATHS: Final = {"traces": "/v1/traces", "metrics": "/v1/metrics"}

# Standard variables read below (the OTel SDK and exporters read them too; we validate them first).
OTEL_SDK_DISABLED: Final = "OTEL_SDK_DISABLED"
OTEL_EXPORTER_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
OTEL_METRICS_EXPORTER: Final = "OTEL_METRICS_EXPORTER"
#: Which measurements may become exemplars (``trace_based``, the default: only those made inside a sampled span).
OTEL_METRICS_EXEMPLAR_FILTER: Final = "OTEL_METRICS_EXEMPLAR_FILTER"
#: Counters and histograms as ``cumulative`` sums (the default, what Prometheus needs), or ``delta``/``lowmemory``.
OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: Final = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
QT_TELEMETRY_MODE: Final = "QT_TELEMETRY_MODE"
QT_TELEMETRY_METRICS_PORT: Final = "QT_TELEMETRY_METRICS_PORT"


class ConfigurationError(ValueError):
    """A setting has a value qt-telemetry cannot use; the message names the setting and the fix."""


def show(value: object) -> str:
    """``repr`` for error messages, safe with values whose ``__repr__`` raises (and short)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        return f"<unprintable {type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


# --- parsers: (raw value, setting name as the user wrote it) -> value, or ConfigurationError ------------

def _text(value: object, setting: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{setting}={show(value)}: expected a string")
    return value.strip()


def _choice(*choices: str) -> Callable[[object, str], str]:
    def parse(value: object, setting: str) -> str:
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in choices:
            raise ConfigurationError(f"{setting}={show(value)}: expected one of {', '.join(choices)}")
        return str(text)

    return parse


def _bool(value: object, setting: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{setting}={show(value)}: expected true or false")


def _number(low: float, high: float, *, low_open: bool = False) -> Callable[[object, str], float]:
    def parse(value: object, setting: str) -> float:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigurationError(f"{setting}={show(value)}: expected a number from {low:g} to {high:g}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigurationError(f"{setting}={show(value)}: expected a number from {low:g} to {high:g}") from None
        if not math.isfinite(number) or number > high or number < low or (low_open and number == low):
            bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
            raise ConfigurationError(f"{setting}={show(value)}: expected a number {bound} and at most {high:g}")
        return number

    return parse


def _int(low: int, high: int) -> Callable[[object, str], int]:
    def parse(value: object, setting: str) -> int:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ConfigurationError(f"{setting}={show(value)}: expected a whole number from {low} to {high}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ConfigurationError(f"{setting}={show(value)}: expected a whole number from {low} to {high}") from None
        if not low <= number <= high:
            raise ConfigurationError(f"{setting}={show(value)}: expected a whole number from {low} to {high}")
        return number

    return parse


def _words(value: object, setting: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [w.strip() for w in value.split(",")]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        raise ConfigurationError(f"{setting}={show(value)}: expected a comma-separated string or a list of strings")
    out = []
    for item in items:
        if not isinstance(item, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{2,64}", item.strip()):
            raise ConfigurationError(f"{setting}: {show(item)} is not a word of 2-64 letters, digits, '_', '.' or '-'")
        out.append(item.strip().lower())
    return tuple(out)


def _patterns(value: object, setting: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigurationError(f"{setting}={show(value)}: expected a regular expression or a list of them")
    for item in items:
        try:
            re.compile(item)
        except (re.error, TypeError) as exc:
            raise ConfigurationError(f"{setting}: {show(item)} is not a regular expression ({exc})") from None
    return tuple(items)


def _secret_values(value: object, setting: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigurationError(f"{setting}: expected a string or a list of strings")
    out = []
    for item in items:
        if item is None:
            continue
        if not isinstance(item, str):
            raise ConfigurationError(f"{setting}: expected strings, got a {type(item).__name__}")
        if len(item) >= 4:  # shorter values would redact ordinary text; they are refused by name instead
            out.append(item)
    return tuple(out)


def _mapping(value: object, setting: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{setting}={show(value)}: expected a mapping of strings to strings")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or not isinstance(item, str | bool | int | float):
            raise ConfigurationError(f"{setting}: {show(key)}: {show(item)} is not a name and a string value")
        out[key] = item if isinstance(item, str) else str(item)
    return out


def _headers(value: object, setting: str) -> dict[str, str]:
    headers = _mapping(value, setting)
    for key, item in headers.items():
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", key) or any(c in item for c in "\r\n\0"):
            raise ConfigurationError(f"{setting}: {show(key)} is not a valid HTTP header name and value")
    return headers


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One row of the settings table: the ``init()`` argument, its variables (first wins), default and parser."""

    name: str
    env: tuple[str, ...]
    default: T
    parse: Callable[[object, str], T]
    doc: str
    #: Environment values are in milliseconds (the OTel convention) while the argument is in seconds.
    env_millis: bool = False


SETTINGS: Final[tuple[Setting[Any], ...]] = (
    Setting("mode", ("QT_TELEMETRY_MODE",), "otlp", _choice("otlp", "local", "none"),
            "`otlp` (to a collector), `local` (Prometheus `/metrics` on loopback + console summary), `none`"),
    Setting("engine", ("QT_TELEMETRY_ENGINE",), "auto", _choice("auto", "process", "inline", "sdk"),
            "`process`: a separate exporter process (default); `inline`: the same conversion on a thread of this "
            "process; `sdk`: OTel SDK spans in-process (chosen automatically when you bring providers or processors)"),
    Setting("service_name", ("QT_TELEMETRY_SERVICE_NAME", "OTEL_SERVICE_NAME"), None, _text,
            "service name (the Prometheus `service_name` label)"),
    Setting("endpoint", ("QT_TELEMETRY_ENDPOINT",), None, _text,
            "base OTLP endpoint; else `OTEL_EXPORTER_OTLP_ENDPOINT` (and its `_TRACES_`/`_METRICS_` forms); default "
            "`http://localhost:4318` (HTTP) or `:4317` (gRPC)"),
    Setting("protocol", ("QT_TELEMETRY_PROTOCOL",), None, _choice("grpc", "http/protobuf"),
            "`http/protobuf` (default) or `grpc`; else `OTEL_EXPORTER_OTLP_PROTOCOL` (and per signal)"),
    Setting("headers", (), None, _headers, "OTLP headers; else `OTEL_EXPORTER_OTLP_HEADERS` (and per signal)"),
    Setting("resource_attributes", (), None, _mapping, "resource attributes, merged over `OTEL_RESOURCE_ATTRIBUTES`"),
    Setting("metric_export_interval", ("QT_TELEMETRY_METRIC_EXPORT_INTERVAL", "OTEL_METRIC_EXPORT_INTERVAL"), 10.0,
            _number(0.0, 86_400.0, low_open=True), "metric export interval: seconds (argument) or ms (variables)",
            env_millis=True),
    Setting("shutdown_timeout", ("QT_TELEMETRY_SHUTDOWN_TIMEOUT",), 2.0, _number(0.0, 600.0, low_open=True),
            "seconds `force_flush()`/`shutdown()` may take (the exporter process has its own bound)"),
    Setting("exporter_drain_timeout", ("QT_TELEMETRY_EXPORTER_DRAIN_TIMEOUT",), 10.0, _number(0.0, 600.0),
            "seconds the exporter process keeps exporting after the last trading process is gone"),
    Setting("metrics_host", ("QT_TELEMETRY_METRICS_HOST", "OTEL_EXPORTER_PROMETHEUS_HOST"), "127.0.0.1", _text,
            "local mode: address of `/metrics`"),
    Setting("metrics_port", ("QT_TELEMETRY_METRICS_PORT", "OTEL_EXPORTER_PROMETHEUS_PORT"), 9464, _int(0, 65535),
            "local mode: port of `/metrics` (0 = any free port)"),
    Setting("console", ("QT_TELEMETRY_CONSOLE",), None, _bool,
            "one summary line per finished trade on stderr; default on in local mode only"),
    Setting("max_label_values", ("QT_TELEMETRY_MAX_LABEL_VALUES",), 250, _int(1, 100_000),
            "distinct values per metric label before the rest report as `_other`"),
    Setting("log_correlation", ("QT_TELEMETRY_LOG_CORRELATION",), True, _bool,
            "add `trace_id`/`span_id` to every `logging` record (see Logs)"),
    Setting("gc_freeze", ("QT_TELEMETRY_GC_FREEZE",), True, _bool,
            "`init()` runs one `gc.collect()` then `gc.freeze()` (once per process), so later full collections skip "
            "what exists at start-up: no 10–20 ms gen-2 pauses in the trading loop (see Benchmarks)"),
    Setting("runtime_metrics", ("QT_TELEMETRY_RUNTIME_METRICS",), True, _bool,
            "CPU, memory, threads, file descriptors and GC (collections and pauses) of the bot and of its exporter "
            "process (`process.*`, `cpython.gc.*`, `qt.runtime.gc.duration`; with the `process` and `inline` "
            "engines)"),
    Setting("slow_order_seconds", ("QT_TELEMETRY_SLOW_ORDER_SECONDS",), 0.5, _number(0.0, 3600.0),
            "an order slower than this keeps its trace under tail sampling (`qt.sampling.keep`)"),
    Setting("trace_keep_ratio", ("QT_TELEMETRY_TRACE_KEEP_RATIO",), 1.0, _number(0.0, 1.0),
            "share of healthy traces marked to keep under tail sampling (by trace id, consistent everywhere)"),
    Setting("native_histograms", ("QT_TELEMETRY_NATIVE_HISTOGRAMS",), False, _bool,
            "order latency and stage durations as exponential histograms (Prometheus native histograms)"),
    Setting("secret_keys", ("QT_TELEMETRY_SECRET_KEYS",), (), _words,
            "extra words that make an attribute name (or a `name=value` pair in text) secret"),
    Setting("secret_patterns", (), (), _patterns, "extra regular expressions whose matches are redacted"),
    Setting("secret_values", (), (), _secret_values, "exact values (API keys) redacted wherever they appear"),
)
SETTINGS_BY_NAME: Final = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class SignalExport:
    """Where and how one signal (traces or metrics) is exported over OTLP."""

    protocol: Protocol
    #: The exporter's ``endpoint`` argument, or None to let the exporter read the OTEL_* variables.
    endpoint: str | None
    #: The endpoint actually used (for messages and ``doctor``).
    effective_endpoint: str
    enabled: bool = True
    #: ``OTEL_{TRACES,METRICS}_EXPORTER`` names ``console``: the SDK's console exporter prints to stdout.
    console: bool = False


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :func:`resolve`; it crosses to the exporter process as JSON."""

    disabled: bool
    mode: Mode
    engine: Engine
    service_name: str | None
    resource_attributes: Mapping[str, str]
    traces: SignalExport
    metrics: SignalExport
    headers: Mapping[str, str] | None
    metric_export_interval_s: float
    shutdown_timeout_s: float
    exporter_drain_timeout_s: float
    metrics_host: str
    metrics_port: int
    console: bool
    max_label_values: int
    log_correlation: bool
    gc_freeze: bool
    slow_order_seconds: float
    trace_keep_ratio: float
    native_histograms: bool
    secret_keys: tuple[str, ...]
    secret_patterns: tuple[str, ...]
    secret_values: tuple[str, ...] = field(repr=False)
    batch: BatchSettings = field(default_factory=lambda: BatchSettings())
    runtime_metrics: bool = True
    #: ``OTEL_METRICS_EXEMPLAR_FILTER``, lowercased (the SDK itself accepts lowercase only).
    exemplar_filter: str = "trace_based"
    #: ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``, lowercased.
    metrics_temporality: str = "cumulative"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        raw = json.loads(text)
        raw["traces"] = SignalExport(**raw["traces"])
        raw["metrics"] = SignalExport(**raw["metrics"])
        raw["batch"] = BatchSettings(**raw["batch"])
        for key in ("secret_keys", "secret_patterns", "secret_values"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


@dataclass(frozen=True)
class BatchSettings:
    """Span batching in the exporter (``OTEL_BSP_*``, validated with the SDK's own ranges)."""

    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    schedule_delay_s: float = 5.0
    export_timeout_s: float = 30.0


def resolve(environ: Mapping[str, str] | None = None, **arguments: Any) -> Settings:
    """Resolve every setting from arguments, then the environment, then defaults; validate each."""
    env = dict(os.environ if environ is None else environ)
    unknown = set(arguments) - set(SETTINGS_BY_NAME)
    if unknown:
        raise ConfigurationError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        values[setting.name], sources[setting.name] = _resolve_one(setting, arguments.get(setting.name), env)

    disabled = _bool(env.get(OTEL_SDK_DISABLED, "").strip() or "false", OTEL_SDK_DISABLED)
    mode = values["mode"]
    traces = _signal("traces", values, sources["endpoint"], env)
    metrics = _signal("metrics", values, sources["endpoint"], env)
    traces, metrics = _apply_exporter_selection(traces, metrics, env)
    if mode == "otlp":
        _check_otlp_variables(env, traces, metrics)
        _check_grpc_installed(traces, metrics, sources["protocol"] if values["protocol"] else None, env)
    _check_sdk_variables(env)
    console = values["console"] if values["console"] is not None else mode == "local"
    return Settings(
        disabled=disabled, mode=mode, engine=values["engine"], service_name=values["service_name"] or None,
        resource_attributes=values["resource_attributes"] or {}, traces=traces, metrics=metrics,
        headers=values["headers"], metric_export_interval_s=values["metric_export_interval"],
        shutdown_timeout_s=values["shutdown_timeout"], exporter_drain_timeout_s=values["exporter_drain_timeout"],
        metrics_host=values["metrics_host"] or "127.0.0.1",
        metrics_port=values["metrics_port"], console=console, max_label_values=values["max_label_values"],
        log_correlation=values["log_correlation"], gc_freeze=values["gc_freeze"],
        slow_order_seconds=values["slow_order_seconds"],
        trace_keep_ratio=values["trace_keep_ratio"], native_histograms=values["native_histograms"],
        secret_keys=values["secret_keys"], secret_patterns=values["secret_patterns"],
        secret_values=values["secret_values"], batch=_batch_settings(env), runtime_metrics=values["runtime_metrics"],
        exemplar_filter=_metrics_choice(env, OTEL_METRICS_EXEMPLAR_FILTER, "trace_based", "always_on", "always_off"),
        metrics_temporality=_metrics_choice(env, OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, "cumulative",
                                            "delta", "lowmemory"),
    )


def _metrics_choice(env: Mapping[str, str], name: str, default: str, *others: str) -> str:
    raw = env.get(name, "").strip()
    return _choice(default, *others)(raw, name) if raw else default


def _resolve_one(setting: Setting[Any], argument: object, env: Mapping[str, str]) -> tuple[Any, str]:
    """The value and where it came from (the argument's or the variable's name, as error messages say it)."""
    if argument is not None:
        return setting.parse(argument, setting.name), setting.name
    for name in setting.env:
        raw = env.get(name, "").strip()
        if raw:
            value = setting.parse(raw, name)
            return (value / 1000.0 if setting.env_millis else value), name
    return setting.default, setting.name


# --- OTLP endpoints and protocols per signal -----------------------------------------------------------

def _signal(signal: str, values: Mapping[str, Any], endpoint_source: str, env: Mapping[str, str]) -> SignalExport:
    upper = signal.upper()
    proto = values["protocol"]
    if proto is None:
        proto = "http/protobuf"
        for name in (f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL", OTEL_EXPORTER_OTLP_PROTOCOL):
            raw = env.get(name, "").strip()
            if raw:
                if raw.lower() == "http/json":
                    raise ConfigurationError(f"{name}='http/json' is not supported by the Python OTLP exporters; "
                                             "use 'http/protobuf' or 'grpc'")
                proto = _choice("grpc", "http/protobuf")(raw, name)
                break
    grpc = proto == "grpc"
    if values["endpoint"] is not None:  # our own base endpoint: we compute the per-signal URL ourselves
        url = check_endpoint(values["endpoint"], endpoint_source, grpc)
        if not grpc and signal == "traces":
            _warn_signal_path(url, endpoint_source)
        endpoint = url if grpc else url.rstrip("/") + _SIGNAL_PATHS[signal]
        return SignalExport(proto, endpoint, endpoint)
    specific = env.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT", "").strip()
    general = env.get(OTEL_EXPORTER_OTLP_ENDPOINT, "").strip()
    if specific:
        effective = check_endpoint(specific, f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT", grpc)
    elif general:
        url = check_endpoint(general, OTEL_EXPORTER_OTLP_ENDPOINT, grpc)
        if not grpc and signal == "traces":
            _warn_signal_path(url, OTEL_EXPORTER_OTLP_ENDPOINT)
        effective = url if grpc else url.rstrip("/") + _SIGNAL_PATHS[signal]
    else:
        effective = DEFAULT_GRPC_ENDPOINT if grpc else DEFAULT_HTTP_ENDPOINT + _SIGNAL_PATHS[signal]
        return SignalExport(proto, effective, effective)
    # Let the exporter read the OTEL_* variables itself, so every standard rule keeps applying.
    return SignalExport(proto, None, effective)


def _warn_signal_path(url: str, setting: str) -> None:
    """A base endpoint that already names a signal's path: the spec appends ``/v1/traces`` to it again."""
    path = urlsplit(url).path.rstrip("/")
    for known in _SIGNAL_PATHS.values():
        if path.endswith(known):
            base = url.rstrip("/")[: -len(known)] or url
            warnings.warn(
                f"{setting}={url!r} already ends in {known}: it is a base URL, to which OTLP/HTTP appends "
                f"/v1/traces and /v1/metrics (giving {path}/v1/traces, as the OpenTelemetry spec says), so the "
                f"collector will answer 404; set it to {base!r}, or give a full URL per signal with "
                f"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                RuntimeWarning, stacklevel=5)  # the caller of init()
            return


_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}"
                   r"[A-Za-z0-9])?)*\.?$")


def check_endpoint(value: str, setting: str, grpc: bool = False) -> str:
    """An OTLP endpoint URL (or, for gRPC, a bare ``host:port``), or ConfigurationError naming ``setting``."""
    bad = ConfigurationError(f"{setting}={show(value)} is not an OTLP endpoint URL: expected e.g. "
                             "'http://localhost:4318' (HTTP) or 'http://localhost:4317' (gRPC)")
    if grpc and "://" not in value:  # the gRPC exporter also takes a bare host:port
        host, _, port_text = value.rpartition(":")
        if host and _valid_host(host) and port_text.isdigit() and 0 < int(port_text) < 65536:
            return value
        raise bad
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"{setting}={show(value)} has an invalid host or port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not _valid_host(parts.hostname):
        raise bad
    if port is not None and not 0 < port < 65536:
        raise ConfigurationError(f"{setting}={show(value)} has an invalid port")
    return value


def _valid_host(host: str) -> bool:
    host = host.strip("[]")
    if ":" in host:  # IPv6 literal
        return bool(re.fullmatch(r"[0-9A-Fa-f:.]+", host))
    return bool(_HOST.match(host))


def _apply_exporter_selection(traces: SignalExport, metrics: SignalExport,
                              env: Mapping[str, str]) -> tuple[SignalExport, SignalExport]:
    """``OTEL_{TRACES,METRICS}_EXPORTER``: a comma-separated list of ``otlp`` and ``console``, or ``none``."""
    out = []
    for sig, name in ((traces, OTEL_TRACES_EXPORTER), (metrics, OTEL_METRICS_EXPORTER)):
        raw = env.get(name, "").strip().lower()
        chosen = {v.strip() for v in raw.split(",") if v.strip()} or {"otlp"}
        if not chosen <= {"otlp", "console", "none"} or ("none" in chosen and len(chosen) > 1):
            raise ConfigurationError(f"{name}={show(raw)}: qt-telemetry supports 'otlp', 'console' (the SDK's "
                                     f"console exporter, on stdout), both ('otlp,console') or 'none'; for a "
                                     f"collector-less setup with a /metrics endpoint use {QT_TELEMETRY_MODE}=local")
        out.append(SignalExport(sig.protocol, sig.endpoint, sig.effective_endpoint, enabled="otlp" in chosen,
                                console="console" in chosen))
    return out[0], out[1]


GRPC_EXPORTER_MODULE: Final = "opentelemetry.exporter.otlp.proto.grpc"


def _check_grpc_installed(traces: SignalExport, metrics: SignalExport, protocol_source: str | None,
                          env: Mapping[str, str]) -> None:
    """gRPC is an extra (grpcio is large): selecting it without the extra fails here, naming the setting."""
    wanted = [(s, n) for s, n in ((traces, "TRACES"), (metrics, "METRICS")) if s.enabled and s.protocol == "grpc"]
    if not wanted:
        return
    try:
        found = importlib.util.find_spec(GRPC_EXPORTER_MODULE) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return
    variables = (f"OTEL_EXPORTER_OTLP_{wanted[0][1]}_PROTOCOL", OTEL_EXPORTER_OTLP_PROTOCOL)
    # not our argument or variable: the standard variable that chose gRPC
    setting = protocol_source or next((v for v in variables if env.get(v, "").strip()), OTEL_EXPORTER_OTLP_PROTOCOL)
    raise ConfigurationError(f"{setting}='grpc': the OTLP/gRPC exporter is not installed; install the grpc extra "
                             "(`pip install -e '.[grpc]'` in the qt-telemetry checkout) or use the default, "
                             "'http/protobuf'")


# --- the standard variables the exporters read themselves ----------------------------------------------

def _check_otlp_variables(env: Mapping[str, str], traces: SignalExport, metrics: SignalExport) -> None:
    for signal in ("", "TRACES_", "METRICS_"):
        timeout = f"OTEL_EXPORTER_OTLP_{signal}TIMEOUT"
        if env.get(timeout, "").strip():
            _number(0.0, 3600.0, low_open=True)(env[timeout].strip(), timeout)
        compression = f"OTEL_EXPORTER_OTLP_{signal}COMPRESSION"
        if env.get(compression, "").strip():
            _choice("gzip", "deflate", "none")(env[compression], compression)
        headers = f"OTEL_EXPORTER_OTLP_{signal}HEADERS"
        if env.get(headers, "").strip():
            _check_header_variable(env[headers], headers)
        for file_kind in ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"):
            name = f"OTEL_EXPORTER_OTLP_{signal}{file_kind}"
            path = env.get(name, "").strip()
            if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                raise ConfigurationError(
                    f"{name}={show(path)}: no readable file there (a TLS {file_kind.lower()} in PEM)")
    insecure = env.get("OTEL_EXPORTER_OTLP_INSECURE", "").strip()
    if insecure:
        _bool(insecure, "OTEL_EXPORTER_OTLP_INSECURE")
    del traces, metrics


def _check_header_variable(value: str, setting: str) -> None:
    for item in value.split(","):
        if not item.strip():
            continue
        name, sep, _ = item.partition("=")
        if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", unquote(name).strip()):
            raise ConfigurationError(f"{setting}: {item.strip()[:40]!r} is not 'name=value' (URL-encoded, "
                                     "comma-separated)")


_SAMPLERS: Final = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
                    "parentbased_traceidratio")
_PROPAGATORS: Final = ("tracecontext", "baggage", "none")


def _check_sdk_variables(env: Mapping[str, str]) -> None:
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in _SAMPLERS and sampler not in _entry_points("opentelemetry_traces_sampler"):
        raise ConfigurationError(f"OTEL_TRACES_SAMPLER={show(sampler)}: expected one of {', '.join(_SAMPLERS)} "
                                 "or an installed sampler entry point")
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if arg and sampler.endswith("traceidratio"):
        _number(0.0, 1.0)(arg, "OTEL_TRACES_SAMPLER_ARG")
    propagators = env.get("OTEL_PROPAGATORS", "").strip()
    if propagators:
        known = set(_PROPAGATORS) | _entry_points("opentelemetry_propagator")
        for name in (p.strip().lower() for p in propagators.split(",")):
            if name and name not in known:
                raise ConfigurationError(f"OTEL_PROPAGATORS: {show(name)} is not an installed propagator "
                                         f"(installed: {', '.join(sorted(known))})")


def _entry_points(group: str) -> set[str]:
    try:
        return {ep.name.lower() for ep in metadata.entry_points(group=group)}
    except Exception:  # noqa: BLE001 - a broken distribution must not break configuration
        return set()


def _batch_settings(env: Mapping[str, str]) -> BatchSettings:
    def read(name: str, parse: Callable[[object, str], float], default: float) -> float:
        raw = env.get(name, "").strip()
        return parse(raw, name) if raw else default

    queue = int(read("OTEL_BSP_MAX_QUEUE_SIZE", _int(1, 10_000_000), 2048))
    batch = int(read("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _int(1, 10_000_000), 512))
    if batch > queue:
        raise ConfigurationError(f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch} must not exceed "
                                 f"OTEL_BSP_MAX_QUEUE_SIZE={queue}")
    delay = read("OTEL_BSP_SCHEDULE_DELAY", _number(0.0, 86_400_000.0), 5000.0) / 1000.0
    timeout = read("OTEL_BSP_EXPORT_TIMEOUT", _number(0.0, 86_400_000.0, low_open=True), 30000.0) / 1000.0
    return BatchSettings(queue, batch, delay, timeout)


def settings_table() -> str:
    """The README's configuration table, generated from :data:`SETTINGS` (a test keeps them equal)."""
    rows = ["| `init()` argument | variables (first wins) | default | what |", "|---|---|---|---|"]
    for s in SETTINGS:
        env = ", ".join(f"`{e}`" for e in s.env) or "—"
        default = "—" if s.default in (None, ()) else f"`{s.default}`"
        rows.append(f"| `{s.name}` | {env} | {default} | {s.doc} |")
    return "\n".join(rows) + "\n"
