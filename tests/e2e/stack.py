"""Run the real Collector, Prometheus, Tempo and Alertmanager on loopback, fed by the repo's own configs.

Only addresses, ports and paths are rewritten (plus Prometheus' evaluation interval, shortened so alerts
evaluate within a test's patience). Every server logs to a file that is kept and shown when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.support import polling
from tests.support.servers import REPO, binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """:func:`tests.support.polling.wait_until`, polling servers four times a second."""
    return polling.wait_until(check, timeout, what, interval)


def http_json(url: str, data: Any = None, timeout: float = 10) -> Any:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                           "Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Server:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.log.parent,
                                     env={**os.environ, **self.env}, start_new_session=True)
        out.close()

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class WebhookSink:
    """A local HTTP receiver standing in for the pager/chat webhooks Alertmanager posts to."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                sink.received.append((self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def alerts(self, path: str) -> list[dict[str, Any]]:
        return [alert for p, body in self.received if p == path for alert in body.get("alerts", [])]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Stack:
    """Collector -> Prometheus (remote write, exemplars) + Tempo; Prometheus -> Alertmanager -> webhooks."""

    #: the binaries start() runs (tests/support/servers.py builds them before the tests that use the stack)
    BINARIES = ("prometheus", "alertmanager", "tempo", "otelcol")

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.ports = {name: free_port() for name in (
            "otlp_grpc", "otlp_http", "health", "col_metrics", "prometheus", "alertmanager",
            "tempo_http", "tempo_grpc", "tempo_otlp")}
        p = self.ports
        self.prometheus_url = f"http://127.0.0.1:{p['prometheus']}"
        self.alertmanager_url = f"http://127.0.0.1:{p['alertmanager']}"
        self.tempo_url = f"http://127.0.0.1:{p['tempo_http']}"
        self.otlp_http = f"http://127.0.0.1:{p['otlp_http']}"
        self.otlp_grpc = f"http://127.0.0.1:{p['otlp_grpc']}"
        self.collector_health = f"http://127.0.0.1:{p['health']}/"
        self.webhooks = WebhookSink()
        self.servers: dict[str, Server] = {}

    # --- configs: the repo's files, addresses and paths rewritten -----------------------------------
    def _prometheus_config(self) -> Path:
        cfg = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
        p = self.ports
        cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
        cfg["rule_files"] = [str(REPO / "prometheus" / "rules" / "*.yml")]
        cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{p['alertmanager']}"]
        targets = {"otel-collector": p["col_metrics"], "tempo": p["tempo_http"], "alertmanager": p["alertmanager"],
                   "prometheus": p["prometheus"]}
        for job in cfg["scrape_configs"]:
            job["static_configs"][0]["targets"] = [f"127.0.0.1:{targets[job['job_name']]}"]
        path = self.dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def _alertmanager_config(self) -> Path:
        text = (REPO / "alertmanager" / "alertmanager.yml").read_text()
        for receiver in ("page", "notify"):
            secret = self.dir / f"alertmanager_{receiver}_webhook_url"
            secret.write_text(f"{self.webhooks.url}/{receiver}\n")
            text = text.replace(f"/run/secrets/alertmanager_{receiver}_webhook_url", str(secret))
        path = self.dir / "alertmanager.yml"
        path.write_text(text)
        return path

    def _tempo_config(self) -> Path:
        cfg = yaml.safe_load((REPO / "tempo" / "tempo.yaml").read_text())
        p = self.ports
        cfg["server"].update(http_listen_address="127.0.0.1", http_listen_port=p["tempo_http"],
                             grpc_listen_address="127.0.0.1", grpc_listen_port=p["tempo_grpc"])
        cfg["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = f"127.0.0.1:{p['tempo_otlp']}"
        data = self.dir / "tempo-data"
        cfg["storage"]["trace"]["wal"]["path"] = str(data / "wal")
        cfg["storage"]["trace"]["local"]["path"] = str(data / "blocks")
        generator = cfg["metrics_generator"]["storage"]
        generator["path"] = str(data / "generator")
        generator["remote_write"][0]["url"] = f"{self.prometheus_url}/api/v1/write"
        path = self.dir / "tempo.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def collector_env(self) -> dict[str, str]:
        p = self.ports
        return {
            "QT_COLLECTOR_OTLP_GRPC_ADDR": f"127.0.0.1:{p['otlp_grpc']}",
            "QT_COLLECTOR_OTLP_HTTP_ADDR": f"127.0.0.1:{p['otlp_http']}",
            "QT_COLLECTOR_HEALTH_ADDR": f"127.0.0.1:{p['health']}",
            "QT_COLLECTOR_METRICS_HOST": "127.0.0.1",
            "QT_COLLECTOR_METRICS_PORT": str(p["col_metrics"]),
            "QT_PROMETHEUS_REMOTE_WRITE_URL": f"{self.prometheus_url}/api/v1/write",
            "QT_TEMPO_OTLP_GRPC_ADDR": f"127.0.0.1:{p['tempo_otlp']}",
        }

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        p = self.ports
        logs = self.dir
        self.servers["prometheus"] = Server("prometheus", [
            binary("prometheus"), f"--config.file={self._prometheus_config()}",
            f"--storage.tsdb.path={self.dir / 'prometheus-data'}", f"--web.listen-address=127.0.0.1:{p['prometheus']}",
            "--web.enable-remote-write-receiver", "--enable-feature=exemplar-storage",
        ], logs / "prometheus.log")
        self.servers["alertmanager"] = Server("alertmanager", [
            binary("alertmanager"), f"--config.file={self._alertmanager_config()}",
            f"--storage.path={self.dir / 'alertmanager-data'}", f"--web.listen-address=127.0.0.1:{p['alertmanager']}",
            "--cluster.listen-address=",
        ], logs / "alertmanager.log")
        self.servers["tempo"] = Server("tempo", [binary("tempo"), f"-config.file={self._tempo_config()}"],
                                       logs / "tempo.log")
        self.servers["otelcol"] = Server("otelcol",
                                         [binary("otelcol"), f"--config={REPO / 'collector' / 'config.yaml'}"],
                                         logs / "otelcol.log", env=self.collector_env())
        for server in self.servers.values():
            server.start()
        self.wait_ready()

    def wait_ready(self, timeout: float = 120) -> None:
        checks = {
            "prometheus": f"{self.prometheus_url}/-/ready",
            "alertmanager": f"{self.alertmanager_url}/-/ready",
            "tempo": f"{self.tempo_url}/ready",
            "otelcol": self.collector_health,
        }
        for name, url in checks.items():
            server = self.servers[name]
            wait_until(lambda s=server, u=url: self._ready(s, u), timeout, f"{name} at {url}\n{server.tail()}")

    @staticmethod
    def _ready(server: Server, url: str) -> bool:
        if not server.alive():
            raise AssertionError(f"{server.name} exited ({server.proc.returncode if server.proc else '?'}):\n"
                                 f"{server.tail()}")
        return http_ok(url)

    def restart_collector(self) -> None:
        server = self.servers["otelcol"]
        server.stop()
        server.start()
        wait_until(lambda: self._ready(server, self.collector_health), 60, f"otelcol restart\n{server.tail()}")

    def stop(self) -> None:
        for server in reversed(list(self.servers.values())):
            server.stop()
        self.webhooks.close()

    def logs(self) -> str:
        return "\n\n".join(f"===== {s.name} ({s.log}) =====\n{s.tail(60)}" for s in self.servers.values())

    # --- queries ------------------------------------------------------------------------------------
    def prom_query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        reply = http_json(url)
        assert reply["status"] == "success", reply
        return list(reply["data"]["result"])

    def exemplars(self, expr: str, since: float) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query_exemplars?" + urllib.parse.urlencode(
            {"query": expr, "start": f"{since:.3f}", "end": f"{time.time() + 60:.3f}"})
        reply = http_json(url)
        assert reply["status"] == "success", reply
        return [e for series in reply["data"] for e in series["exemplars"]]

    def trace(self, trace_id: str) -> list[dict[str, Any]] | None:
        """Spans of a trace from Tempo's API as flat dicts (hex ids), or None while it is not there."""
        try:
            reply = http_json(f"{self.tempo_url}/api/traces/{trace_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return flatten_trace(reply)


def _hex(value: str) -> str:
    import base64

    if not value:
        return ""
    if len(value) in (16, 32) and all(c in "0123456789abcdef" for c in value):
        return value
    return base64.b64decode(value).hex()


def _attr_value(v: dict[str, Any]) -> Any:
    for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if key in v:
            return int(v[key]) if key == "intValue" else v[key]
    return None


def flatten_trace(reply: dict[str, Any]) -> list[dict[str, Any]]:
    batches = reply.get("batches") or reply.get("resourceSpans") or reply.get("trace", {}).get("resourceSpans", [])
    spans = []
    for batch in batches:
        resource = {a["key"]: _attr_value(a["value"]) for a in batch.get("resource", {}).get("attributes", [])}
        for scope in batch.get("scopeSpans") or batch.get("instrumentationLibrarySpans") or []:
            for span in scope.get("spans", []):
                spans.append({
                    "name": span["name"],
                    "trace_id": _hex(span.get("traceId", "")),
                    "span_id": _hex(span.get("spanId", "")),
                    "parent_span_id": _hex(span.get("parentSpanId", "")),
                    "attributes": {a["key"]: _attr_value(a["value"]) for a in span.get("attributes", [])},
                    "status": span.get("status", {}),
                    "service": resource.get("service.name"),
                })
    return spans
