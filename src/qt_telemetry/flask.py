"""Flask integration: request spans via ``opentelemetry-instrumentation-flask``, and in local mode a
``/metrics`` route on the app itself for the single-endpoint setup (the ``flask`` extra)."""

from qt_telemetry._integrations.flask import instrument_app

__all__ = ["instrument_app"]
