"""`qt-telemetry doctor`: passes on the real stack; each missing piece fails with the right one-line message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.stack import Server, Stack, free_port, http_ok, wait_until
from tests.support.servers import REPO, binary


def _doctor(stack: Stack, *args: str, timeout: str = "60") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_", "QT_PROMETHEUS",
                                                                          "QT_TEMPO"))}
    cmd = [sys.executable, "-m", "qt_telemetry.cli", "doctor", "--otlp-endpoint", stack.otlp_http,
           "--prometheus-url", stack.prometheus_url, "--tempo-url", stack.tempo_url, "--timeout", timeout, *args]
    return subprocess.run(cmd, cwd=REPO, env=clean, capture_output=True, text=True, timeout=300)


def _line(out: str, check: str) -> str:
    return next(line for line in out.splitlines() if line[5:].startswith(check))


def test_doctor_passes_when_the_whole_drill_path_works(stack: Stack) -> None:
    proc = _doctor(stack)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "10 of 10 checks passed" in proc.stdout
    for check in ("collector reachable", "synthetic traced order exported", "Prometheus reachable",
                  "exemplar storage on", "Prometheus has our series", "histogram unit and buckets",
                  "cumulative temporality", "exemplar for the order", "Grafana exemplar link",
                  "Tempo returns the trace"):
        assert _line(proc.stdout, check).startswith("ok  "), check


def test_doctor_over_grpc_passes_too(stack: Stack) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    proc = subprocess.run([sys.executable, "-m", "qt_telemetry.cli", "doctor", "--otlp-endpoint", stack.otlp_grpc,
                           "--protocol", "grpc", "--prometheus-url", stack.prometheus_url, "--tempo-url",
                           stack.tempo_url], cwd=REPO, env=clean, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("missing", "check", "message"),
    [
        ("collector", "collector reachable", "nothing answers at 127.0.0.1"),
        ("prometheus", "Prometheus reachable", "does not answer"),
        ("tempo", "Tempo returns the trace", "does not answer"),
    ],
)
def test_doctor_names_the_missing_component_and_the_fix(stack: Stack, missing: str, check: str, message: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    override = {"collector": ["--otlp-endpoint", closed], "prometheus": ["--prometheus-url", closed],
                "tempo": ["--tempo-url", closed]}[missing]
    proc = _doctor(stack, *override, timeout="5")
    assert proc.returncode == 1
    line = _line(proc.stdout, check)
    assert line.startswith("FAIL") and message in line and "fix:" in line


def test_doctor_detects_prometheus_without_exemplar_storage(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    prom = Server("prometheus-no-exemplars", [
        binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"], tmp_path / "prom.log")
    prom.start()
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), 60, "second prometheus")
        proc = _doctor(stack, "--prometheus-url", f"http://127.0.0.1:{port}", timeout="5")
    finally:
        prom.stop()
    assert proc.returncode == 1
    line = _line(proc.stdout, "exemplar storage on")
    assert line.startswith("FAIL") and "--enable-feature=exemplar-storage" in line


def test_doctor_detects_a_grafana_exemplar_label_mismatch(stack: Stack, tmp_path: Path) -> None:
    text = (REPO / "grafana" / "provisioning" / "datasources" / "datasources.yaml").read_text()
    wrong = tmp_path / "datasources.yaml"
    wrong.write_text(text.replace("- name: trace_id", "- name: traceID"))
    proc = _doctor(stack, "--grafana-datasources", str(wrong))
    assert proc.returncode == 1
    line = _line(proc.stdout, "Grafana exemplar link")
    assert line.startswith("FAIL") and "exemplars carry 'trace_id'" in line and "traceID" in line
