"""The README's first command, pasted as written on a fresh machine: a copy of the clone, a new venv, pip
install, the demo (stopped with Ctrl-C, as the README says); then the launcher of step 1 in that venv, where
qt-telemetry's is the only distro, against a local OTLP receiver. Slow (pip): once per suite run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.otlp_receiver import OtlpHttpReceiver
from tests.support.servers import REPO
from tests.unit.test_docs import quickstart_commands

pytestmark = pytest.mark.readme


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """What a clone holds: the tracked files and the new ones git does not ignore (no .venv, no caches)."""
    target = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    yield target


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("OTEL_", "QT_TELEMETRY_", "VIRTUAL_ENV", "PYTHONPATH"))}
    return {**clean, **extra}


@pytest.fixture(scope="module")
def demo_run(fresh_clone: Path) -> dict[str, object]:
    command = quickstart_commands()[0]
    # Where another demo or collector may already run, keep this one on free ports and in local mode.
    env = _env(QT_TELEMETRY_METRICS_PORT="0", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    started = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", command], cwd=fresh_clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    installed_at = first_tick_at = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("qt-telemetry demo:") and installed_at is None:
                installed_at = time.monotonic() - started
            if line.startswith("tick ") and " orders " in line:
                first_tick_at = time.monotonic() - started
                time.sleep(2)
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
                break
            if time.monotonic() - started > 600:
                break
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return {"rc": proc.returncode, "out": "".join(lines) + out, "err": err, "installed_at": installed_at,
            "first_tick_at": first_tick_at, "took": time.monotonic() - started}


def test_the_first_command_as_written_installs_and_runs_the_demo_until_ctrl_c(demo_run: dict[str, object]) -> None:
    out, err = str(demo_run["out"]), str(demo_run["err"])
    assert demo_run["first_tick_at"] is not None, out[-3000:] + err[-3000:]
    assert demo_run["rc"] == 0, err[-3000:]
    assert "externally-managed-environment" not in err and "Traceback" not in err, err[-3000:]
    assert "metrics at http://127.0.0.1:" in out and "done: all telemetry flushed" in out, out[-2000:]


BOT = textwrap.dedent("""
    import json
    import qt_telemetry as qt

    @qt.traced_order(venue="binance")
    def place_order(symbol, side, quantity):
        return {"orderId": 1}

    with qt.trade_flow(symbol="BTCUSDT", strategy="readme") as flow, flow.execution():
        place_order("BTCUSDT", "buy", 1)
    print(json.dumps({"engine": qt.current().engine}))
""")


def test_the_plain_launcher_in_that_venv_runs_qt_telemetry(fresh_clone: Path, demo_run: dict[str, object]) -> None:
    venv = fresh_clone / ".venv" / "bin"
    assert (venv / "opentelemetry-instrument").exists(), "the cli extra brings the launcher"
    probe = ("from importlib.metadata import entry_points as e; "
             "print(sorted(p.name for p in e(group='opentelemetry_distro')))")
    distros = subprocess.run([str(venv / "python"), "-c", probe],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert distros == "['qt_telemetry']"
    (fresh_clone / "bot.py").write_text(BOT)
    receiver = OtlpHttpReceiver()
    try:
        started = time.monotonic()
        proc = subprocess.run([str(venv / "opentelemetry-instrument"), str(venv / "python"), "bot.py"],
                              cwd=fresh_clone, capture_output=True, text=True, timeout=120, check=False,
                              env=_env(OTEL_SERVICE_NAME="readme-bot", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
        took = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", proc.stderr  # not a warning, not a traceback
        assert '"engine": "process"' in proc.stdout
        receiver.wait_for(lambda: len(receiver.spans()) >= 3, what="the bot's spans")
        assert {res["service.name"] for res, _ in receiver.spans()} == {"readme-bot"}
        assert took < 20, f"the launcher run took {took:.1f}s"
    finally:
        receiver.close()
    print(f"\nREADME timings: install {demo_run['installed_at']:.0f}s, first tick {demo_run['first_tick_at']:.0f}s, "
          f"demo with Ctrl-C {demo_run['took']:.0f}s, launcher run {took:.1f}s", file=sys.stderr)
