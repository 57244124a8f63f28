"""Settings precedence: argument > QT_TELEMETRY_* > OTEL_* > default; bad values fail at init with the setting named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace

import qt_telemetry as qt
from qt_telemetry._config import ConfigurationError, resolve


def test_defaults_export_otlp_http_to_the_local_collector() -> None:
    s = resolve(environ={})
    assert s.mode == "otlp"
    assert s.traces.protocol == "http/protobuf"
    assert s.traces.effective_endpoint == "http://localhost:4318/v1/traces"
    assert s.metrics.effective_endpoint == "http://localhost:4318/v1/metrics"
    assert s.metric_export_interval_s == 10.0
    assert s.shutdown_timeout_s == 2.0
    assert (s.metrics_host, s.metrics_port) == ("127.0.0.1", 9464)
    assert s.console is False and s.disabled is False


def test_standard_otel_variables_are_honoured() -> None:
    s = resolve(environ={
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_METRIC_EXPORT_INTERVAL": "2500",
        "OTEL_EXPORTER_PROMETHEUS_PORT": "9999",
    })
    assert s.traces.protocol == "grpc" and s.metrics.protocol == "grpc"
    assert s.traces.effective_endpoint == "http://collector:4317"
    assert s.traces.endpoint is None  # left to the exporter, so every OTEL_* rule keeps applying
    assert s.metric_export_interval_s == 2.5
    assert s.metrics_port == 9999


def test_signal_specific_endpoint_and_protocol_win_over_the_general_ones() -> None:
    s = resolve(environ={
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/custom/traces",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
    })
    assert s.traces.effective_endpoint == "http://b:4318/custom/traces"
    assert s.metrics.protocol == "grpc" and s.traces.protocol == "http/protobuf"


def test_qt_variables_override_otel_variables() -> None:
    s = resolve(environ={
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318",
        "QT_TELEMETRY_ENDPOINT": "http://qt:4318",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
        "QT_TELEMETRY_METRIC_EXPORT_INTERVAL": "1000",
        "QT_TELEMETRY_SERVICE_NAME": "qt-bot",
        "OTEL_SERVICE_NAME": "otel-bot",
    })
    assert s.traces.endpoint == "http://qt:4318/v1/traces"
    assert s.metrics.endpoint == "http://qt:4318/v1/metrics"
    assert s.metric_export_interval_s == 1.0
    assert s.service_name == "qt-bot"


def test_arguments_override_everything() -> None:
    s = resolve(endpoint="http://arg:4317", protocol="grpc", metric_export_interval=0.5, mode="local",
                environ={"QT_TELEMETRY_ENDPOINT": "http://qt:4318", "QT_TELEMETRY_MODE": "none",
                         "QT_TELEMETRY_METRIC_EXPORT_INTERVAL": "9000"})
    assert s.traces.endpoint == "http://arg:4317"
    assert s.metric_export_interval_s == 0.5  # the argument is in seconds
    assert s.mode == "local" and s.console is True  # local mode prints the trace summary by default


def test_otel_sdk_disabled_and_exporter_none() -> None:
    s = resolve(environ={"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "none"})
    assert s.disabled is True
    assert s.traces.enabled is False and s.metrics.enabled is True


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://collector:21"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"QT_TELEMETRY_ENDPOINT": "http://collector:99999"}, "QT_TELEMETRY_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "soon"}, "OTEL_METRIC_EXPORT_INTERVAL"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "-5"}, "OTEL_METRIC_EXPORT_INTERVAL"),
        ({"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED"),
        ({"QT_TELEMETRY_MODE": "cloud"}, "QT_TELEMETRY_MODE"),
        ({"QT_TELEMETRY_METRICS_PORT": "70000"}, "QT_TELEMETRY_METRICS_PORT"),
        ({"QT_TELEMETRY_SHUTDOWN_TIMEOUT": "0"}, "QT_TELEMETRY_SHUTDOWN_TIMEOUT"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"QT_TELEMETRY_CONSOLE": "loud"}, "QT_TELEMETRY_CONSOLE"),
    ],
)
def test_bad_values_raise_a_configuration_error_naming_the_setting(environ: dict, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        resolve(environ=environ)


def test_grpc_accepts_a_bare_host_and_port_but_http_needs_a_url() -> None:
    s = resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert s.traces.effective_endpoint == "collector:4317"
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318'"):
        resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})
    with pytest.raises(ConfigurationError):
        resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:notaport", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_bad_argument_is_named_as_the_argument() -> None:
    with pytest.raises(ConfigurationError, match="endpoint='collector:4317'"):
        resolve(endpoint="collector:4317", environ={})


# --- a table of bad configurations: each is an error at init(), naming the setting -------------------------

_PEM = "-----BEGIN CERTIFICATE-----\n"
BAD_ENVIRONMENTS = [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://coll ector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://:4318/v1/traces"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector 4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_BSP_SCHEDULE_DELAY": "-1"}, "OTEL_BSP_SCHEDULE_DELAY"),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "200"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    ({"OTEL_BSP_EXPORT_TIMEOUT": "soon"}, "OTEL_BSP_EXPORT_TIMEOUT"),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "-5"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
    ({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "nan"}, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
    ({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"}, "OTEL_EXPORTER_OTLP_CERTIFICATE"),
    ({"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/nonexistent/client.pem"}, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
    ({"OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY": "/nonexistent/key.pem", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "no-equals-sign"}, "OTEL_EXPORTER_OTLP_HEADERS"),
    ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zip"}, "OTEL_EXPORTER_OTLP_COMPRESSION"),
    ({"OTEL_EXPORTER_OTLP_INSECURE": "perhaps"}, "OTEL_EXPORTER_OTLP_INSECURE"),
    ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_PROPAGATORS": "tracecontext,bogus"}, "OTEL_PROPAGATORS"),
    ({"OTEL_METRICS_EXEMPLAR_FILTER": "most"}, "OTEL_METRICS_EXEMPLAR_FILTER"),
    ({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "sideways"},
     "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"),
    ({"QT_TELEMETRY_SHUTDOWN_TIMEOUT": "1e10"}, "QT_TELEMETRY_SHUTDOWN_TIMEOUT"),
    ({"OTEL_METRIC_EXPORT_INTERVAL": "1e16"}, "OTEL_METRIC_EXPORT_INTERVAL"),
    ({"QT_TELEMETRY_ENGINE": "warp"}, "QT_TELEMETRY_ENGINE"),
    ({"QT_TELEMETRY_TRACE_KEEP_RATIO": "1.5"}, "QT_TELEMETRY_TRACE_KEEP_RATIO"),
    ({"QT_TELEMETRY_SLOW_ORDER_SECONDS": "-1"}, "QT_TELEMETRY_SLOW_ORDER_SECONDS"),
    ({"QT_TELEMETRY_NATIVE_HISTOGRAMS": "kinda"}, "QT_TELEMETRY_NATIVE_HISTOGRAMS"),
    ({"QT_TELEMETRY_SECRET_KEYS": "ok,not a word"}, "QT_TELEMETRY_SECRET_KEYS"),
    ({"QT_TELEMETRY_LOG_CORRELATION": "2"}, "QT_TELEMETRY_LOG_CORRELATION"),
    ({"QT_TELEMETRY_MAX_LABEL_VALUES": "0"}, "QT_TELEMETRY_MAX_LABEL_VALUES"),
    ({"QT_TELEMETRY_EXPORTER_DRAIN_TIMEOUT": "-3"}, "QT_TELEMETRY_EXPORTER_DRAIN_TIMEOUT"),
]

BAD_ARGUMENTS = [
    ({"protocol": 5}, "protocol"),
    ({"headers": "a=b"}, "headers"),
    ({"headers": {"bad header": "x"}}, "headers"),
    ({"headers": {"x": "line\nbreak"}}, "headers"),
    ({"resource_attributes": "abc"}, "resource_attributes"),
    ({"resource_attributes": {"k": object()}}, "resource_attributes"),
    ({"span_processors": 5}, "span_processors"),
    ({"span_processors": [object()]}, "span_processors"),
    ({"metric_readers": [object()]}, "metric_readers"),
    ({"metric_export_interval": float("nan")}, "metric_export_interval"),
    ({"metric_export_interval": True}, "metric_export_interval"),
    ({"shutdown_timeout": -1}, "shutdown_timeout"),
    ({"metrics_port": 70_000}, "metrics_port"),
    ({"mode": "cloud"}, "mode"),
    ({"service_name": 7}, "service_name"),
    ({"endpoint": "http://[::1"}, "endpoint"),
    ({"secret_patterns": ["("]}, "secret_patterns"),
    ({"secret_values": [7]}, "secret_values"),
    ({"trace_keep_ratio": "all"}, "trace_keep_ratio"),
    ({"console": "loud"}, "console"),
]


@pytest.mark.usefixtures("clean_globals")
@pytest.mark.parametrize(("environ", "named"), BAD_ENVIRONMENTS)
def test_a_bad_variable_fails_init_naming_it_and_installs_nothing(monkeypatch: pytest.MonkeyPatch,
                                                                   environ: dict[str, str], named: str) -> None:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match=named):
        qt.init()
    assert qt.current() is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@pytest.mark.usefixtures("clean_globals")
@pytest.mark.parametrize(("arguments", "named"), BAD_ARGUMENTS)
def test_a_bad_argument_fails_init_naming_it_and_installs_nothing(arguments: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        qt.init(**arguments)  # type: ignore[arg-type]
    assert qt.current() is None


def test_importing_the_package_never_raises_whatever_the_environment() -> None:
    env = {**os.environ, "OTEL_PROPAGATORS": "bogus", "OTEL_TRACES_SAMPLER": "nonsense",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1", "QT_TELEMETRY_MODE": "cloud"}
    proc = subprocess.run([sys.executable, "-c", "import qt_telemetry as qt; print(qt.inject({'a': 'b'}))"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'a': 'b'}"


@pytest.mark.usefixtures("clean_globals")
def test_a_valid_tls_setup_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(_PEM)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(ca))
    assert resolve().traces.protocol == "http/protobuf"


# --- the OpenTelemetry ecosystem's habits -----------------------------------------------------------------

@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"])
def test_grpc_without_its_extra_is_an_error_naming_the_variable_and_the_extra(
        variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from qt_telemetry import _config

    monkeypatch.setattr(_config, "GRPC_EXPORTER_MODULE", "qt_telemetry_no_such_grpc_exporter")
    with pytest.raises(ConfigurationError, match=rf"{variable}='grpc'.*grpc extra.*pip install -e '\.\[grpc\]'"):
        resolve(environ={variable: "grpc"})
    with pytest.raises(ConfigurationError, match=r"^protocol='grpc'.*grpc extra"):
        resolve(environ={}, protocol="grpc")
    assert resolve(environ={variable: "grpc", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"})


def test_http_is_the_default_and_needs_no_grpc_module() -> None:
    code = ("import sys, qt_telemetry as qt; qt.init(endpoint='http://127.0.0.1:9', engine='inline'); qt.shutdown();"
            "print(sorted(m for m in sys.modules if 'grpc' in m))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("setting", ["OTEL_EXPORTER_OTLP_ENDPOINT", "QT_TELEMETRY_ENDPOINT"])
def test_a_base_endpoint_that_already_ends_in_a_signal_path_warns_with_the_fix(setting: str) -> None:
    with pytest.warns(RuntimeWarning, match=rf"{setting}='http://c:4318/v1/traces' already ends in /v1/traces.*"
                                            r"/v1/traces/v1/traces.*'http://c:4318'"):
        s = resolve(environ={setting: "http://c:4318/v1/traces"})
    assert s.traces.effective_endpoint == "http://c:4318/v1/traces/v1/traces"  # as the spec says: we only warn


def test_a_full_signal_endpoint_does_not_warn() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve(environ={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
        resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/otlp"})


@pytest.mark.parametrize(("value", "otlp", "console"), [("console", False, True), ("otlp,console", True, True),
                                                       ("none", False, False), ("otlp", True, False)])
def test_the_exporter_variables_take_console_otlp_or_none(value: str, otlp: bool, console: bool) -> None:
    s = resolve(environ={"OTEL_TRACES_EXPORTER": value, "OTEL_METRICS_EXPORTER": value})
    for signal in (s.traces, s.metrics):
        assert (signal.enabled, signal.console) == (otlp, console)
    with pytest.raises(ConfigurationError, match="OTEL_TRACES_EXPORTER='none,console'"):
        resolve(environ={"OTEL_TRACES_EXPORTER": "none,console"})


CONSOLE_BOT = """
import qt_telemetry as qt
info = qt.init(metric_export_interval=60)
@qt.traced_order(venue="binance")
def place_order(symbol, side, quantity):
    return None
place_order("BTCUSDT", "buy", 1)
print("engine:", info.engine, flush=True)
qt.shutdown(5)
"""


def test_console_exporters_print_our_spans_and_metrics_from_the_bot_itself() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    proc = subprocess.run([sys.executable, "-c", CONSOLE_BOT], capture_output=True, text=True, timeout=60, check=False,
                          env={**env, "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"})
    assert proc.returncode == 0, proc.stderr
    assert "engine: inline" in proc.stdout
    assert '"name": "qt.order.place"' in proc.stdout  # ConsoleSpanExporter's JSON
    assert '"name": "qt.order.latency"' in proc.stdout and '"unit": "s"' in proc.stdout  # ConsoleMetricExporter
