"""``init()`` once at startup, ``shutdown()`` (or just exiting) at the end, ``force_flush()`` when you must know.

``init()`` validates every setting, picks the engine (see :mod:`qt_telemetry._engine`), installs what the rest
of the process needs (a tracer provider for other instrumentation, log correlation, exit and fork handlers) and
returns at once: the exporter process starts in the background. Exiting never waits on the network: what is
recorded is handed to the exporter, which exports it after the trading process is gone.
"""

from __future__ import annotations

import atexit
import errno
import gc
import json
import logging
import math
import os
import secrets
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from qt_telemetry import _config, logs
from qt_telemetry._config import ConfigurationError, Settings, show
from qt_telemetry._engine.recorder import runtime_metrics
from qt_telemetry._engine.recorder.engines import Engine, QueuedEngine, RecordEngine, RecordingProcessor, error_counter
from qt_telemetry._engine.recorder.outbox import Outbox
from qt_telemetry._engine.recorder.safety import telemetry_error
from qt_telemetry._engine.recorder.sampling import HeadSampler
from qt_telemetry._engine.recorder.state import INHERIT_VARIABLE, STATE
from qt_telemetry._engine.resource import base_resource
from qt_telemetry._engine.transport import family
from qt_telemetry._engine.transport.channel import ProcessChannel, release_exporters
from qt_telemetry._engine.transport.records import GAUGE
from qt_telemetry._values import current_number, finite

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader

_log = logging.getLogger("qt_telemetry")
_EXIT_BUDGET_S = 0.15


@dataclass(frozen=True)
class TelemetryInfo:
    """What ``init()`` set up: useful for logs, the demo's banner and ``doctor``."""

    mode: str
    service_name: str
    traces_endpoint: str | None
    metrics_endpoint: str | None
    metrics_url: str | None
    owns_providers: bool
    engine: str = "process"


@dataclass
class Installed:
    info: TelemetryInfo
    settings: Settings
    engine: Engine
    close: Callable[[float], bool]  # bounded shutdown of what init() created
    flush: Callable[[float], bool]
    #: Set up by ``opentelemetry-instrument`` (our configurator) from the environment alone: the bot's own
    #: ``init()`` with explicit arguments replaces it instead of being ignored.
    launcher: bool = False


#: How long replacing the launcher's setup may take: it holds the records of the first instants at most.
_REPLACE_BUDGET_S = 0.5


def init(
    *,
    mode: str | None = None,
    engine: str | None = None,
    service_name: str | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    metric_export_interval: float | None = None,
    shutdown_timeout: float | None = None,
    exporter_drain_timeout: float | None = None,
    metrics_host: str | None = None,
    metrics_port: int | None = None,
    console: bool | None = None,
    max_label_values: int | None = None,
    log_correlation: bool | None = None,
    slow_order_seconds: float | None = None,
    trace_keep_ratio: float | None = None,
    native_histograms: bool | None = None,
    secret_keys: Sequence[str] | None = None,
    secret_patterns: Sequence[str] | None = None,
    secret_values: Sequence[str] | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> TelemetryInfo | None:
    """Set up tracing and metrics once, at startup.

    Every option defaults to "look it up": the argument, then ``QT_TELEMETRY_*``, then the standard ``OTEL_*``
    variable, then the default (OTLP/HTTP to ``http://localhost:4318``). ``mode="local"`` needs no collector:
    Prometheus ``/metrics`` on 127.0.0.1 plus a console trace summary. A provider that is already installed (e.g.
    by ``opentelemetry-instrument``) is used as it is; ``span_processors`` are added to it.

    Returns what was set up, or None when ``OTEL_SDK_DISABLED=true``. Raises :class:`ConfigurationError` for an
    invalid setting, naming it. A second call warns and keeps the first setup, except the setup
    ``opentelemetry-instrument`` made with our distro: arguments that change it replace it.
    """
    arguments = {k: v for k, v in locals().items() if k not in ("span_processors", "metric_readers")}
    settings = _config.resolve(**{k: v for k, v in arguments.items() if v is not None})
    processors = _checked_sequence(span_processors, "span_processors", SpanProcessor)
    readers = _checked_sequence(metric_readers, "metric_readers", _metric_reader_class()) if metric_readers else []
    with STATE.lock:
        previous: Installed | None = STATE.installed
        if previous is not None:
            if not previous.launcher:
                warnings.warn("qt_telemetry.init() was already called; keeping the first setup", RuntimeWarning,
                              stacklevel=2)
                return previous.info
            if settings == previous.settings and not processors and not readers:
                return previous.info  # the launcher already set up exactly this
            # The launcher set us up from the environment before the bot ran; the bot's own arguments win.
            STATE.installed, STATE.engine = None, None
            previous.close(_REPLACE_BUDGET_S)
        if settings.disabled:
            _log.info("OTEL_SDK_DISABLED is set: qt-telemetry records nothing")
            return None
        installed = _install(settings, processors, readers)
        STATE.installed = installed
        STATE.engine = installed.engine
    _activate(installed)
    if settings.service_name and installed.info.service_name != settings.service_name:
        warnings.warn(f"service_name={settings.service_name!r} is not applied: the providers installed before "
                      f"init() export as service.name={installed.info.service_name!r}; set OTEL_SERVICE_NAME for "
                      f"them, or run qt-telemetry's own distro (OTEL_PYTHON_DISTRO=qt_telemetry)", RuntimeWarning,
                      stacklevel=2)
    return installed.info


def init_from_launcher() -> TelemetryInfo | None:
    """What ``opentelemetry-instrument`` runs (our configurator): ``init()`` from the environment alone, before
    the bot's code. A configuration error is one clear log line here (the launcher would print two tracebacks and
    then skip every instrumentation); the bot's own ``init()`` raises it again where it is called."""
    try:
        settings = _config.resolve()
    except ConfigurationError as exc:
        _log.error("qt-telemetry (opentelemetry-instrument): configuration error, telemetry is off: %s", exc)
        return None
    with STATE.lock:
        if STATE.installed is not None or settings.disabled:
            return current()
        installed = _install(settings, [], [])
        installed.launcher = True
        STATE.installed = installed
        STATE.engine = installed.engine
    _activate(installed)
    return installed.info


def _activate(installed: Installed) -> None:
    """After an install: counted errors, state gauges, log ids and the exit hook follow the new engine."""
    if installed.settings.runtime_metrics and installed.engine.name in ("process", "inline"):
        runtime_metrics.report()  # with providers of your own (sdk), opentelemetry-instrumentation-system-metrics
    STATE.error_sink = error_counter(installed.engine)
    installed.engine.send_board(STATE.board)
    if installed.settings.log_correlation:
        logs.install()
    _register_exit()
    _log.info("qt-telemetry initialised: %s", installed.info)


def force_flush(timeout: float | None = None) -> bool:
    """Export everything recorded so far and wait (at most ``timeout`` s) for the collector to take it."""
    installed = STATE.installed
    if installed is None:
        return True
    return bool(installed.flush(_budget(timeout, installed.settings)))


def shutdown(timeout: float | None = None) -> bool:
    """Hand everything recorded to the exporter and stop; bounded by ``timeout`` (default 2 s), collector up or
    down. The exporter process finishes the export after this process exits. True when nothing was dropped.
    Safe to call twice; calls after it record nothing."""
    with STATE.lock:
        installed, STATE.installed = STATE.installed, None
        if installed is not None:
            STATE.engine = None
    if installed is None:
        return True
    STATE.error_sink = None
    logs.uninstall()
    os.environ.pop(INHERIT_VARIABLE, None)
    return bool(installed.close(_budget(timeout, installed.settings)))


def current() -> TelemetryInfo | None:
    """What the active ``init()`` set up, or None."""
    installed = STATE.installed
    return installed.info if installed is not None else None


# --- engines --------------------------------------------------------------------------------------------

def _engine_for(settings: Settings, processors: list[SpanProcessor], readers: list[MetricReader]) -> str:
    """Which engine this ``init()`` gets: ``sdk`` on providers someone else installed (or with processors or
    readers to feed), ``inline`` when the SDK's console exporters print to our stdout, else as configured."""
    if _foreign_providers() or processors or readers or settings.engine == "sdk":
        return "sdk"
    console = settings.mode == "otlp" and (settings.traces.console or settings.metrics.console)
    if settings.engine == "inline" or console:
        return "inline"
    return "process"


def _foreign_providers() -> bool:
    """A tracer or meter provider installed by someone else (``opentelemetry-instrument`` with the SDK's own
    configurator, the bot's code). Ours, from an earlier ``init()`` in this process, does not count."""
    tracer_provider = trace.get_tracer_provider()
    if not isinstance(tracer_provider, trace.ProxyTracerProvider) and tracer_provider is not _records_provider[0]:
        return True
    return _meter_provider_installed()


def _meter_provider_installed() -> bool:
    """Public API only: until a provider is set, the API hands out its own proxy (or no-op) provider."""
    return not type(metrics.get_meter_provider()).__module__.startswith("opentelemetry.metrics")


def _install(settings: Settings, processors: list[SpanProcessor], readers: list[MetricReader]) -> Installed:
    engine = _engine_for(settings, processors, readers)
    if engine == "sdk":
        return _install_sdk(settings, processors, readers)
    if settings.mode == "none":
        return _install_records(settings, None)
    listen = _metrics_socket(settings) if settings.mode == "local" else None
    try:
        cannot: list[str] = []
        channel = _channel(settings, listen, cannot, inline=engine == "inline")
        installed = _install_records(settings, channel, listen, cannot=cannot)
        if isinstance(channel, ProcessChannel):
            _offer_to_spawned_children(channel, installed.engine)
        return installed
    except BaseException:
        if listen is not None:
            listen.close()
        raise


def _channel(settings: Settings, listen: socket.socket | None, cannot: list[str], *, inline: bool) -> Any:
    """The best channel this process can have: the exporter process, else a converter thread here, else none
    (record nothing). What could not be had is added to ``cannot`` (said once, on stderr, by the caller)."""
    if not inline:
        directory: str | None = None
        try:
            directory = family.create(os.getpid())
            return ProcessChannel(directory, os.getpid(), secrets.token_bytes(16), settings=settings,
                                  started=STATE.exporters, metrics_socket=listen, start=True)
        except OSError as exc:  # no helper process possible here (a pids limit, a frozen app, a sandbox)
            cannot.append(f"cannot start the exporter process ({exc.strerror or exc!r})")
            if directory is not None:
                family.remove(directory)
    try:
        return _local_channel(settings, listen)
    except RuntimeError as exc:  # can't start new thread: nothing can export from here
        cannot.append(f"cannot start a converter thread ({exc}): telemetry records nothing")
        return None


def _local_channel(settings: Settings, listen: socket.socket | None) -> Any:
    """The ``inline`` engine's channel: the exporter's conversion on a thread of this process."""
    from qt_telemetry._engine.exporter.inprocess import LocalChannel
    from qt_telemetry._engine.exporter.pipeline import Pipeline

    return LocalChannel(Pipeline(settings, remote=False, listen_socket=listen))


def _metric_reader_class() -> type:
    from opentelemetry.sdk.metrics.export import MetricReader

    return MetricReader


def _install_records(settings: Settings, channel: Any, listen: socket.socket | None = None,
                     instance: str | None = None, cannot: list[str] | None = None) -> Installed:
    resource = base_resource(settings)
    sampler = HeadSampler()
    engine: RecordEngine
    cannot = cannot if cannot is not None else []
    if channel is None:  # mode "none" (or nothing can export here): instrument, export nothing
        engine = RecordEngine(sampler)
        engine.name = "none"
        close: Callable[[float], bool] = lambda _t: True
        flush: Callable[[float], bool] = lambda _t: True
    else:
        root = instance or str(resource.attributes.get(SERVICE_INSTANCE_ID) or "") or None
        outbox = Outbox(channel, tick=_gauge_tick,
                        tick_interval=min(settings.metric_export_interval_s / 2, 5.0), instance_id=root)
        if instance is not None:  # a spawned child: the parent's id, then ours
            outbox.instance_id = f"{instance}-{os.getpid()}"
        engine = QueuedEngine(sampler, outbox, "process" if isinstance(channel, ProcessChannel) else "inline")
        secrets = tuple(settings.secret_values)
        if secrets:
            engine.secrets(secrets)
        note = outbox.start()
        if note:
            cannot.append(f"cannot start a thread: {note}")
        if settings.gc_freeze:
            _freeze_startup_objects()

        def close(timeout: float) -> bool:
            ok = engine.shutdown(timeout)
            if listen is not None:
                listen.close()
            tracer_provider.shutdown()
            return ok

        flush = engine.flush
    # Other instrumentation (HTTP clients, your own spans) goes through the same records.
    tracer_provider = _records_tracer_provider(resource, engine.emit)
    if cannot:  # once, where an operator looks first: what this process could not have, and what it runs
        print(f"qt-telemetry: {'; '.join(cannot)}; running the {engine.name} engine", file=sys.stderr, flush=True)
    return Installed(_info(settings, resource, _metrics_url(listen), True, engine.name), settings, engine, close,
                     flush)


#: The tracer provider of the records engines and where its spans go now. A provider is set once per process
#: (the OTel API refuses a second one), so a later ``init()`` (after ``shutdown()``, or replacing the launcher's
#: setup) re-points this one at its engine.
_records_provider: list[TracerProvider | None] = [None]
_records_target: list[Callable[[Any], None]] = [lambda _record: None]


def _records_tracer_provider(resource: Any, emit: Callable[[Any], None]) -> TracerProvider:
    _records_target[0] = emit
    provider = _records_provider[0]
    if provider is None or trace.get_tracer_provider() is not provider:
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(RecordingProcessor(lambda record: _records_target[0](record)))
        trace.set_tracer_provider(provider)
        _records_provider[0] = provider
    return provider


_FROZEN_IN: list[int] = []


def _freeze_startup_objects() -> None:
    """Collect once, then move every object that exists now (modules, classes, the bot's configuration) to the
    permanent generation. Measured at 2000 ticks/s: the records an order leaves behind promote enough objects to
    trigger a full collection every few seconds, and rescanning the start-up objects made it an 18 ms stall; with
    them frozen, no full collection ran in 10 s and the ones that run scan only what came after. Once per process
    (a forked child inherits the frozen generation, which also keeps its pages shared)."""
    if os.getpid() in _FROZEN_IN:
        return
    _FROZEN_IN.append(os.getpid())
    gc.collect()
    gc.freeze()


def _install_sdk(settings: Settings, processors: list[SpanProcessor], readers: list[MetricReader]) -> Installed:
    """The in-process path: our spans are SDK spans of the installed (or our) providers."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from qt_telemetry._engine.exporter.pipeline import (
        Pipeline,
        console_metric_exporter,
        console_span_exporter,
        otlp_metric_exporter,
        otlp_span_exporter,
        views,
    )

    resource = base_resource(settings)
    resource = resource.merge(_instance(resource))
    created_tp: TracerProvider | None = None
    existing_tp = trace.get_tracer_provider()
    exported_as = resource  # what the spans carry: ours, or the installed provider's resource
    if isinstance(existing_tp, trace.ProxyTracerProvider):
        created_tp = TracerProvider(resource=resource, shutdown_on_exit=False)
        if settings.mode == "otlp" and settings.traces.enabled:
            created_tp.add_span_processor(BatchSpanProcessor(otlp_span_exporter(settings)))
        if settings.mode == "otlp" and settings.traces.console:
            created_tp.add_span_processor(BatchSpanProcessor(console_span_exporter()))
        if settings.console:
            from qt_telemetry._engine.exporter.console import TraceSummaryExporter

            created_tp.add_span_processor(BatchSpanProcessor(TraceSummaryExporter(), schedule_delay_millis=500))
        for processor in processors:
            created_tp.add_span_processor(processor)
        trace.set_tracer_provider(created_tp)
    else:
        _log.info("qt-telemetry: using the TracerProvider already installed (%s)", type(existing_tp).__name__)
        exported_as = getattr(existing_tp, "resource", resource)
        add = getattr(existing_tp, "add_span_processor", None)
        if processors and add is None:
            raise ConfigurationError("span_processors: the installed TracerProvider cannot take processors")
        for processor in processors:
            add(processor)  # type: ignore[misc]

    created_mp: MeterProvider | None = None
    listen: socket.socket | None = None
    stop_server: Callable[[], None] | None = None
    if not _meter_provider_installed():
        all_readers = list(readers)
        if settings.mode == "local":
            listen = _metrics_socket(settings)
            pipeline = Pipeline(settings, remote=False, listen_socket=listen, span_exporters=[])
            created_mp = pipeline._meter_provider(resource)
            stop_server = pipeline._stop_server
            if all_readers:
                _log.warning("qt-telemetry: metric_readers are ignored in local mode")
        else:
            if settings.mode == "otlp" and settings.metrics.enabled:
                all_readers.append(PeriodicExportingMetricReader(
                    otlp_metric_exporter(settings), export_interval_millis=settings.metric_export_interval_s * 1000))
            if settings.mode == "otlp" and settings.metrics.console:
                all_readers.append(PeriodicExportingMetricReader(
                    console_metric_exporter(), export_interval_millis=settings.metric_export_interval_s * 1000))
            created_mp = MeterProvider(metric_readers=all_readers, resource=resource, views=views(settings),
                                       shutdown_on_exit=False)
        metrics.set_meter_provider(created_mp)
    elif readers:
        warnings.warn("metric_readers are ignored: a MeterProvider was already installed and cannot take readers "
                      "after creation", RuntimeWarning, stacklevel=3)

    engine = sdk_engine_for_installed_providers(settings)
    assert engine is not None

    def flush(timeout: float) -> bool:
        def work(deadline: float) -> bool:
            ok = True
            for provider in (created_tp, created_mp):
                if provider is not None:
                    ok = bool(provider.force_flush(_millis_left(deadline))) and ok
            return ok

        return _bounded(timeout, "force_flush", work)

    def close(timeout: float) -> bool:
        def work(deadline: float) -> bool:
            ok = flush(max(0.0, deadline - time.monotonic()))
            if created_tp is not None:
                created_tp.shutdown()
            if created_mp is not None:
                created_mp.shutdown(timeout_millis=_millis_left(deadline))
            return ok

        try:
            return _bounded(timeout, "shutdown", work)
        finally:
            if stop_server is not None:
                stop_server()
            if listen is not None:
                listen.close()

    owns = created_tp is not None or created_mp is not None
    return Installed(_info(settings, exported_as, _metrics_url(listen), owns, "sdk"), settings, engine, close, flush)


def _offer_to_spawned_children(channel: ProcessChannel, engine: Engine) -> None:
    """Where a multiprocessing "spawn" child finds the family's exporter: the directory, the root, the instance
    and the few settings the trading side uses. Never a header, an endpoint or a resource attribute (any of them
    can carry a secret, and every child process, a shell included, inherits the environment)."""
    outbox = getattr(engine, "outbox", None)
    settings = channel.settings
    assert settings is not None
    os.environ[INHERIT_VARIABLE] = json.dumps({
        "family": channel.family, "root": channel.root_pid, "key": channel.key.hex(),
        "instance": getattr(outbox, "root_instance_id", None),
        "recorder": {"metric_export_interval": settings.metric_export_interval_s, "gc_freeze": settings.gc_freeze,
                     "log_correlation": settings.log_correlation}})


def join_parent() -> Engine | None:
    """In a multiprocessing "spawn" child of an initialised process: export through the family's exporter — no
    ``init()`` needed. The child never starts an exporter (it has none of the exporter's settings); if there is
    none, a relative that has them starts the replacement and the child joins it."""
    raw = os.environ.get(INHERIT_VARIABLE)
    if not raw:
        return None
    with STATE.lock:
        if STATE.installed is not None:
            return STATE.engine
        try:
            inherited = json.loads(raw)
            settings = _config.resolve(mode="otlp", engine="process", **inherited["recorder"])
            channel = ProcessChannel(str(inherited["family"]), int(inherited["root"]), bytes.fromhex(inherited["key"]),
                                     settings=None, started=STATE.exporters)
            installed = _install_records(settings, channel, instance=inherited.get("instance"))
        except Exception as exc:  # noqa: BLE001 - telemetry must never break the child
            _log.warning("qt-telemetry: could not join the parent's exporter: %r", exc)
            return None
        STATE.installed = installed
        STATE.engine = installed.engine
    STATE.error_sink = error_counter(installed.engine)
    installed.engine.send_board(STATE.board)
    _register_exit()
    return installed.engine


def sdk_engine_for_installed_providers(settings: Settings | None = None) -> Engine | None:
    """An ``sdk`` engine on whatever providers are installed globally right now."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return None
    from qt_telemetry._engine.exporter.convert import SCOPE, Converter
    from qt_telemetry._engine.exporter.inprocess import SdkEngine
    from qt_telemetry._redaction import Redactor

    s = settings or _config.resolve(mode="none")
    converter = Converter(
        redactor=Redactor(s.secret_keys, s.secret_patterns, s.secret_values), max_label_values=s.max_label_values,
        slow_order_seconds=s.slow_order_seconds, trace_keep_ratio=s.trace_keep_ratio,
        base_resource=base_resource(s), meters=lambda _resource: metrics.get_meter_provider(), spans=None,
        remote=False)
    return SdkEngine(provider.get_tracer(SCOPE.name, SCOPE.version), converter)


# --- pieces ---------------------------------------------------------------------------------------------

def _gauge_tick() -> list[tuple[Any, ...]]:
    """The janitor's periodic snapshot of the board: callbacks evaluated there, off the trading thread."""
    out = []
    for name, key, value in STATE.board.all():
        number, problem = current_number(value)
        if number is None:
            telemetry_error(problem or "gauge_bad_value")
            continue
        out.append((GAUGE, name, dict(key), number))
    return out


#: How long init() waits for a busy /metrics port to be let go of (by the previous run's exporter).
_PORT_TAKEOVER_S = 2.0


def _metrics_socket(settings: Settings) -> socket.socket:
    """Bind /metrics now, so a busy port is an error at init() and port 0 has a known number."""
    host = settings.metrics_host
    address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + _PORT_TAKEOVER_S
    while True:
        try:
            return socket.create_server((host, settings.metrics_port), family=address_family)
        except OSError as exc:
            # The exporter of the run before (a restart by systemd, the demo run twice) lets go of the port the
            # moment its bot is gone; give it that moment rather than crash-loop.
            if exc.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            raise ConfigurationError(
                f"metrics_port={settings.metrics_port}: cannot serve /metrics on {host} ({exc}); pick a free port "
                f"with the metrics_port argument, {_config.QT_TELEMETRY_METRICS_PORT} or the demo's --metrics-port "
                "(0 = any free port)") from exc


def _metrics_url(listen: socket.socket | None) -> str | None:
    if listen is None:
        return None
    host, port = listen.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"


def _instance(resource: Any) -> Any:
    from opentelemetry.sdk.resources import Resource

    if SERVICE_INSTANCE_ID in resource.attributes:
        return Resource({"process.pid": os.getpid()})
    # Two bots with the same service name must stay two series in Prometheus.
    import uuid

    return Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4()), "process.pid": os.getpid()})


def _info(settings: Settings, resource: Any, metrics_url: str | None, owns: bool, engine: str) -> TelemetryInfo:
    otlp = settings.mode == "otlp"
    return TelemetryInfo(
        mode=settings.mode, service_name=str(resource.attributes.get(SERVICE_NAME, _config.DEFAULT_SERVICE_NAME)),
        traces_endpoint=settings.traces.effective_endpoint if otlp and settings.traces.enabled else None,
        metrics_endpoint=settings.metrics.effective_endpoint if otlp and settings.metrics.enabled else None,
        metrics_url=metrics_url, owns_providers=owns, engine=engine)


def _checked_sequence(value: Any, setting: str, kind: type) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | tuple | list):
        raise ConfigurationError(f"{setting}={show(value)}: expected a list of {kind.__name__} objects")
    for item in value:
        if not isinstance(item, kind):
            raise ConfigurationError(f"{setting}: {show(item)} is not a {kind.__module__}.{kind.__name__}")
    return list(value)


def _budget(timeout: Any, settings: Settings) -> float:
    """A run-time timeout argument: a bad one is absorbed (the configured bound is used) and counted."""
    if timeout is None:
        return settings.shutdown_timeout_s
    number = finite(timeout) if not isinstance(timeout, str | bool) else None
    if number is None or number <= 0 or not math.isfinite(number):
        telemetry_error("bad_timeout", f"timeout={show(timeout)}")
        return settings.shutdown_timeout_s
    return min(number, 600.0)


def _millis_left(deadline: float) -> int:
    return max(1, int((deadline - time.monotonic()) * 1000))


def _bounded(budget: float, what: str, work: Callable[[float], bool]) -> bool:
    """Run ``work`` on a daemon thread; wait at most ``budget`` seconds for it (the SDK's own calls retry)."""
    deadline = time.monotonic() + budget
    result: list[bool] = []

    def run() -> None:
        try:
            result.append(work(deadline))
        except Exception as exc:  # noqa: BLE001 - shutdown must not raise into the kill-switch path
            _log.warning("qt-telemetry %s failed: %r", what, exc)
            result.append(False)

    worker = threading.Thread(target=run, name=f"qt-telemetry-{what}", daemon=True)
    worker.start()
    worker.join(budget)
    if worker.is_alive() or not result:
        _log.warning("qt-telemetry %s did not finish within %.1fs (collector unreachable?); unexported telemetry "
                     "was dropped", what, budget)
        return False
    return result[0]


# --- exit and fork ---------------------------------------------------------------------------------------

_exit_registered = False


def _at_exit() -> None:
    """At interpreter exit — and in multiprocessing children, which skip atexit: hand over, never wait long."""
    if STATE.installed is not None:
        shutdown(_EXIT_BUDGET_S)
    release_exporters(STATE.exporters)


def _register_exit() -> None:
    global _exit_registered
    if _exit_registered:
        return
    _exit_registered = True
    atexit.register(_at_exit)
    register = getattr(threading, "_register_atexit", None)  # runs in threading._shutdown(), also in mp children
    if register is not None:
        try:
            register(_at_exit)
        except RuntimeError:  # already shutting down
            pass


def _reset_for_tests() -> None:
    """Shut down whatever init() set up, quickly (the testing module resets the OTel globals)."""
    installed = STATE.installed
    if installed is not None:
        shutdown(1.0)
    runtime_metrics.stop()


STATE.join = join_parent
STATE.foreign = sdk_engine_for_installed_providers
