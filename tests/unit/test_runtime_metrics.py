"""Runtime metrics of the bot: OpenTelemetry's process and CPython conventions, sampled off the trading thread,
labelled with the process's role, GC pauses as a histogram."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from qt_telemetry import semconv
from qt_telemetry._engine.runtime import GcPauses, RuntimeSampler
from tests.support.otlp_receiver import OtlpHttpReceiver

BOT = textwrap.dedent("""
    import gc, time, qt_telemetry as qt
    qt.init(metric_export_interval=0.5)
    garbage = [[i] for i in range(100_000)]
    del garbage
    gc.collect()
    time.sleep(1.5)
    qt.shutdown()
""")


def _run_bot(receiver: OtlpHttpReceiver, script: str = BOT, **env: str) -> str:
    """Run ``script`` as a bot exporting to ``receiver`` (configured by OTEL_* only); its standard output."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
                          env={**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _points(receiver: OtlpHttpReceiver) -> dict[str, tuple[str, object, list]]:
    out = {}
    for _, metric in receiver.metrics():
        if metric.name.startswith(("process.", "cpython.", "qt.runtime.")):
            kind = metric.WhichOneof("data")
            data = getattr(metric, kind)
            out[metric.name] = (kind, data, [({a.key: a.value.string_value for a in p.attributes}, p)
                                             for p in data.data_points])
    return out


def test_the_bot_exports_every_runtime_metric_with_its_role_and_the_conventional_kind_and_unit() -> None:
    receiver = OtlpHttpReceiver()
    try:
        _run_bot(receiver)
        receiver.wait_for(lambda: len(_points(receiver)) == len(semconv.RUNTIME_METRICS), what="runtime metrics")
        points = _points(receiver)
    finally:
        receiver.close()
    for spec in semconv.RUNTIME_METRICS:
        kind, data, series = points[spec.name]
        expected = {"counter": "sum", "updowncounter": "sum", "histogram": "histogram"}[spec.kind]
        assert kind == expected, spec.name
        if spec.kind != "histogram":
            assert data.is_monotonic is (spec.kind == "counter"), spec.name
        assert {attrs[semconv.PROCESS_ROLE] for attrs, _ in series} <= {"bot", "exporter"}, spec.name
        assert any(attrs[semconv.PROCESS_ROLE] == "bot" for attrs, _ in series), spec.name
    values = {(name, tuple(sorted(a.items()))): p for name, (_, _, series) in points.items() for a, p in series}

    def number(key: tuple) -> float:
        return values[key].as_double or values[key].as_int

    role = (semconv.PROCESS_ROLE, "bot")
    assert number(("process.cpu.time", (("cpu.mode", "user"), role))) > 0
    assert number(("process.memory.usage", (role,))) > 10 * 2**20
    assert number(("process.thread.count", (role,))) >= 2  # the bot's and the janitor
    assert number(("process.unix.file_descriptor.count", (role,))) >= 3
    # gc.collect() (and init()'s own, before gc.freeze)
    assert number(("cpython.gc.collections", (("cpython.gc.generation", "2"), role))) >= 1
    pauses = values[("qt.runtime.gc.duration", (("cpython.gc.generation", "2"), role))]
    assert pauses.count >= 1 and 0 < pauses.sum < 5
    assert list(pauses.explicit_bounds) == list(semconv.GC_PAUSE_BUCKETS_S)


def test_runtime_metrics_can_be_switched_off() -> None:
    receiver = OtlpHttpReceiver()
    try:
        _run_bot(receiver, QT_TELEMETRY_RUNTIME_METRICS="false")
        receiver.wait_for(lambda: any(m.name == "qt.telemetry.heartbeat" for _, m in receiver.metrics()),
                          what="the heartbeat")
        assert _points(receiver) == {}
    finally:
        receiver.close()


def test_one_sample_serves_every_series_and_reads_this_process() -> None:
    sampler = RuntimeSampler("exporter")
    series = sampler.series()
    assert {spec for spec, _, _ in series} == set(semconv.RUNTIME_METRICS) - {semconv.GC_DURATION}
    assert all(attrs[semconv.PROCESS_ROLE] == "exporter" for _, attrs, _ in series)
    first = sampler.sample()
    assert all(callback() is not None for _, _, callback in series)
    assert sampler.sample() is first  # read once per MAX_AGE_S, however many series ask
    threads = next(cb for spec, _, cb in series if spec is semconv.PROCESS_THREAD_COUNT)()
    assert threads >= threading.active_count()


def test_gc_pauses_are_timed_per_generation_and_never_raise() -> None:
    seen: list[tuple[int, float]] = []
    pauses = GcPauses(lambda generation, seconds: seen.append((generation, seconds)))
    pauses.install()
    try:
        gc.collect(1)
        gc.collect()
    finally:
        pauses.uninstall()
    assert pauses not in gc.callbacks
    assert [g for g, _ in seen][-2:] == [1, 2] and all(s > 0 for _, s in seen)
    broken = GcPauses(lambda generation, seconds: 1 / 0)
    broken.install()
    try:
        gc.collect()  # a failing recorder must not fail the collection
    finally:
        broken.uninstall()


@pytest.mark.parametrize("name", [s.name for s in semconv.RUNTIME_METRICS])
def test_runtime_metric_attributes_are_low_cardinality_metric_keys(name: str) -> None:
    assert set(semconv.METRICS[name].attributes) <= semconv.METRIC_ATTRIBUTE_KEYS


FORKING_BOT = textwrap.dedent("""
    import os, time, qt_telemetry as qt
    qt.init(metric_export_interval=0.5)
    child = os.fork()
    if child == 0:
        time.sleep(1.5)  # the child's janitor reports its own numbers meanwhile
        os._exit(0)
    os.waitpid(child, 0)
    qt.shutdown()
    print(os.getpid(), child)
""")


def test_a_forked_child_reports_its_own_runtime_metrics() -> None:
    receiver = OtlpHttpReceiver()
    try:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
        proc = subprocess.run([sys.executable, "-c", FORKING_BOT], capture_output=True, text=True, timeout=60,
                              check=False, env={**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
        assert proc.returncode == 0, proc.stderr
        parent, child = map(int, proc.stdout.split())

        def reporting() -> set[int]:
            return {res["process.pid"] for res, m in receiver.metrics() if m.name == "process.thread.count"}

        receiver.wait_for(lambda: reporting() == {parent, child}, what="both processes' thread counts")
    finally:
        receiver.close()


def test_the_exporter_reports_its_own_runtime_next_to_the_bots() -> None:
    """Both processes of a bot, told apart by ``qt.process.role`` (the exporter's under the root bot's resource)."""
    import subprocess
    import sys

    from tests.support.otlp_receiver import OtlpHttpReceiver, attributes
    from tests.support.servers import REPO

    receiver = OtlpHttpReceiver()
    try:
        script = "import qt_telemetry as qt, time; qt.init(); time.sleep(1.5); qt.force_flush(5)"
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "300",
               "PYTHONPATH": str(REPO / "src")}
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)

        def roles() -> dict[str, set[str]]:
            out: dict[str, set[str]] = {}
            for _, metric in receiver.metrics():
                for point in getattr(metric, metric.WhichOneof("data")).data_points:
                    role = attributes(point).get("qt.process.role")
                    if role is not None:
                        out.setdefault(role, set()).add(metric.name)
            return out

        receiver.wait_for(lambda: set(roles()) == {"bot", "exporter"}, 30, "both roles")
        assert {"process.cpu.time", "process.memory.usage", "process.thread.count"} <= roles()["exporter"]
    finally:
        receiver.close()


IDLE_BOT = textwrap.dedent("""
    import time, qt_telemetry as qt
    qt.init(metric_export_interval=0.5)
    time.sleep(3.0)  # alive, trading nothing
    print(time.time(), flush=True)
    qt.shutdown()
""")


def test_the_heartbeat_of_an_idle_live_bot_keeps_moving_in_one_series() -> None:
    """``qt.telemetry.heartbeat`` is what QtBotSilent watches: while the bot lives it must keep up with the clock,
    orders or none (it once stayed at the bot's first message, so every idle bot read as silent), in the bot's
    own series (a connection's first message once made a stray ``service.instance.id="hello"`` one)."""
    receiver = OtlpHttpReceiver()
    try:
        last_alive = float(_run_bot(receiver, IDLE_BOT).split()[-1])

        def beats() -> list[float]:
            return sorted(p.as_double for _, m in receiver.metrics() if m.name == semconv.HEARTBEAT.name
                          for p in m.gauge.data_points)

        receiver.wait_for(lambda: len(beats()) >= 4, what="heartbeats")
        seen = beats()
        instances = {r.get("service.instance.id") for r, m in receiver.metrics() if m.name == semconv.HEARTBEAT.name}
    finally:
        receiver.close()
    assert seen[-1] - seen[0] >= 1.5, f"the heartbeat stood still while the bot lived 3 s: {seen}"
    assert last_alive - seen[-1] < 1.5, f"the last heartbeat is older than the bot's last second: {seen}"
    assert len(instances) == 1 and "hello" not in instances, f"one bot, one series: {instances}"
