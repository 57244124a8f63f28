"""The Flask integration (public face: :mod:`qt_telemetry.flask`)."""

from __future__ import annotations

from typing import Any

from qt_telemetry._config import ConfigurationError, show


def instrument_app(app: Any, *, metrics_route: str | None = "/metrics") -> Any:
    """Trace every request of ``app`` and (local mode only) serve Prometheus metrics at ``metrics_route``.

    Outside local mode the route answers 404 with a hint: metrics then go to the collector over OTLP.
    """
    try:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
    except ImportError as exc:  # pragma: no cover - depends on the extra being installed
        raise ConfigurationError("instrument_app needs the flask extra: pip install -e '.[flask]' in the "
                                 "qt-telemetry checkout") from exc
    if metrics_route is not None and not metrics_route.startswith("/"):
        raise ConfigurationError(f"metrics_route={show(metrics_route)}: must start with '/'")
    excluded = metrics_route.lstrip("/") if metrics_route else None
    # Under `opentelemetry-instrument` the Flask class itself is instrumented: its apps need nothing more (a
    # second instrument_app only logs "already instrumented"). The flag is the one the instrumentor checks.
    if not getattr(app, "_is_instrumented_by_opentelemetry", False):
        FlaskInstrumentor().instrument_app(app, excluded_urls=excluded)  # type: ignore[no-untyped-call]
    if metrics_route is not None:
        app.add_url_rule(metrics_route, "qt_telemetry_metrics", _metrics_view)
    return app


def _metrics_view() -> Any:
    """The local mode's /metrics (served by the exporter on loopback), relayed on the app's own port."""
    import urllib.request

    from flask import Response
    from prometheus_client import CONTENT_TYPE_LATEST

    from qt_telemetry._setup import current

    info = current()
    if info is None or info.metrics_url is None:
        return Response("qt-telemetry is not in local mode: metrics are exported over OTLP to the collector.\n",
                        status=404, mimetype="text/plain")
    try:
        with urllib.request.urlopen(info.metrics_url, timeout=2) as upstream:
            body = upstream.read()
    except OSError as exc:
        return Response(f"qt-telemetry's metrics endpoint did not answer: {exc}\n", status=503,
                        mimetype="text/plain")
    return Response(body, mimetype=CONTENT_TYPE_LATEST)
