"""Sending pre-built OTLP requests: a bounded queue and one worker per signal, so spans that cannot be sent never
hold up metrics, and every request that is given up on is reported to its owner.

The exporter builds request *bytes* itself (building protobuf objects was most of its cost), and the official
OTLP exporters only take SDK objects, so:
- OTLP/HTTP is a small POST on a kept-alive ``http.client`` connection with the spec's rules and the official
  exporter's conventions: retry on 429/502/503/504 and on connection errors with exponential backoff (2^n s,
  ±20 % jitter), ``Retry-After`` honoured, all within the export timeout; gzip/deflate; TLS with
  ``OTEL_EXPORTER_OTLP[_<SIGNAL>]_{CERTIFICATE,CLIENT_CERTIFICATE,CLIENT_KEY}``; headers and timeout from the
  settings or ``OTEL_EXPORTER_OTLP[_<SIGNAL>]_{HEADERS,TIMEOUT}`` (seconds, as the Python exporters read them).
- OTLP/gRPC goes through the official gRPC exporter (``pip install 'qt-telemetry[grpc]'``), whose retry, TLS,
  compression and metadata rules we keep: our subclass only turns the prepared bytes into its request object.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import http.client
import logging
import os
import random
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from qt_telemetry._config import Settings, SignalExport

_log = logging.getLogger("qt_telemetry")
_RETRYABLE = frozenset({429, 502, 503, 504})
_MAX_ATTEMPTS = 6
_JITTER = 0.2
Done = Callable[[bool], None]


class Transport(Protocol):
    def post(self, body: bytes, deadline: float, stopping: threading.Event) -> bool: ...
    def close(self) -> None: ...


def _env(signal: str, suffix: str) -> str:
    return (os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{suffix}", "").strip()
            or os.environ.get(f"OTEL_EXPORTER_OTLP_{suffix}", "").strip())


def _timeout(signal: str) -> float:
    raw = _env(signal, "TIMEOUT")
    try:
        value = float(raw) if raw else 10.0
    except ValueError:
        return 10.0
    return value if value > 0 else 10.0


class HttpTransport:
    """OTLP/HTTP protobuf POSTs to one signal's endpoint (see the module docstring)."""

    def __init__(self, settings: Settings, signal: str, export: SignalExport) -> None:
        self.signal = signal
        url = urlsplit(export.effective_endpoint)
        self._https = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if self._https else 80)
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.timeout = _timeout(signal)
        headers: dict[str, str] = {}
        if settings.headers is not None:
            headers.update(settings.headers)
        else:
            raw = _env(signal, "HEADERS")
            if raw:
                from opentelemetry.util.re import parse_env_headers

                headers.update(parse_env_headers(raw, liberal=True))
        headers["Content-Type"] = "application/x-protobuf"
        self._compression = (_env(signal, "COMPRESSION") or "none").lower()
        if self._compression in ("gzip", "deflate"):
            headers["Content-Encoding"] = self._compression
        self._headers = headers
        self._context: ssl.SSLContext | None = None
        if self._https:
            self._context = ssl.create_default_context(cafile=_env(signal, "CERTIFICATE") or None)
            certificate, key = _env(signal, "CLIENT_CERTIFICATE"), _env(signal, "CLIENT_KEY")
            if certificate:
                self._context.load_cert_chain(certificate, key or None)
        self._connection: http.client.HTTPConnection | None = None

    def _compress(self, body: bytes) -> bytes:
        if self._compression == "gzip":
            return gzip.compress(body, compresslevel=6)
        if self._compression == "deflate":
            return zlib.compress(body)
        return body

    def _open(self, timeout: float) -> http.client.HTTPConnection:
        if self._connection is None:
            if self._https:
                self._connection = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                               context=self._context)
            else:
                self._connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        else:
            self._connection.timeout = timeout
            if self._connection.sock is not None:
                self._connection.sock.settimeout(timeout)
        return self._connection

    def _attempt(self, body: bytes, timeout: float) -> tuple[int | None, float | None]:
        """(status, Retry-After seconds); status None for a connection error (retried at once, once)."""
        for fresh in (False, True):
            try:
                connection = self._open(timeout)
                connection.request("POST", self._path, body=body, headers=self._headers)
                response = connection.getresponse()
                response.read()
                retry_after = _retry_after(response.getheader("Retry-After"))
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status, retry_after
            except (OSError, http.client.HTTPException):
                self.close()
                if fresh:
                    return None, None
        return None, None

    def post(self, body: bytes, deadline: float, stopping: threading.Event) -> bool:
        body = self._compress(body)
        deadline = min(deadline, time.monotonic() + self.timeout)
        for attempt in range(_MAX_ATTEMPTS):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            status, retry_after = self._attempt(body, left)
            if status is not None and 200 <= status < 300:
                return True
            if status is not None and status not in _RETRYABLE:
                _log.warning("qt-telemetry: the collector refused %s with HTTP %s", self.signal, status)
                return False
            backoff = retry_after if retry_after is not None else 2**attempt * random.uniform(1 - _JITTER,
                                                                                               1 + _JITTER)
            if backoff > deadline - time.monotonic() or stopping.wait(backoff):
                return False
        return False

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class GrpcTransport:
    """OTLP/gRPC through the official exporter (its channel, credentials, compression, metadata and retries)."""

    def __init__(self, settings: Settings, signal: str, export: SignalExport) -> None:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        from qt_telemetry._engine.exporter.pipeline import otlp_metric_exporter, otlp_span_exporter

        del export
        official: Any = otlp_span_exporter(settings) if signal == "traces" else otlp_metric_exporter(settings)
        request: Any = ExportTraceServiceRequest if signal == "traces" else ExportMetricsServiceRequest
        official._translate_data = request.FromString  # the prepared bytes are the request
        official._count_data = lambda data: 1
        self._official = official

    def post(self, body: bytes, deadline: float, stopping: threading.Event) -> bool:
        result = self._official._export(body)
        return getattr(result, "name", "") == "SUCCESS"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._official.shutdown(timeout_millis=100)


def transport(settings: Settings, signal: str) -> Transport:
    export = settings.traces if signal == "traces" else settings.metrics
    if export.protocol == "grpc":
        return GrpcTransport(settings, signal, export)
    return HttpTransport(settings, signal, export)


class Sender:
    """A bounded queue of prepared requests for one signal and the worker that sends them in order.

    ``submit`` never blocks: a full queue refuses (the caller counts the drop). ``done(ok)`` is called once per
    request, from the worker. Without a thread (where none can be started) the exporter's loop calls
    :meth:`pump` with a small time budget instead.
    """

    def __init__(self, transport: Transport, *, max_pending: int, name: str) -> None:
        self.transport = transport
        self.max_pending = max_pending
        self.name = name
        self._queue: collections.deque[tuple[bytes, Done]] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._deadline: float | None = None
        self.busy = False
        self._thread: threading.Thread | None = threading.Thread(target=self._run, name=f"qt-telemetry-{name}",
                                                                 daemon=True)
        try:
            self._thread.start()
        except RuntimeError:  # no thread to be had: the loop pumps
            self._thread = None

    @property
    def threaded(self) -> bool:
        return self._thread is not None

    def submit(self, body: bytes, done: Done) -> bool:
        with self._wake:
            if len(self._queue) >= self.max_pending:
                return False
            self._queue.append((body, done))
            self._wake.notify()
        return True

    def idle(self) -> bool:
        return not self._queue and not self.busy

    def room(self) -> bool:
        """Whether a request submitted now would be kept: while it is not, spans wait in the exporter's fair
        queue (where a flooding process sheds its own) instead of being taken and dropped by the batch."""
        return len(self._queue) < self.max_pending

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping.is_set():
                    self._wake.wait(1.0)
                if not self._queue:
                    return
                body, done = self._queue.popleft()
                self.busy = True
            self._send(body, done)
            self.busy = False

    def _send(self, body: bytes, done: Done) -> None:
        deadline = self._deadline if self._deadline is not None else time.monotonic() + 3600
        try:
            ok = self.transport.post(body, deadline, self._stopping)
        except Exception as exc:  # noqa: BLE001 - a transport bug must not kill the worker
            _log.warning("qt-telemetry %s export raised %r", self.name, exc)
            ok = False
        try:
            done(ok)
        except Exception as exc:  # noqa: BLE001
            _log.debug("qt-telemetry %s completion: %r", self.name, exc)

    def pump(self) -> None:
        """Without a worker thread: send one queued request now (the loop's time is then the export's)."""
        if self._thread is None and self._queue:
            body, done = self._queue.popleft()
            self.busy = True
            self._send(body, done)
            self.busy = False

    def stop(self, deadline: float) -> None:
        """Send what is queued until ``deadline``, then give up on the rest (reported not ok) and stop."""
        self._deadline = deadline
        while not self.idle() and time.monotonic() < deadline:
            if self._thread is None:
                self.pump()
            else:
                time.sleep(0.005)
        self._stopping.set()
        with self._wake:
            left = list(self._queue)
            self._queue.clear()
            self._wake.notify_all()
        for _, done in left:
            with contextlib.suppress(Exception):
                done(False)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 0.1)
        self.transport.close()


__all__ = ["GrpcTransport", "HttpTransport", "Sender", "Transport", "transport"]
