"""Grafana's server on loopback, loaded with the repo's own provisioning, driven through its HTTP API.

The server is the one version Go's module registry serves (scripts/build-servers.sh; compose runs 13.x): it
has no frontend bundle, so everything a browser would do is done here through the API the frontend calls —
datasource health, `/api/ds/query` for panels and traces, the alerting API for Alertmanager. Only datasource
URLs and the dashboards path are rewritten; the admin password is random per run, anonymous access is off.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.stack import Server, Stack, free_port, wait_until
from tests.support.servers import REPO, binary

PROVISIONING = REPO / "grafana" / "provisioning"
DASHBOARDS = REPO / "grafana" / "dashboards"


class GrafanaError(AssertionError):
    def __init__(self, status: int, path: str, body: str) -> None:
        super().__init__(f"Grafana answered {status} to {path}: {body[:2000]}")
        self.status = status


class Grafana:
    """Grafana with grafana/provisioning (datasource URLs -> the stack's loopback ports) and grafana/dashboards."""

    BINARY = "grafana"

    def __init__(self, stack: Stack, workdir: Path) -> None:
        self.stack = stack
        self.dir = workdir
        self.url = f"http://127.0.0.1:{free_port()}"
        self.user = "admin"
        self.password = secrets.token_urlsafe(24)
        self.log = self.dir / "grafana.log"

    # --- configuration -------------------------------------------------------------------------------
    def datasource_urls(self) -> dict[str, str]:
        """Loopback URL of each shipped datasource, by uid (a datasource added to the repo must appear here)."""
        return {"prometheus": self.stack.prometheus_url, "tempo": self.stack.tempo_url,
                "alertmanager": self.stack.alertmanager_url}

    def _provisioning(self) -> Path:
        """The shipped provisioning tree, with datasource URLs and the dashboards path rewritten."""
        root = self.dir / "provisioning"
        shutil.copytree(PROVISIONING, root)
        datasources = root / "datasources" / "datasources.yaml"
        doc = yaml.safe_load(datasources.read_text())
        urls = self.datasource_urls()
        for source in doc["datasources"]:
            source["url"] = urls[source["uid"]]
        datasources.write_text(yaml.safe_dump(doc, sort_keys=False))
        dashboards = root / "dashboards" / "dashboards.yaml"
        doc = yaml.safe_load(dashboards.read_text())
        for provider in doc["providers"]:
            provider["options"]["path"] = str(DASHBOARDS)
        dashboards.write_text(yaml.safe_dump(doc, sort_keys=False))
        # legacy alert notifiers: read (and logged as an error when missing) by this Grafana only; gone in 11
        (root / "notifiers").mkdir(exist_ok=True)
        return root

    def _config(self) -> Path:
        port = self.url.rsplit(":", 1)[1]
        ini = f"""\
[paths]
data = {self.dir / "data"}
logs = {self.dir / "logs"}
plugins = {self.dir / "plugins"}
provisioning = {self._provisioning()}

[server]
protocol = http
http_addr = 127.0.0.1
http_port = {port}

[security]
admin_user = {self.user}
disable_gravatar = true

[auth.anonymous]
enabled = false

[users]
allow_sign_up = false

[analytics]
reporting_enabled = false
check_for_updates = false
check_for_plugin_updates = false

[news]
news_feed_enabled = false

[log]
mode = console
level = info

[log.console]
format = text
"""
        path = self.dir / "grafana.ini"
        path.write_text(ini)
        return path

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> None:
        """Start Grafana and wait for its API and database. Its server joins the stack's: logs shown on a
        failing e2e test, stopped with the stack. The --homepath is the ``home`` directory next to the binary
        (scripts/build-servers.sh puts conf/ and public/ there; so must a QT_E2E_GRAFANA of your own)."""
        executable = Path(binary(self.BINARY))
        server = Server("grafana", [str(executable), "server", f"--homepath={executable.parent / 'home'}",
                                    f"--config={self._config()}"], self.log,
                        env={"GF_SECURITY_ADMIN_PASSWORD": self.password})
        self.stack.servers["grafana"] = server
        server.start()

        def healthy() -> bool:
            if not server.alive():
                raise AssertionError(f"grafana exited ({server.proc.returncode if server.proc else '?'}):\n"
                                     f"{server.tail()}")
            return bool(self.api("/api/health", auth=False).get("database") == "ok")

        wait_until(healthy, timeout, f"Grafana's /api/health at {self.url}\n{server.tail()}")

    # --- API -----------------------------------------------------------------------------------------
    def api(self, path: str, body: Any = None, auth: bool | tuple[str, str] = True, timeout: float = 30) -> Any:
        """JSON from Grafana's HTTP API (basic auth as admin unless ``auth`` says otherwise); non-2xx raises
        :class:`GrafanaError` with the answer's body."""
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if auth:
            user, password = auth if isinstance(auth, tuple) else (self.user, self.password)
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise GrafanaError(exc.code, path, exc.read().decode(errors="replace")) from None
        try:
            return json.loads(raw or b"null")
        except json.JSONDecodeError:
            return raw.decode(errors="replace")

    def query(self, queries: list[dict[str, Any]], start: float, end: float) -> dict[str, QueryResult]:
        """Run queries through ``/api/ds/query`` (what a panel does) over [start, end] (epoch seconds)."""
        reply = self.api("/api/ds/query", {"from": str(int(start * 1000)), "to": str(int(end * 1000)),
                                            "queries": queries})
        return {ref: QueryResult(ref, answer) for ref, answer in reply["results"].items()}

    def dashboards(self) -> list[dict[str, Any]]:
        """Every dashboard as Grafana serves it (``/api/dashboards/uid/...``: dashboard + meta)."""
        found = self.api("/api/search?type=dash-db")
        return [self.api(f"/api/dashboards/uid/{hit['uid']}") for hit in found]


# --- data frames -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    name: str
    columns: dict[str, list[Any]]  # field name -> values
    labels: dict[str, dict[str, str]]  # field name -> labels

    @classmethod
    def from_json(cls, frame: dict[str, Any]) -> Frame:
        fields = frame["schema"].get("fields", [])
        values = frame.get("data", {}).get("values", [])
        columns = {f["name"]: list(v) for f, v in zip(fields, values)}
        return cls(frame["schema"].get("name", ""), columns, {f["name"]: f.get("labels", {}) for f in fields})

    def numbers(self) -> list[float]:
        """Every non-null number in the frame's value fields (not its time field)."""
        return [v for name, column in self.columns.items() if name not in ("Time", "time")
                for v in column if isinstance(v, (int, float)) and not isinstance(v, bool)]


@dataclass(frozen=True)
class QueryResult:
    ref_id: str
    answer: dict[str, Any]

    @property
    def error(self) -> str | None:
        return self.answer.get("error")

    @property
    def frames(self) -> list[Frame]:
        return [Frame.from_json(f) for f in self.answer.get("frames", [])]

    def data_frames(self) -> list[Frame]:
        """Frames with at least one number, exemplar frames excluded (those are a panel's diamonds)."""
        return [f for f in self.frames if f.name != "exemplar" and f.numbers()]

    def exemplar_frames(self) -> list[Frame]:
        return [f for f in self.frames if f.name == "exemplar"]


# --- panels ------------------------------------------------------------------------------------------------

GRAFANA_MACROS = re.compile(r"\$__(rate_interval|interval|range)\b")


def instantiate(target: dict[str, Any], templating: dict[str, Any], chosen: dict[str, str] | None = None
                ) -> dict[str, Any]:
    """A panel target as the frontend sends it: dashboard variables replaced by their current value ("All" ->
    the variable's allValue) or by ``chosen``; Grafana's own macros ($__rate_interval …) are left to the
    backend. A variable this cannot resolve fails here rather than reaching Prometheus."""
    values = {}
    for var in templating.get("list", []):
        current = var.get("current", {}).get("value")
        all_selected = current in ("$__all", ["$__all"])
        values[var["name"]] = (chosen or {}).get(var["name"]) or (var["allValue"] if all_selected else current)
    expr = target["expr"]
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    leftover = GRAFANA_MACROS.sub("", expr)
    assert "$" not in leftover, f"unresolved variable in {target['expr']!r} -> {expr!r}"
    return {**target, "expr": expr, "intervalMs": 15_000, "maxDataPoints": 300}


def recent(seconds: float) -> tuple[float, float]:
    now = time.time()
    return now - seconds, now
