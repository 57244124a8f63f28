"""Where threads or processes cannot be had (a cgroup's ``pids.max``, ``RLIMIT_NPROC``): ``init()`` never raises,
telemetry runs on the best engine that can, says once on stderr what it could not do, and exports what it can.

The bot runs in a cgroup of its own whose ``pids.max`` counts every thread and process it and its exporter make
(root, cgroup v1 or v2 pids controller); elsewhere, as an unprivileged user, under ``RLIMIT_NPROC``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.botproc import REPO, bot_environment, order_spans
from tests.support.otlp_receiver import OtlpHttpReceiver
from tests.support.polling import wait_until

BOT = textwrap.dedent("""
    import sys
    import qt_telemetry as qt
    info = qt.init()
    print("engine", info.engine if info else None, flush=True)

    @qt.traced_order(venue="v")
    def place(symbol, side, quantity):
        return {"id": 1}

    for _ in range(200):
        place("LIMITED", "buy", 1)
    print("flushed", qt.force_flush(10), flush=True)
    qt.shutdown(5)
""")


def _pids_cgroup() -> Path | None:
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK) and (
                root.name == "pids" or "pids" in (root / "cgroup.controllers").read_text(errors="ignore")):
            return root
    return None


@pytest.fixture
def limited() -> Iterator[Callable[[int], Callable[[], None]]]:
    """``limited(n)`` -> a preexec function that puts the child under a limit of ``n`` tasks."""
    root = _pids_cgroup()
    made: list[Path] = []

    def limit(n: int) -> Callable[[], None]:
        if root is not None:
            group = root / f"qt-telemetry-test-{uuid.uuid4().hex[:8]}"
            group.mkdir()
            (group / "pids.max").write_text(str(n))
            made.append(group)

            def enter() -> None:
                (group / "cgroup.procs").write_text("0")

            return enter
        if os.geteuid() == 0:
            pytest.fail("as root without a writable pids cgroup there is no way to limit tasks here")

        def rlimit() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_NPROC, (n, n))

        return rlimit

    yield limit
    for group in made:  # whatever is left in it (an exporter still draining) goes with it
        def emptied(group: Path = group) -> bool:
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            return not (group / "cgroup.procs").read_text().split()

        wait_until(emptied, 10, f"{group} emptied")
        group.rmdir()


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    r = OtlpHttpReceiver()
    yield r
    r.close()


@pytest.mark.parametrize("tasks", [1, 2, 3, 4, 6, 8])
def test_init_never_raises_and_exports_what_the_limit_allows(tasks: int, limited: Callable[[int], Callable[[], None]],
                                                            receiver: OtlpHttpReceiver) -> None:
    env = bot_environment(receiver, PYTHONPATH=f"{REPO / 'src'}")
    out = subprocess.run([sys.executable, "-c", BOT], env=env, preexec_fn=limited(tasks), capture_output=True,
                         text=True, timeout=120)
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("engine "), out.stdout
    notes = [line for line in out.stderr.splitlines() if line.startswith("qt-telemetry") and "cannot" in line]
    if tasks >= 2:
        wait_until(lambda: order_spans(receiver, "LIMITED") == 200, 30, f"the 200 orders under {tasks} tasks")
    if tasks <= 4:  # the bot and a full exporter need 5
        assert len(notes) >= 1, f"nothing said about what could not run under {tasks} tasks:\n{out.stderr}"
    assert len(notes) <= 2, f"said more than once:\n{out.stderr}"
    assert out.stderr.count("starting a new one") <= 1, f"restart loop under {tasks} tasks:\n{out.stderr}"
