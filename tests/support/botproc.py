"""A real bot process the tests drive line by line, and what they read of its exporter from the outside.

The bot runs ``qt_telemetry.init()`` configured only by variables and answers JSON commands on stdin (one per
line, one JSON reply per line on stdout): place orders, flood, fork workers, make a forked child write raw bytes
over its own connection, shut down. What the tests learn of the exporter they learn as an operator would: its
pid from the bot, its memory and threads from ``/proc``, what it exported from a real OTLP receiver.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.support.otlp_receiver import OtlpHttpReceiver, attributes
from tests.support.polling import wait_until

REPO = Path(__file__).resolve().parents[2]

BOT = textwrap.dedent(r"""
    import json, os, sys, time
    import qt_telemetry as qt
    from qt_telemetry._engine.recorder.state import STATE

    qt.init()

    @qt.traced_order(venue="v")
    def _place(symbol, side, quantity, note=None):
        return {"id": 1}

    placed_total = 0

    def place(*args, **kwargs):
        global placed_total
        placed_total += 1
        return _place(*args, **kwargs)

    def channel():
        return STATE.engine.outbox.channel

    def exporter_pid():
        ch = channel()
        pid = getattr(ch, "exporter_pid", None)
        if pid is None:
            proc = getattr(ch, "_proc", None)
            pid = proc.pid if proc is not None else None
        return pid

    def reply(**fields):
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    def flood(rate, seconds, symbol):
        placed, start = 0, time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                return placed
            due = int(elapsed * rate) + 1
            while placed < due:
                place(symbol, "buy", 1)
                placed += 1
            time.sleep(0.0005)

    children = []
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["cmd"]
        if op == "exporter":
            ch = channel()
            reply(pid=exporter_pid(), address=getattr(ch, "address", None), bot=os.getpid(), placed=placed_total)
        elif op == "orders":
            for _ in range(cmd["n"]):
                place(cmd.get("symbol", "S"), "buy", 1, note=cmd.get("note"))
            if cmd.get("flush", True):
                qt.force_flush(5)
            reply(done=cmd["n"])
        elif op == "flood":
            reply(placed=flood(cmd["rate"], cmd["seconds"], cmd.get("symbol", "F")))
        elif op == "child_send":
            pid = os.fork()
            if pid == 0:
                try:
                    place("CHILD-WARMUP", "buy", 1)  # the child's own connection exists from here
                    qt.force_flush(5)
                    sock = channel()._sock
                    from qt_telemetry._engine.transport import records as R, wire as W
                    raw = eval(cmd["raw"], {"R": R, "W": W, "os": os}) if cmd.get("raw") else []
                    for payload in [*(bytes.fromhex(p) for p in cmd.get("payloads", ())), *raw]:
                        try:
                            sock.send(payload)
                        except OSError:
                            pass
                    if cmd.get("records"):  # hostile content in the channel's own format, through the outbox
                        for record in eval(cmd["records"], {"R": R, "W": W, "os": os}):
                            STATE.engine.outbox.put(record)
                        STATE.engine.outbox.flush(block=True)
                    if cmd.get("connections"):  # more connections from this one process
                        import socket
                        extra = []
                        for _ in range(cmd["connections"]):
                            try:
                                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                                s.setblocking(False)
                                s.connect(channel().address)
                                extra.append(s)
                            except OSError:
                                break
                    for _ in range(cmd.get("then", 0)):
                        place("CHILD-AFTER", "buy", 1)
                    qt.force_flush(5)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            reply(child=pid)
        elif op == "fairness":  # one side floods, the other places a few orders: do the few get through?
            import threading
            stop = threading.Event()
            flooder_is_parent = cmd["flooder"] == "parent"

            def flood_until_stopped():
                while not stop.is_set():
                    for _ in range(100):
                        place("FLOOD", "buy", 1)

            pid = os.fork()
            if pid == 0:
                try:
                    if flooder_is_parent:
                        for _ in range(cmd["n"]):
                            place("CHILD-FEW", "buy", 1)
                        qt.force_flush(10)
                    else:
                        deadline = time.monotonic() + cmd["seconds"]
                        while time.monotonic() < deadline:
                            for _ in range(100):
                                place("FLOOD", "buy", 1)
                        qt.shutdown(5)
                finally:
                    os._exit(0)
            if flooder_is_parent:
                flooder = threading.Thread(target=flood_until_stopped)
                flooder.start()
                os.waitpid(pid, 0)
                time.sleep(0.5)
                stop.set()
                flooder.join()
            else:
                time.sleep(0.5)  # the child is flooding
                for _ in range(cmd["n"]):
                    place("PARENT-FEW", "buy", 1)
                os.waitpid(pid, 0)
            reply(done=True)
        elif op == "fork_workers":
            for _ in range(cmd["n"]):
                pid = os.fork()
                if pid == 0:
                    try:
                        deadline = time.monotonic() + cmd["seconds"]
                        while time.monotonic() < deadline:
                            place("WORKER", "buy", 1)
                            time.sleep(1 / cmd["rate"])
                        qt.shutdown(2)
                    finally:
                        os._exit(0)
                children.append(pid)
            reply(workers=children)
        elif op == "wait_workers":
            for pid in children:
                os.waitpid(pid, 0)
            children.clear()
            reply(done=True)
        elif op == "shutdown":
            start = time.monotonic()
            outbox = getattr(STATE.engine, "outbox", None)
            before = dict(outbox.dropped) if outbox is not None else {}
            ch = outbox.channel if outbox is not None else None
            state = {"dead": getattr(ch, "_dead", None), "sock": getattr(ch, "_sock", None) is not None,
                     "closed": getattr(ch, "_closed", None), "sent": getattr(ch, "sent", None),
                     "converted": getattr(ch, "converted", None), "pid": getattr(ch, "exporter_pid", None)}
            ok = qt.shutdown(cmd.get("timeout", 2.0))
            reply(ok=ok, seconds=time.monotonic() - start, dropped_before=before, channel=state,
                  dropped_after=dict(outbox.dropped) if outbox is not None else {})
        elif op == "quit":
            reply(bye=True)
            break
""")


def bot_environment(receiver: OtlpHttpReceiver, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "500",
                "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_SERVICE_NAME": "hostile-test-bot",
                "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"})
    env.update(extra)
    return env


class Bot:
    """A running bot; ``ask`` sends one command and returns its reply."""

    def __init__(self, receiver: OtlpHttpReceiver, env: Mapping[str, str] | None = None,
                 preexec: Any = None) -> None:
        self.receiver = receiver
        self.proc = subprocess.Popen([sys.executable, "-c", BOT], env=dict(env or bot_environment(receiver)),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=preexec)

    def ask(self, timeout: float = 60.0, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = _readline(self.proc, timeout)
        assert line, f"the bot died answering {command}: {self.stderr_tail()}"
        return json.loads(line)  # type: ignore[no-any-return]

    def exporter(self) -> dict[str, Any]:
        return self.ask(cmd="exporter")

    def finish(self, timeout: float = 30.0) -> str:
        """Quit and return the bot's stderr (read to EOF: nothing may keep the pipe open after the bot)."""
        try:
            self.ask(cmd="quit")
        except AssertionError:
            pass
        _, err = self.proc.communicate(timeout=timeout)
        return err

    def stderr_tail(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]

    def kill(self) -> None:
        """Make sure the bot is gone and its pipes are closed (after ``finish`` this does nothing)."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.communicate(timeout=10)
        except (ValueError, OSError, subprocess.TimeoutExpired):  # already read to EOF by finish()
            pass
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"the bot did not answer within {timeout}s")
    return proc.stdout.readline()


# --- the exporter from the outside ---------------------------------------------------------------------------

def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def rss_mib(pid: int) -> float:
    return int(proc_status(pid)["VmRSS"].split()[0]) / 1024


def threads(pid: int) -> int:
    return int(proc_status(pid)["Threads"])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def exporters_of(bot_pids: Iterable[int]) -> list[int]:
    """Live exporter processes whose parent is one of ``bot_pids`` (how an operator finds them: ps)."""
    wanted = set(bot_pids)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if any(b"qt_telemetry._engine.exporter" in part or b"qt_telemetry._exporter" in part for part in cmdline) \
                and rest[0] not in ("Z", "X") and int(rest[1]) in wanted:
            found.append(int(entry))
    return found


def hostile_send(address: str, payloads: Iterable[bytes]) -> int:
    """Send ``payloads`` to the exporter's socket as another local process of the same user would: connect if it
    takes connections, else as datagrams. Returns how many sends the kernel accepted (refusals are fine)."""
    import socket

    sent = 0
    payloads = list(payloads)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.settimeout(2.0)
        sock.connect(address)
    except OSError:
        sock.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.settimeout(0.5)
        for payload in payloads:
            try:
                sock.sendto(payload, address)
                sent += 1
            except OSError:
                pass
        sock.close()
        return sent
    for payload in payloads:
        try:
            sock.send(payload)
            sent += 1
        except OSError:
            break
    sock.close()
    return sent


# --- what reached the receiver ---------------------------------------------------------------------------------

def order_spans(receiver: OtlpHttpReceiver, symbol: str | None = None) -> int:
    return sum(1 for _, s in receiver.spans() if s.name == "qt.order.place"
               and (symbol is None or attributes(s).get("symbol") == symbol))


def cumulative(receiver: OtlpHttpReceiver, name: str, **labels: Any) -> float:
    """The sum over every series and every exporter generation of ``name``'s latest cumulative value
    (a replaced exporter restarts its counters with a new start time: both generations count)."""
    latest: dict[tuple[Any, ...], tuple[int, float]] = {}
    for resource, metric in receiver.metrics():
        if metric.name != name:
            continue
        kind = metric.WhichOneof("data")
        for point in getattr(metric, kind).data_points:
            attrs = attributes(point)
            if any(attrs.get(k) != v for k, v in labels.items()):
                continue
            key = (resource.get("service.instance.id"), point.start_time_unix_nano, tuple(sorted(attrs.items())))
            value = point.count if kind in ("histogram", "exponential_histogram") else (
                point.as_double if point.WhichOneof("value") == "as_double" else point.as_int)
            if key not in latest or point.time_unix_nano >= latest[key][0]:
                latest[key] = (point.time_unix_nano, value)
    return sum(v for _, v in latest.values())


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_replaced(bot: Bot, old: int, timeout: float = 15.0) -> int:
    """The exporter pid the bot uses once it is no longer ``old`` (while the bot keeps trading)."""
    def new_pid() -> int | None:
        bot.ask(cmd="orders", n=5, symbol="WHILE-REPLACING", flush=False)
        pid = bot.exporter()["pid"]
        return pid if pid not in (None, old) and alive(pid) else None

    started = time.monotonic()
    pid: int = wait_until(new_pid, timeout, f"a replacement for exporter {old}", interval=0.2)
    assert time.monotonic() - started <= timeout
    return pid
