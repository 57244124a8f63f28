"""Secrets given to ``init()`` stay in the process: no child's environment or argv carries them — not a shell the
bot runs, not the exporter — while multiprocessing "spawn" children still join the bot's exporter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from tests.support.botproc import REPO, bot_environment, order_spans
from tests.support.otlp_receiver import OtlpHttpReceiver, attributes
from tests.support.polling import wait_until

SECRETS = ("S3CRET-HEADER-9f2c", "PASSW0RD-IN-URL-77", "K3Y-VALUE-5521")

BOT = textwrap.dedent("""
    import multiprocessing, os, subprocess, sys
    import qt_telemetry as qt

    @qt.traced_order(venue="v")
    def place(symbol, side, quantity):
        return {"id": 1}

    def child_trades():
        for _ in range(10):
            place("SPAWNED", "buy", 1)

    if __name__ == "__main__":
        qt.init(endpoint=os.environ["ENDPOINT"], headers={"authorization": "Bearer S3CRET-HEADER-9f2c",
                                                         "x-api-key": "K3Y-VALUE-5521"},
                secret_values=["K3Y-VALUE-5521"],
                resource_attributes={"deploy.url": "https://ops:PASSW0RD-IN-URL-77@deploy.example"})
        place("PARENT", "buy", 1)
        shell = subprocess.run(["sh", "-c", "env; cat /proc/self/cmdline"], capture_output=True, text=True)
        sys.stdout.write(shell.stdout)
        from qt_telemetry._engine.recorder.state import STATE
        channel = STATE.engine.outbox.channel
        pid = getattr(channel, "exporter_pid", None) or channel._proc.pid
        for name in ("environ", "cmdline"):
            with open(f"/proc/{pid}/{name}", "rb") as f:
                sys.stdout.write(f.read().replace(b"\\0", b"\\n").decode(errors="replace"))
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=child_trades)
        proc.start()
        proc.join(60)
        print("child exit", proc.exitcode)
        qt.shutdown(5)
""")


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    r = OtlpHttpReceiver()
    yield r
    r.close()


def test_no_child_environment_or_argv_carries_a_secret_and_spawn_children_still_join(
        receiver: OtlpHttpReceiver) -> None:
    env = bot_environment(receiver, ENDPOINT=receiver.endpoint)
    del env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    script = REPO / "build" / "secrets_environment_bot.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(BOT)
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "child exit 0" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    for secret in SECRETS:
        assert secret not in out.stdout, f"{secret} is in a child's environment or argv"
    wait_until(lambda: order_spans(receiver, "SPAWNED") == 10, 30, "the spawn child's orders")
    assert {attributes(s).get("symbol") for _, s in receiver.spans()} >= {"PARENT", "SPAWNED"}
    assert "authorization" in {k for h in receiver.headers for k in h}, "the headers reached the collector"
    wire = b"".join(r.SerializeToString() for r in [*receiver.trace_requests, *receiver.metric_requests])
    for secret in SECRETS:
        assert secret.encode() not in wire, f"{secret} is on the wire"
