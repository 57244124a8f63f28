"""Minimal OTLP receivers (HTTP and gRPC) that decode the real protobuf, for tests on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class _Store:
    def __init__(self) -> None:
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        with self.lock:
            requests = list(self.trace_requests)
        out = []
        for req in requests:
            for rs in req.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out

    def metrics(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, metric) for every metric received."""
        with self.lock:
            requests = list(self.metric_requests)
        out = []
        for req in requests:
            for rm in req.resource_metrics:
                resource = {a.key: _value(a.value) for a in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    out.extend((resource, m) for m in sm.metrics)
        return out

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "data",
                 interval: float = 0.05) -> None:
        """Poll ``predicate``; a slow one gets a longer ``interval`` so it does not starve the receiver."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attributes(item: Any) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in item.attributes}


class OtlpHttpReceiver(_Store):
    """OTLP/HTTP (protobuf) on 127.0.0.1, random port."""

    def __init__(self) -> None:
        super().__init__()
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                with store.lock:
                    store.headers.append({k.lower(): v for k, v in self.headers.items()})
                    if self.path == "/v1/traces":
                        req = trace_service_pb2.ExportTraceServiceRequest()
                        req.ParseFromString(body)
                        store.trace_requests.append(req)
                        reply = trace_service_pb2.ExportTraceServiceResponse()
                    elif self.path == "/v1/metrics":
                        req = metrics_service_pb2.ExportMetricsServiceRequest()
                        req.ParseFromString(body)
                        store.metric_requests.append(req)
                        reply = metrics_service_pb2.ExportMetricsServiceResponse()
                    else:
                        self.send_response(404)
                        self.end_headers()
                        return
                payload = reply.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class OtlpGrpcReceiver(_Store):
    """OTLP/gRPC on 127.0.0.1, random port."""

    def __init__(self) -> None:
        super().__init__()
        store = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                with store.lock:
                    store.trace_requests.append(request)
                    store.headers.append(dict(context.invocation_metadata()))
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                with store.lock:
                    store.metric_requests.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self._server.stop(grace=None)
