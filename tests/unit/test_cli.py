"""The `qt-telemetry` command refuses what it cannot run, names the option, and says what it skipped and why."""

from __future__ import annotations

import argparse
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from qt_telemetry import __version__
from qt_telemetry.cli import main
from qt_telemetry.cli.doctor import Doctor, add_arguments
from qt_telemetry.cli.view import _how_long
from tests.support.servers import REPO


@pytest.mark.parametrize(("args", "message"), [
    (["--rate", "0"], "argument --rate: '0': expected a number greater than 0"),
    (["--rate", "-5"], "argument --rate"),
    (["--rate", "nan"], "argument --rate"),
    (["--symbols", ""], "argument --symbols: expected at least one symbol"),
    (["--symbols", " , ,"], "argument --symbols: expected at least one symbol"),
    (["--symbols", "BTC USDT"], "argument --symbols: 'BTC USDT' is not a symbol"),
    (["--duration", "-1"], "argument --duration: '-1': expected a number at least 0"),
    (["--ticks", "-3"], "argument --ticks"),
    (["--ticks", "2.5"], "argument --ticks: '2.5' is not a whole number"),
    (["--loss-limit", "0"], "argument --loss-limit"),
    (["--loss-limit", "-10"], "argument --loss-limit"),
    (["--metrics-port", "70000"], "argument --metrics-port"),
])
def test_demo_refuses_values_it_cannot_run_naming_the_option(args: list[str], message: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"qt-telemetry {__version__}"


def test_a_bad_doctor_timeout_variable_never_breaks_help_and_is_named_by_doctor(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("QT_DOCTOR_TIMEOUT", "abc")
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert main(["doctor"]) == 2
    assert "QT_DOCTOR_TIMEOUT='abc'" in capsys.readouterr().err


@pytest.mark.parametrize(("duration", "ticks", "said"), [
    (60.0, 0, "60s"), (0.0, 0, "until Ctrl-C"), (0.0, 3, "3 ticks"),
    (60.0, 3, "3 ticks or 60s, whichever comes first")])
def test_the_banner_says_what_stops_the_run(duration: float, ticks: int, said: str) -> None:
    assert _how_long(duration, ticks) == said


def _doctor_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_doctor_without_a_stack_names_the_causes_and_skips_what_depends_on_them(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    closed = "http://127.0.0.1:9"
    doctor = Doctor(_doctor_args("--otlp-endpoint", closed, "--prometheus-url", closed, "--tempo-url", closed,
                                 "--grafana-url", closed, "--timeout", "1"))
    assert doctor.run() == 1
    out = capsys.readouterr().out
    status = {line[5:].split(":")[0]: line[:4] for line in out.splitlines()[1:-1]}
    assert status == {
        "collector reachable": "FAIL", "synthetic traced order exported": "skip", "Prometheus reachable": "FAIL",
        "exemplar storage on": "skip", "Prometheus has our series": "skip", "histogram unit and buckets": "skip",
        "cumulative temporality": "skip", "exemplar for the order": "skip", "Grafana exemplar link": "ok  ",
        "Tempo returns the trace": "skip"}
    assert "skip Prometheus has our series: not checked, because 'Prometheus reachable' failed" in out
    assert out.splitlines()[-1] == ("1 of 10 checks passed: 2 failed (collector reachable, Prometheus reachable), "
                                    "7 not checked because of them; fix 'collector reachable' first")
    assert "Grafana at http://127.0.0.1:9 did not answer" in out  # the file was checked instead, and it says so


@pytest.fixture
def grafana() -> Iterator[dict[str, Any]]:
    """A stand-in for Grafana's HTTP API: /api/health, and /api/datasources behind basic auth."""
    state: dict[str, Any] = {"label": "trace_id", "auth": None}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/api/health":
                body: Any = {"database": "ok", "version": "13.2.3"}
            elif self.path == "/api/datasources":
                state["auth"] = self.headers.get("Authorization")
                body = [{"uid": "prometheus", "type": "prometheus", "jsonData": {"exemplarTraceIdDestinations": [
                            {"name": state["label"], "datasourceUid": "tempo"}]}},
                        {"uid": "tempo", "type": "tempo", "jsonData": {}}]
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def test_doctor_asks_the_running_grafana_for_its_datasources(grafana: dict[str, Any],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAFANA_ADMIN_PASSWORD", "s3cret-pw")
    doctor = Doctor(_doctor_args("--grafana-url", grafana["url"], "--grafana-datasources", "/nonexistent"))
    doctor.exemplar_label = "trace_id"
    assert doctor.grafana_link()
    assert f"checked in Grafana 13.2.3 at {grafana['url']}" in doctor.results[-1].detail
    assert grafana["auth"] == "Basic " + base64.b64encode(b"admin:s3cret-pw").decode()
    grafana["label"] = "traceID"  # what the running Grafana says wins over the file
    assert not doctor.grafana_link()
    assert "exemplars carry 'trace_id' but Grafana looks for ['traceID']" in doctor.results[-1].detail


def test_doctor_without_grafana_credentials_checks_the_file_and_says_so(grafana: dict[str, Any],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAFANA_ADMIN_PASSWORD", raising=False)
    path = REPO / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
    doctor = Doctor(_doctor_args("--grafana-url", grafana["url"], "--grafana-datasources", str(path)))
    assert doctor.grafana_link()
    detail = doctor.results[-1].detail
    assert "Grafana 13.2.3 answers" in detail and "GRAFANA_ADMIN_PASSWORD" in detail
