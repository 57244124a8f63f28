"""Local mode's ``/metrics``: a ``prometheus_client`` registry served on the socket ``init()`` already bound (a busy
port was an error there, and port 0 has its number), on one thread, quietly."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def serve(registry: CollectorRegistry, listen: socket.socket) -> Callable[[], None] | None:
    """Serve ``registry`` on ``listen``; returns the function that stops it, or None when no thread can be had."""
    host, port = listen.getsockname()[:2]
    server = WSGIServer((host, port), _Quiet, bind_and_activate=False)
    server.socket.close()
    server.socket = listen
    server.server_address = (host, port)
    server.server_name, server.server_port = host, port
    server.setup_environ()
    server.set_app(make_wsgi_app(registry))
    thread = threading.Thread(target=server.serve_forever, name="qt-telemetry-metrics", daemon=True)
    try:
        thread.start()
    except RuntimeError:
        return None

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
