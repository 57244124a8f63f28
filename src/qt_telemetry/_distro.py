"""qt-telemetry under ``opentelemetry-instrument``: the launcher's distro and configurator (entry points).

``opentelemetry-instrument python bot.py`` loads one distro (the one ``OTEL_PYTHON_DISTRO`` names, else the first
installed), then one configurator (``OTEL_PYTHON_CONFIGURATOR``, else the first), then every instrumentation.
Ours make that run :func:`qt_telemetry.init` from the environment before the bot's code: our engine (the exporter
process), our buckets, our names and OTLP over HTTP by default, where the SDK's own configurator would build
in-process providers and ``opentelemetry-distro`` would default the protocol to gRPC. A later ``qt.init(...)``
with arguments in the bot replaces this setup; without arguments it keeps it.

With ``opentelemetry-distro`` installed too, which distro comes first is the file system's choice: set
``OTEL_PYTHON_DISTRO=qt_telemetry``. Our distro then also selects our configurator.
"""

from __future__ import annotations

import logging
import os
from typing import Any

# The launcher's module is marked "type: ignore" as a whole: mypy sees no names in it.
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

_log = logging.getLogger("qt_telemetry")
NAME = "qt_telemetry"  # the entry points' name, as OTEL_PYTHON_DISTRO / OTEL_PYTHON_CONFIGURATOR take it
OTEL_PYTHON_CONFIGURATOR = "OTEL_PYTHON_CONFIGURATOR"
#: Instrumentations whose job our engine does itself. ``system_metrics`` reports through the global SDK
#: MeterProvider, which the records engine does not install (its metrics would vanish), needs psutil, and knows
#: one process: qt-telemetry's runtime metrics cover the bot and its exporter process, GC pauses included.
REPLACED = {"system_metrics": "qt-telemetry's runtime metrics (process.*, cpython.gc.*, qt.runtime.gc.duration)"}


class QtTelemetryDistro(BaseDistro):  # type: ignore[misc]  # the launcher's base class is untyped
    """Selects our configurator and skips the instrumentations our engine replaces."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_PYTHON_CONFIGURATOR, NAME)

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        replacement = REPLACED.get(entry_point.name)
        if replacement is not None:
            _log.info("qt-telemetry: skipping the %s instrumentation: %s replace it", entry_point.name, replacement)
            return
        super().load_instrumentor(entry_point, **kwargs)


class QtTelemetryConfigurator:
    """The launcher calls ``configure()`` once, before the bot's code: ``init()`` from the environment."""

    def configure(self, **kwargs: Any) -> None:
        if getattr(QtTelemetryDistro, "_instance", None) is None:
            _log.warning("qt-telemetry: opentelemetry-instrument loaded another distro before ours; its defaults "
                         "apply (opentelemetry-distro sets OTEL_EXPORTER_OTLP_PROTOCOL=grpc). Set "
                         "OTEL_PYTHON_DISTRO=%s to use qt-telemetry's", NAME)
        from qt_telemetry._setup import init_from_launcher

        init_from_launcher()
