"""The exporter process: killed, it is replaced and the bot never notices beyond counted drops; the secrets it
was told survive the restart; it ends by itself when the bot is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from tests.support.otlp_receiver import OtlpHttpReceiver, attributes
from tests.support.servers import REPO

BOT = textwrap.dedent("""
    import os, sys, time
    import qt_telemetry as qt
    from qt_telemetry._engine.recorder.state import STATE

    qt.init()
    STATE.engine.secrets(("K3Y-PLANTED-42",))  # what an integration registers (ccxt's API key)

    from opentelemetry import trace

    @qt.traced_order(venue="v")
    def place(symbol, side, quantity, note=None):
        if note:
            trace.get_current_span().set_attribute("note", note)  # enriching our span with the plain OTel API

    place("BEFORE", "buy", 1, note="key K3Y-PLANTED-42 in free text")
    first = STATE.engine.outbox.channel._proc
    print(first.pid, flush=True)
    sys.stdin.readline()  # the test kills the exporter now
    deadline = time.monotonic() + 30
    while STATE.engine.outbox.channel._proc is first and time.monotonic() < deadline:
        place("DURING", "buy", 1)  # the bot keeps trading; nothing raises
        time.sleep(0.01)
    print(STATE.engine.outbox.channel._proc.pid, flush=True)
    for _ in range(5):
        place("AFTER", "buy", 1, note="key K3Y-PLANTED-42 in free text")
    qt.shutdown()
""")


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    r = OtlpHttpReceiver()
    yield r
    r.close()


def test_a_killed_exporter_is_replaced_and_keeps_redacting_what_it_was_told(receiver: OtlpHttpReceiver) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "500",
                "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"})
    bot = subprocess.Popen([sys.executable, "-c", BOT], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    assert bot.stdin is not None and bot.stdout is not None
    first = int(bot.stdout.readline())
    receiver.wait_for(lambda: any(s.name == "qt.order.place" for _, s in receiver.spans()), 30, "the first order")
    os.kill(first, signal.SIGKILL)
    bot.stdin.write("go\n")
    bot.stdin.flush()
    second = int(bot.stdout.readline())
    _, err = bot.communicate(timeout=60)
    assert bot.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    assert second != first

    def symbols() -> set[str]:
        return {attributes(s)["symbol"] for _, s in receiver.spans() if s.name == "qt.order.place"}

    receiver.wait_for(lambda: "AFTER" in symbols() and sum(
        1 for _, s in receiver.spans() if attributes(s).get("symbol") == "AFTER") == 5, 30, "the orders after")
    assert {"BEFORE", "AFTER"} <= symbols()
    notes = [attributes(s).get("note") for _, s in receiver.spans() if s.name == "qt.order.place"]
    assert notes.count("key [REDACTED] in free text") == 6
    assert "K3Y-PLANTED-42" not in b"".join(r.SerializeToString() for r in receiver.trace_requests).decode("latin-1")
