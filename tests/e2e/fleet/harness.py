"""The fleet topology on loopback: one agent, two gateways, Tempo and Prometheus, from the repo's own configs.

    bots --OTLP--> agent (collector/fleet/agent.yaml)
                     --remote write (all metrics, unsampled)--> Prometheus (prometheus/prometheus.fleet.yml)
                     --load_balancing by trace id--> gateway-a | gateway-b (collector/fleet/gateway.yaml)
                                                       --tail-sampled traces--> Tempo

The agent finds the gateways by DNS, as in docker-compose.fleet.yml. Here the name resolves through a hosts
file that only the agent sees (a private mount namespace binds it over /etc/hosts); the gateways listen on
127.0.0.2 and 127.0.0.3 with the same port. Taking a gateway out of that file is what Docker's DNS does when
its container stops. Only addresses, ports, paths and timings are rewritten (and Tempo's trace-by-id sharding,
for the hundreds of lookups the tests make; Prometheus sends no alerts here); every server logs to a kept file.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from tests.e2e.stack import Server, flatten_trace, http_json, http_ok, wait_until
from tests.support.servers import REPO, binary

GATEWAYS = {"gateway-a": "127.0.0.2", "gateway-b": "127.0.0.3"}
GATEWAYS_HOSTNAME = "qt-gateways.fleet.test"


#: Listening ports come from below the kernel's ephemeral range (ip_local_port_range, 32768.. by default), so
#: the many outgoing connections of a running suite cannot take one between choosing it and the bind.
_PORTS = random.Random()


def free_port(*hosts: str) -> int:
    """A port free on every one of ``hosts`` (the gateways share one port on different loopback addresses)."""
    low, high = _listen_range()
    for _ in range(200):
        port = _PORTS.randrange(low, high)
        try:
            for host in hosts or ("127.0.0.1",):
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no port free on all of {hosts}")


def _listen_range() -> tuple[int, int]:
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    return 10000, ephemeral_low if ephemeral_low > 12000 else 32768


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition -> (name, labels, value); enough for a collector's own /metrics."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


class Fleet:
    """Agent + two gateways + Tempo + Prometheus; the same binary (otelcol_fleet) for both collector tiers."""

    BINARIES = ("otelcol_fleet", "tempo", "prometheus")

    def __init__(self, workdir: Path, decision_wait: str = "2s", gateway_slow_order_ms: int = 100) -> None:
        self.dir = workdir
        self.decision_wait = decision_wait
        self.gateway_slow_order_ms = gateway_slow_order_ms
        names = ["otlp_grpc", "otlp_http", "health", "metrics", "prometheus", "tempo_http", "tempo_grpc",
                 "tempo_otlp"] + [f"{g}_{k}" for g in GATEWAYS for k in ("health", "metrics")]
        self.ports: dict[str, int] = {}
        for name in names:
            self.ports[name] = next(p for p in iter(free_port, None) if p not in self.ports.values())
        self.ports["gateway_otlp"] = free_port(*GATEWAYS.values())
        p = self.ports
        self.prometheus_url = f"http://127.0.0.1:{p['prometheus']}"
        self.tempo_url = f"http://127.0.0.1:{p['tempo_http']}"
        self.otlp_http = f"http://127.0.0.1:{p['otlp_http']}"
        self.agent_metrics = f"http://127.0.0.1:{p['metrics']}/metrics"
        self.hosts_file = workdir / "hosts"
        self.servers: dict[str, Server] = {}
        self.live_gateways = dict(GATEWAYS)

    # --- configs -----------------------------------------------------------------------------------------
    def _prometheus_config(self) -> Path:
        cfg = yaml.safe_load((REPO / "prometheus" / "prometheus.fleet.yml").read_text())
        p = self.ports
        cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
        cfg["rule_files"] = [str(REPO / "prometheus" / "rules" / "*.yml")]
        cfg.pop("alerting", None)  # alert routing is the single-box suite's business
        targets = {"otel-collector": [f"127.0.0.1:{p['metrics']}"],
                   "otel-gateway": [f"127.0.0.1:{p[f'{g}_metrics']}" for g in GATEWAYS],
                   "tempo": [f"127.0.0.1:{p['tempo_http']}"], "prometheus": [f"127.0.0.1:{p['prometheus']}"]}
        cfg["scrape_configs"] = [job for job in cfg["scrape_configs"] if job["job_name"] in targets]
        for job in cfg["scrape_configs"]:
            job["static_configs"] = [{"targets": targets[job["job_name"]]}]
        path = self.dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(cfg))
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
        # The tests read every trade by id (hundreds): the default 50 query shards per lookup only add work
        # on a two-core machine where everything here is recent and in the ingester.
        cfg["query_frontend"]["trace_by_id"]["query_shards"] = 2
        path = self.dir / "tempo.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def write_hosts(self) -> None:
        """The agent's view of DNS: in place (same inode), so the bind mount in its namespace sees the change."""
        lines = ["127.0.0.1 localhost"] + [f"{ip} {GATEWAYS_HOSTNAME}" for ip in self.live_gateways.values()]
        with self.hosts_file.open("r+" if self.hosts_file.exists() else "w") as f:
            f.seek(0)
            f.write("\n".join(lines) + "\n")
            f.truncate()

    def agent_env(self) -> dict[str, str]:
        p = self.ports
        return {
            "QT_COLLECTOR_OTLP_GRPC_ADDR": f"127.0.0.1:{p['otlp_grpc']}",
            "QT_COLLECTOR_OTLP_HTTP_ADDR": f"127.0.0.1:{p['otlp_http']}",
            "QT_COLLECTOR_HEALTH_ADDR": f"127.0.0.1:{p['health']}",
            "QT_COLLECTOR_METRICS_HOST": "127.0.0.1",
            "QT_COLLECTOR_METRICS_PORT": str(p["metrics"]),
            "QT_PROMETHEUS_REMOTE_WRITE_URL": f"{self.prometheus_url}/api/v1/write",
            "QT_TEMPO_OTLP_GRPC_ADDR": f"127.0.0.1:{p['tempo_otlp']}",  # unused by the agent's pipelines
            "QT_GATEWAYS_HOSTNAME": GATEWAYS_HOSTNAME,
            "QT_GATEWAYS_OTLP_PORT": str(p["gateway_otlp"]),
            "QT_GATEWAYS_RESOLVE_INTERVAL": "1s",
        }

    def gateway_env(self, name: str) -> dict[str, str]:
        p = self.ports
        return {
            "QT_GATEWAY_NAME": name,
            "QT_GATEWAY_OTLP_GRPC_ADDR": f"{GATEWAYS[name]}:{p['gateway_otlp']}",
            "QT_GATEWAY_HEALTH_ADDR": f"127.0.0.1:{p[f'{name}_health']}",
            "QT_GATEWAY_METRICS_HOST": "127.0.0.1",
            "QT_GATEWAY_METRICS_PORT": str(p[f"{name}_metrics"]),
            "QT_TEMPO_OTLP_GRPC_ADDR": f"127.0.0.1:{p['tempo_otlp']}",
            "QT_GATEWAY_DECISION_WAIT": self.decision_wait,
            "QT_GATEWAY_SLOW_ORDER_MS": str(self.gateway_slow_order_ms),
            "QT_GATEWAY_MEMORY_LIMIT_MIB": "1000",
        }

    def _agent_argv(self) -> list[str]:
        # A private mount namespace (as root, or as a mapped root in a user namespace) where our hosts file is
        # /etc/hosts; Go re-reads /etc/hosts when it changes (checked at most every 5 s).
        userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        collector = [binary("otelcol_fleet"), f"--config={REPO / 'collector' / 'fleet' / 'agent.yaml'}"]
        return ["unshare", "--mount", *userns, "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                str(self.hosts_file), *collector]

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        p = self.ports
        self.write_hosts()
        self.servers["prometheus"] = Server("prometheus", [
            binary("prometheus"), f"--config.file={self._prometheus_config()}",
            f"--storage.tsdb.path={self.dir / 'prometheus-data'}", f"--web.listen-address=127.0.0.1:{p['prometheus']}",
            *fleet_prometheus_flags(),
        ], self.dir / "prometheus.log")
        self.servers["tempo"] = Server("tempo", [binary("tempo"), f"-config.file={self._tempo_config()}"],
                                       self.dir / "tempo.log")
        for name in GATEWAYS:
            self.servers[name] = Server(name, [binary("otelcol_fleet"),
                                               f"--config={REPO / 'collector' / 'fleet' / 'gateway.yaml'}"],
                                        self.dir / f"{name}.log", env=self.gateway_env(name))
        self.servers["agent"] = Server("agent", self._agent_argv(), self.dir / "agent.log", env=self.agent_env())
        for server in self.servers.values():
            server.start()
        checks = {"prometheus": f"{self.prometheus_url}/-/ready", "tempo": f"{self.tempo_url}/ready",
                  **{g: f"http://127.0.0.1:{p[f'{g}_health']}/" for g in GATEWAYS},
                  "agent": f"http://127.0.0.1:{p['health']}/"}
        for name, url in checks.items():
            server = self.servers[name]
            wait_until(lambda s=server, u=url: self._ready(s, u), 120, f"{name} at {url}\n{server.tail()}")
        wait_until(lambda: self.agent_backends() == len(GATEWAYS), 60, "the agent to resolve both gateways")

    @staticmethod
    def _ready(server: Server, url: str) -> bool:
        if not server.alive():
            raise AssertionError(f"{server.name} exited ({server.proc.returncode if server.proc else '?'}):\n"
                                 f"{server.tail()}")
        return http_ok(url)

    def kill_gateway(self, name: str) -> None:
        """SIGKILL (no flush, no goodbye), then the name service forgets it, as Docker's DNS does."""
        self.servers[name].stop(kill=True)
        del self.live_gateways[name]
        self.write_hosts()

    def stop(self) -> None:
        for server in reversed(list(self.servers.values())):
            server.stop()

    def logs(self) -> str:
        return "\n\n".join(f"===== {s.name} ({s.log}) =====\n{s.tail(60)}" for s in self.servers.values())

    # --- collectors' own metrics, read directly ------------------------------------------------------------
    def collector_metrics(self, name: str) -> list[tuple[str, dict[str, str], float]]:
        """A server's own /metrics: "agent", a gateway's name, or "tempo"."""
        urls = {"agent": self.agent_metrics, "tempo": f"{self.tempo_url}/metrics"}
        url = urls.get(name) or f"http://127.0.0.1:{self.ports[f'{name}_metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return parse_metrics(resp.read().decode())

    def metric_sum(self, name: str, metric: str, **labels: str) -> float:
        return sum(v for n, ls, v in self.collector_metrics(name)
                   if n == metric and all(ls.get(k) == want for k, want in labels.items()))

    def histogram_bound(self, name: str, metric: str, **labels: str) -> float:
        """The smallest bucket bound that holds every observation of a histogram so far (an upper bound of
        its largest value; the exposition has no max)."""
        buckets: dict[float, float] = {}
        for n, ls, v in self.collector_metrics(name):
            if n == f"{metric}_bucket" and all(ls.get(k) == want for k, want in labels.items()):
                le = float(ls["le"])
                buckets[le] = buckets.get(le, 0.0) + v
        total = buckets.get(float("inf"), 0.0)
        return min((le for le, count in buckets.items() if count >= total), default=float("inf"))

    def agent_backends(self) -> int:
        return int(self.metric_sum("agent", "otelcol_loadbalancer_num_backends"))

    def gateways_settled(self) -> bool:
        """Every trace a live gateway has seen has its verdict (kept or not). Dropped traces stay counted in
        traces_on_memory (their ids drop late spans) until evicted, so that gauge says nothing here."""
        for name in self.live_gateways:
            received = self.metric_sum(name, "otelcol_processor_tail_sampling_new_trace_id_received")
            decided = self.metric_sum(name, "otelcol_processor_tail_sampling_global_count_traces_sampled")
            if received == 0 or decided < received:
                return False
        return True

    # --- queries -------------------------------------------------------------------------------------------
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
        return [{**e, "series": series["seriesLabels"]} for series in reply["data"] for e in series["exemplars"]]

    def trace(self, trace_id: str) -> list[dict[str, Any]] | None:
        """Spans of a trace from Tempo (hex ids, resource attributes included), or None when Tempo has none."""
        try:
            reply = http_json(f"{self.tempo_url}/api/traces/{trace_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        spans = flatten_trace(reply)
        gateways = _resource_attribute(reply, "qt.sampling.gateway")
        for span in spans:
            span["gateway"] = gateways.get(span["span_id"])
        return spans


def _resource_attribute(reply: dict[str, Any], key: str) -> dict[str, Any]:
    """span id (hex) -> the value of a resource attribute of the batch it came in."""
    out: dict[str, Any] = {}
    for batch in reply.get("batches") or reply.get("resourceSpans") or []:
        attrs = {a["key"]: a["value"].get("stringValue") for a in batch.get("resource", {}).get("attributes", [])}
        for scope in batch.get("scopeSpans") or []:
            for span in scope.get("spans", []):
                out[_hex_id(span.get("spanId", ""))] = attrs.get(key)
    return out


def _hex_id(value: str) -> str:
    """Tempo answers ids in base64 (or hex, depending on the endpoint version)."""
    if re.fullmatch(r"[0-9a-f]{16}|[0-9a-f]{32}", value):
        return value
    return base64.b64decode(value).hex()


def fleet_prometheus_flags() -> list[str]:
    """The feature flags docker-compose.yml gives Prometheus (the fleet file keeps them)."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return [f for f in compose["services"]["prometheus"]["command"]
            if f.startswith(("--web.enable-remote-write-receiver", "--enable-feature"))]


def bot_env(fleet: Fleet, service: str, *, keep_ratio: float, native: bool, slow_s: float) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    return {**clean, "OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": fleet.otlp_http,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_BSP_SCHEDULE_DELAY": "200", "QT_TELEMETRY_TRACE_KEEP_RATIO": str(keep_ratio),
            "QT_TELEMETRY_NATIVE_HISTOGRAMS": "true" if native else "false",
            "QT_TELEMETRY_SLOW_ORDER_SECONDS": str(slow_s),
            "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}


def start_bot(fleet: Fleet, service: str, *args: str, **env: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.e2e.fleet.bot", *args], cwd=REPO,
                            env=bot_env(fleet, service, **env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_bot(proc: subprocess.Popen[str], timeout: float = 300) -> list[dict[str, Any]]:
    """Close stdin (stops a --duration 0 bot), wait, and return its trade records."""
    out, err = proc.communicate(input="", timeout=timeout)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1] == {"shutdown_ok": True}, f"the bot must flush everything to a live agent: {lines[-1:]}\n{err}"
    return lines[:-1]


def spans_by_id(spans: Iterable[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {s["span_id"]: (s["parent_span_id"], s["name"]) for s in spans}
