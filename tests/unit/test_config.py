"""Settings precedence: argument > QT_TELEMETRY_* > OTEL_* > default; bad values fail at init with the setting named."""

from __future__ import annotations

import pytest

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
