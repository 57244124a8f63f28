"""``qt-telemetry doctor``: prove the drill path end to end, or say in one line what is broken and how to fix it.

It exports one synthetic traced order (in a trade flow) through the real SDK, then follows it: collector ->
Prometheus (series, units, buckets, exemplar with the order's trace id) -> the Grafana exemplar link -> Tempo
(the trace by id). Exit status 0 only when every check passes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qt_telemetry import semconv
from qt_telemetry._config import ConfigurationError
from qt_telemetry.cli.args import number

_LATENCY = semconv.ORDER_LATENCY.prometheus + "_bucket"
_NATIVE = semconv.ORDER_LATENCY.prometheus
_ORDERS = semconv.ORDER_LATENCY.prometheus + "_count"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--otlp-endpoint", default=env("QT_TELEMETRY_ENDPOINT") or env("OTEL_EXPORTER_OTLP_ENDPOINT"),
                        help="collector OTLP endpoint (default: OTEL_EXPORTER_OTLP_ENDPOINT or the compose default)")
    parser.add_argument("--protocol", choices=("http/protobuf", "grpc"),
                        default=env("QT_TELEMETRY_PROTOCOL") or env("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf",
                        help="OTLP protocol of the synthetic order (default: OTEL_EXPORTER_OTLP_PROTOCOL or "
                             "http/protobuf)")
    parser.add_argument("--prometheus-url", default=env("QT_PROMETHEUS_URL", "http://localhost:9090"),
                        help="Prometheus to query (default: QT_PROMETHEUS_URL or http://localhost:9090)")
    parser.add_argument("--tempo-url", default=env("QT_TEMPO_URL", "http://localhost:3200"),
                        help="Tempo to fetch the trace from (default: QT_TEMPO_URL or http://localhost:3200)")
    parser.add_argument("--grafana-url", default=env("QT_GRAFANA_URL", "http://localhost:3000"),
                        help="the running Grafana whose datasources to check (default: QT_GRAFANA_URL or "
                             "http://localhost:3000; its API needs GRAFANA_ADMIN_PASSWORD, else the file below)")
    parser.add_argument("--grafana-datasources", default=env("QT_GRAFANA_DATASOURCES"),
                        help="Grafana datasource provisioning file to check the exemplar link in when Grafana "
                             "does not answer (default: grafana/provisioning/datasources/datasources.yaml)")
    parser.add_argument("--timeout", type=number(0, above=True, high=3600), default=None,
                        help=f"seconds to wait for data to arrive at each server (default: {TIMEOUT_VARIABLE} or 60)")


TIMEOUT_VARIABLE = "QT_DOCTOR_TIMEOUT"


def timeout_from(args: argparse.Namespace) -> float:
    """``--timeout``, else ``QT_DOCTOR_TIMEOUT``, else 60; a bad variable is a configuration error naming it."""
    if args.timeout is not None:
        return float(args.timeout)
    raw = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return 60.0
    try:
        return number(0, above=True, high=3600)(raw)
    except argparse.ArgumentTypeError as exc:
        raise ConfigurationError(f"{TIMEOUT_VARIABLE}={raw!r}: {exc}; expected seconds, e.g. 60") from None


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    #: Not run because the check it needs failed (named in ``detail``): one cause, not one FAIL per check.
    skipped: bool = False


class Doctor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        args.timeout = timeout_from(args)
        default = "http://localhost:4317" if args.protocol == "grpc" else "http://localhost:4318"
        self.endpoint: str = args.otlp_endpoint or default
        self.prometheus = args.prometheus_url.rstrip("/")
        self.tempo = args.tempo_url.rstrip("/")
        self.service = f"qt-telemetry-doctor-{uuid.uuid4().hex[:8]}"
        self.results: list[Check] = []
        self.trace_id = ""
        self.exemplar_label = ""
        self.latency_series = _LATENCY

    # --- plumbing -----------------------------------------------------------------------------------
    def record(self, name: str, ok: bool, detail: str) -> bool:
        self.results.append(Check(name, ok, detail))
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
        return ok

    def skip(self, name: str, needs: str) -> bool:
        self.results.append(Check(name, False, f"needs '{needs}'", skipped=True))
        print(f"skip {name}: not checked, because '{needs}' failed", flush=True)
        return False

    def _get(self, url: str, timeout: float = 5) -> Any:
        req = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    def _prom(self, path: str, **params: str) -> Any:
        reply = self._get(f"{self.prometheus}{path}?{urllib.parse.urlencode(params)}")
        if reply.get("status") != "success":
            raise RuntimeError(reply)
        return reply["data"]

    def _poll(self, fn: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.args.timeout
        while True:
            try:
                value = fn()
                if value:
                    return value
            except (urllib.error.URLError, OSError, RuntimeError, KeyError, ValueError):
                pass
            if time.monotonic() >= deadline:
                return None
            time.sleep(1)

    # --- the checks ---------------------------------------------------------------------------------
    def collector_reachable(self) -> bool:
        parts = urllib.parse.urlsplit(self.endpoint)
        host, port = parts.hostname or "localhost", parts.port or (4317 if self.args.protocol == "grpc" else 4318)
        try:
            with socket.create_connection((host, port), timeout=3):
                pass
        except OSError as exc:
            return self.record("collector reachable", False,
                               f"nothing answers at {host}:{port} ({exc.strerror or exc}); fix: `docker compose up -d "
                               f"otel-collector`, or point OTEL_EXPORTER_OTLP_ENDPOINT at your collector")
        return self.record("collector reachable", True, f"{self.args.protocol} at {self.endpoint}")

    def export_synthetic_order(self) -> bool:
        import qt_telemetry as qt

        qt.init(mode="otlp", endpoint=self.endpoint, protocol=self.args.protocol, service_name=self.service,
                metric_export_interval=1.0, shutdown_timeout=10.0)

        @qt.traced_order(venue="doctor")
        def place_order(symbol: str, side: str, quantity: float, order_type: str = "market") -> dict[str, str]:
            time.sleep(0.003)
            return {"orderId": "doctor-1"}

        with qt.trade_flow(symbol="DOCTOR", strategy="doctor") as flow:
            with flow.signal(confidence=1.0):
                pass
            with flow.execution():
                place_order("DOCTOR", "buy", 1)
        self.trace_id = flow.trace_id
        time.sleep(1.2)  # a second cumulative export of the same counter
        flushed = qt.force_flush(10.0)  # True only once the collector took it
        qt.shutdown()
        if not flushed:
            return self.record("synthetic traced order exported", False,
                               f"the collector did not accept the export within 10s; fix: check its logs "
                               f"(`docker compose logs otel-collector`) and that {self.args.protocol} is the protocol "
                               f"it listens on at {self.endpoint}")
        return self.record("synthetic traced order exported", True, f"trace {self.trace_id} (service {self.service})")

    def prometheus_reachable(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.prometheus}/-/ready", timeout=5) as resp:
                ok = resp.status == 200
        except (urllib.error.URLError, OSError) as exc:
            return self.record("Prometheus reachable", False,
                               f"{self.prometheus} does not answer ({getattr(exc, 'reason', exc)}); "
                               "fix: `docker compose up -d prometheus` or pass --prometheus-url")
        return self.record("Prometheus reachable", ok, self.prometheus if ok else "not ready yet; retry in a minute")

    def exemplar_storage_on(self) -> bool:
        try:
            flags = self._prom("/api/v1/status/flags")
        except Exception as exc:  # noqa: BLE001
            return self.record("exemplar storage on", False, f"cannot read Prometheus flags: {exc}")
        features = str(flags.get("enable-feature", ""))
        remote_write = str(flags.get("web.enable-remote-write-receiver", "")).lower() == "true"
        if "exemplar-storage" not in features:
            return self.record("exemplar storage on", False,
                               "Prometheus runs without exemplar storage, so latency panels cannot link to traces; "
                               "fix: start it with --enable-feature=exemplar-storage")
        if not remote_write:
            return self.record("exemplar storage on", False,
                               "exemplar storage is on but the remote-write receiver is off, so the collector cannot "
                               "write; fix: start Prometheus with --web.enable-remote-write-receiver")
        return self.record("exemplar storage on", True, "exemplar-storage and the remote-write receiver are enabled")

    def series_present(self) -> bool:
        query = f'{_ORDERS}{{service_name="{self.service}"}}'
        rows = self._poll(lambda: self._prom("/api/v1/query", query=query)["result"])
        if not rows:
            return self.record("Prometheus has our series", False,
                               f"no {_ORDERS} for {self.service} after {self.args.timeout:.0f}s; fix: check the "
                               "collector's prometheus_remote_write exporter points at this Prometheus "
                               "(QT_PROMETHEUS_REMOTE_WRITE_URL) and its logs for write errors")
        value = max(float(r["value"][1]) for r in rows)
        if value != 1:
            return self.record("Prometheus has our series", False, f"{_ORDERS} is {value}, expected 1")
        return self.record("Prometheus has our series", True, f"{_ORDERS}{{service_name=\"{self.service}\"}} = 1")

    def histogram_sane(self) -> bool:
        rows = self._prom("/api/v1/query", query=f'{_LATENCY}{{service_name="{self.service}"}}')["result"]
        bounds = sorted(float(r["metric"]["le"]) for r in rows if r["metric"]["le"] != "+Inf")
        native = self._prom("/api/v1/query", query=f'{_NATIVE}{{service_name="{self.service}"}}')["result"]
        if not bounds and any("histogram" in r for r in native):
            self.latency_series = _NATIVE  # QT_TELEMETRY_NATIVE_HISTOGRAMS: one series, exponential buckets
            return self.record("histogram unit and buckets", True, f"seconds, a native histogram ({_NATIVE})")
        if not bounds:
            return self.record("histogram unit and buckets", False,
                               f"no {_LATENCY} series: the latency histogram is missing or not in seconds")
        expected = list(semconv.LATENCY_BUCKETS_S)
        if bounds != expected:
            return self.record("histogram unit and buckets", False,
                               f"buckets are {bounds[:4]}...; expected {expected[:4]}... seconds — the SDK defaults "
                               "(0..10000) put every order in one bucket; fix: do not override qt.order.latency's view")
        return self.record("histogram unit and buckets", True,
                           f"seconds, {len(bounds)} buckets from {bounds[0]:g}s to {bounds[-1]:g}s")

    def cumulative(self) -> bool:
        preference = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative").lower()
        if preference != "cumulative":
            return self.record("cumulative temporality", False,
                               f"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE={preference}: Prometheus remote "
                               "write drops delta sums and histograms; fix: unset it (cumulative is the default)")
        query = f'count_over_time({_ORDERS}{{service_name="{self.service}"}}[5m])'
        rows = self._prom("/api/v1/query", query=query)["result"]
        samples = max((float(r["value"][1]) for r in rows), default=0)
        if samples < 1:
            return self.record("cumulative temporality", False, "no counter samples to judge by")
        return self.record("cumulative temporality", True,
                           f"the order counter stayed at 1 over {samples:.0f} exports (cumulative)")

    def exemplar_present(self) -> bool:
        def find() -> list[dict[str, Any]]:
            series = self._prom("/api/v1/query_exemplars",
                                query=f'{self.latency_series}{{service_name="{self.service}"}}',
                                start=f"{time.time() - 600:.0f}", end=f"{time.time() + 60:.0f}")
            return [e for s in series for e in s["exemplars"]]

        exemplars = self._poll(find)
        if not exemplars:
            return self.record("exemplar for the order", False,
                               f"no exemplar on {_LATENCY} for {self.service}; fix: record latency inside the span "
                               "(@traced_order does) and keep OTEL_METRICS_EXEMPLAR_FILTER=trace_based")
        labels = exemplars[0]["labels"]
        key = next((k for k in ("trace_id", "traceID", "traceId") if k in labels), "")
        self.exemplar_label = key
        if labels.get(key) != self.trace_id:
            return self.record("exemplar for the order", False,
                               f"exemplar points at trace {labels.get(key)!r}, expected {self.trace_id}")
        return self.record("exemplar for the order", True, f"{key}={self.trace_id}")

    def _grafana_datasources(self) -> tuple[list[dict[str, Any]] | None, str]:
        """The running Grafana's datasources (its API), or None and why not: then the provisioning file says."""
        url = (self.args.grafana_url or "").rstrip("/")
        if not url:
            return None, "no --grafana-url"
        try:
            health = self._get(f"{url}/api/health", timeout=3)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return None, f"Grafana at {url} did not answer ({getattr(exc, 'reason', exc)})"
        password = os.environ.get("GRAFANA_ADMIN_PASSWORD", "")
        if not password:
            return None, (f"Grafana {health.get('version', '?')} answers at {url}; set GRAFANA_ADMIN_PASSWORD to "
                          "check its own datasources")
        import base64

        token = base64.b64encode(f"{os.environ.get('QT_GRAFANA_USER', 'admin')}:{password}".encode()).decode()
        req = urllib.request.Request(f"{url}/api/datasources",
                                     headers={"Accept": "application/json", "Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read()), f"Grafana {health.get('version', '?')} at {url}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return None, f"Grafana at {url} refused the datasource query ({getattr(exc, 'reason', exc)})"

    def grafana_link(self) -> bool:
        sources, where = self._grafana_datasources()
        if sources is not None:
            return self._exemplar_link(sources, where)
        path = self.args.grafana_datasources
        if path is None:
            candidate = Path.cwd() / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
            path = str(candidate) if candidate.exists() else None
        if path is None:
            return self.record("Grafana exemplar link", False,
                               f"{where}, and no datasource provisioning file found; fix: start Grafana (`docker "
                               "compose up -d grafana`) or pass --grafana-datasources "
                               "grafana/provisioning/datasources/datasources.yaml")
        import yaml

        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            return self.record("Grafana exemplar link", False, f"cannot read {path}: {exc}")
        return self._exemplar_link(doc.get("datasources", []), f"{path} ({where})")

    def _exemplar_link(self, sources: list[dict[str, Any]], path: str) -> bool:
        tempo_uids = {d.get("uid") for d in sources if d.get("type") == "tempo"}
        links = [link for d in sources if d.get("type") == "prometheus"
                 for link in (d.get("jsonData") or {}).get("exemplarTraceIdDestinations", [])]
        if not links:
            return self.record("Grafana exemplar link", False,
                               f"{path}: the Prometheus datasource has no exemplarTraceIdDestinations; fix: add "
                               f"{{name: {self.exemplar_label or 'trace_id'}, datasourceUid: <tempo uid>}}")
        names = {link.get("name") for link in links}
        if self.exemplar_label and self.exemplar_label not in names:
            return self.record("Grafana exemplar link", False,
                               f"exemplars carry '{self.exemplar_label}' but Grafana looks for {sorted(names)}; fix: "
                               f"set exemplarTraceIdDestinations name to '{self.exemplar_label}'")
        if not any(link.get("datasourceUid") in tempo_uids for link in links):
            return self.record("Grafana exemplar link", False,
                               f"the exemplar link targets {[link.get('datasourceUid') for link in links]}, "
                               f"not a Tempo datasource ({sorted(u for u in tempo_uids if u)})")
        return self.record("Grafana exemplar link", True,
                           f"'{self.exemplar_label or 'trace_id'}' opens Tempo (checked in {path})")

    def tempo_has_trace(self) -> bool:
        def fetch() -> bool:
            req = urllib.request.Request(f"{self.tempo}/api/traces/{self.trace_id}",
                                         headers={"Accept": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status == 200 and "qt.order.place" in resp.read().decode()

        try:
            urllib.request.urlopen(f"{self.tempo}/ready", timeout=5).close()
        except (urllib.error.URLError, OSError) as exc:
            return self.record("Tempo returns the trace", False,
                               f"{self.tempo} does not answer ({getattr(exc, 'reason', exc)}); fix: `docker compose "
                               "up -d tempo` or pass --tempo-url")
        if not self._poll(fetch):
            return self.record("Tempo returns the trace", False,
                               f"trace {self.trace_id} not in Tempo after {self.args.timeout:.0f}s; fix: check the "
                               "collector's otlp_grpc/tempo exporter (QT_TEMPO_OTLP_GRPC_ADDR) and Tempo's logs")
        return self.record("Tempo returns the trace", True, f"{self.tempo}/api/traces/{self.trace_id}")

    def run(self) -> int:
        print(f"qt-telemetry doctor: collector {self.endpoint} ({self.args.protocol}), Prometheus {self.prometheus}, "
              f"Tempo {self.tempo}", flush=True)
        exported = (self.export_synthetic_order() if self.collector_reachable()
                    else self.skip("synthetic traced order exported", "collector reachable"))
        prom = self.prometheus_reachable()
        if prom:
            self.exemplar_storage_on()
        else:
            self.skip("exemplar storage on", "Prometheus reachable")
        series = (self.series_present() if prom and exported
                  else self.skip("Prometheus has our series",
                                 "Prometheus reachable" if not prom else "synthetic traced order exported"))
        for name, check in (("histogram unit and buckets", self.histogram_sane),
                            ("cumulative temporality", self.cumulative),
                            ("exemplar for the order", self.exemplar_present)):
            if series:
                check()
            else:
                self.skip(name, "Prometheus has our series")
        self.grafana_link()
        if exported:
            self.tempo_has_trace()
        else:
            self.skip("Tempo returns the trace", "synthetic traced order exported")
        failed = [r for r in self.results if not r.ok and not r.skipped]
        skipped = [r for r in self.results if r.skipped]
        passed = len(self.results) - len(failed) - len(skipped)
        summary = f"{passed} of {len(self.results)} checks passed"
        if failed:
            summary += (f": {len(failed)} failed ({', '.join(r.name for r in failed)})"
                        + (f", {len(skipped)} not checked because of them" if skipped else "")
                        + f"; fix '{failed[0].name}' first")
        print(summary, flush=True)
        if not failed and not skipped:
            print(f"the drill works: in Grafana's Trading Overview, click an exemplar on 'Order latency' "
                  f"(or open trace {self.trace_id} in Tempo)", flush=True)
        return 0 if not failed and not skipped else 1


def run_doctor(args: argparse.Namespace) -> int:
    return Doctor(args).run()
