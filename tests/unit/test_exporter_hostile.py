"""The exporter process as an attack surface: whatever reaches its socket, it stays up, keeps exporting, keeps its
memory, threads and CPU bounded, exports nothing forged, and counts what it refused.

Two kinds of sender, both real processes on real sockets: another local process of the same user that found the
socket (as a process of the bot would find it), and a forked child of the bot writing raw bytes over its own
connection (a family member gone wrong: it passes the peer check, so decoding itself must be bounded). The
exporter runs under an address-space limit set from outside (``prlimit``), so an allocation bomb shows as a
death or a stall instead of the OOM killer picking the bot.
"""

from __future__ import annotations

import marshal
import os
import resource
import struct
from collections.abc import Iterator

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qt_telemetry._engine.transport import records as R
from tests.support.botproc import (
    Bot,
    alive,
    cpu_seconds,
    cumulative,
    hostile_send,
    order_spans,
    proc_status,
    rss_mib,
    threads,
)
from tests.support.otlp_receiver import OtlpHttpReceiver, attributes
from tests.support.polling import wait_until

#: Headroom over the exporter's address space at the start: a bomb that asks for more dies in the attempt.
ADDRESS_SPACE_HEADROOM = 768 << 20


def _span_record(symbol: str, name: str = "qt.order.place") -> tuple[object, ...]:
    start = 1_700_000_000_000_000_000
    return (R.SPAN, name, 3, os.urandom(16), os.urandom(8), None, False, True, start, start + 1_000_000, 0, None,
            {"symbol": symbol, "venue": "forged", "outcome": "ok"}, None, None, None, None)


def reproducers() -> list[bytes]:
    """The issue's reproducers, in the old format and in the format of this tree, plus length-claim bombs."""
    me = os.getpid()
    header = (R.VERSION, me, "forger", {})
    return [
        marshal.dumps(((1, "x", "y", {}), [])),  # header pid is a str
        marshal.dumps(((1, 2**80, "y", {}), [])),  # pid beyond any C long
        b"(" + struct.pack("<i", 2**27),  # a 5-byte tuple-size bomb
        b"(" + struct.pack("<i", 2**31 - 1),
        marshal.dumps("ab"),
        marshal.dumps(((1, [1], "y", {}), [])),  # unhashable producer key
        b"\xdd\xff\xff\xff\xff",  # msgpack array32 claiming 4 G items
        b"\xdf\xff\xff\xff\xff",  # map32
        b"\xdb\xff\xff\xff\xff",  # str32
        b"\xc6\xff\xff\xff\xff",  # bin32
        b"\x91" * 200_000 + b"\xc0",  # nested 200,000 deep
        msgpack.packb(((R.VERSION, "x", "y", {}), [])),
        msgpack.packb(((R.VERSION, 2**63, "y", {}), [])),
        msgpack.packb([[1, 2, 3]] * 1000),
        b"",
        *[R.encode((R.VERSION, me, f"fake-{k}", {}), []) for k in range(400)],  # 400 made-up producers
        R.encode(header, [_span_record("FORGED")]),  # a forged span
        R.encode(header, [(R.CONTROL, R.OP_SECRETS, ("BTCUSDT", "buy"))]),  # would mask the bot's own symbol
    ]


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    r = OtlpHttpReceiver()
    yield r
    r.close()


class Exporter:
    """The bot's exporter under an address-space limit, with its resting figures."""

    def __init__(self, bot: Bot, receiver: OtlpHttpReceiver) -> None:
        self.bot = bot
        self.receiver = receiver
        bot.ask(cmd="orders", n=20, symbol="WARMUP")
        wait_until(lambda: order_spans(receiver, "WARMUP") >= 20, 30, "the warm-up orders")
        wait_until(lambda: cumulative(receiver, "qt.order.latency") >= 20, 30, "the warm-up metrics")
        info = bot.exporter()
        self.pid: int = info["pid"]
        self.address: str = info["address"]
        size = int(proc_status(self.pid)["VmSize"].split()[0]) * 1024
        resource.prlimit(self.pid, resource.RLIMIT_AS, (size + ADDRESS_SPACE_HEADROOM,) * 2)
        self.rss = rss_mib(self.pid)
        self.threads = threads(self.pid)
        self.cpu = cpu_seconds(self.pid)

    def assert_still_serving(self, symbol: str) -> None:
        """Same process, bounded memory and threads, and it still exports what the bot trades."""
        assert alive(self.pid), f"the exporter died: {self.bot.stderr_tail()}"
        assert self.bot.exporter()["pid"] == self.pid, "the exporter was replaced: it died or stopped serving"
        before = order_spans(self.receiver, symbol)
        self.bot.ask(cmd="orders", n=50, symbol=symbol)
        wait_until(lambda: order_spans(self.receiver, symbol) >= before + 50, 30, f"50 {symbol} orders exported")
        assert rss_mib(self.pid) <= self.rss + 64, f"RSS {rss_mib(self.pid):.0f} MiB from {self.rss:.0f}"
        assert threads(self.pid) <= self.threads + 2, f"threads {threads(self.pid)} from {self.threads}"


@pytest.fixture
def exporter(receiver: OtlpHttpReceiver) -> Iterator[Exporter]:
    bot = Bot(receiver)
    try:
        yield Exporter(bot, receiver)
        err = bot.finish()
        assert "Traceback" not in err, err[-3000:]
    finally:
        bot.kill()


def test_another_local_process_is_refused_and_counted_and_exports_nothing_forged(exporter: Exporter) -> None:
    hostile_send(exporter.address, reproducers())
    hostile_send(exporter.address, [b"\0" * (1 << 20)] * 40 + [marshal.dumps("ab")])
    exporter.assert_still_serving("BTCUSDT")
    receiver = exporter.receiver
    symbols = [attributes(s).get("symbol") for _, s in receiver.spans()]
    assert "FORGED" not in symbols
    assert symbols.count("BTCUSDT") == 50, "the bot's own symbol was masked by a forged secret"
    wait_until(lambda: cumulative(receiver, "qt.telemetry.errors", kind="peer_refused") >= 1, 20,
               "the refused peer counted in qt.telemetry.errors")


def test_a_family_member_writing_garbage_costs_only_its_own_messages(exporter: Exporter) -> None:
    payloads = [p for p in reproducers() if b"FORGED" not in p and b"BTCUSDT" not in p]
    exporter.bot.ask(cmd="child_send", payloads=[p.hex() for p in payloads], then=30, timeout=120)
    wait_until(lambda: order_spans(exporter.receiver, "CHILD-AFTER") >= 30, 30,
               "the child's own orders after its garbage")
    exporter.assert_still_serving("AFTER-GARBAGE")
    wait_until(lambda: cumulative(exporter.receiver, "qt.telemetry.errors", kind="malformed_message") >= 10, 20,
               "malformed messages counted in qt.telemetry.errors")


def test_many_made_up_producers_and_flush_requests_keep_threads_and_memory_bounded(exporter: Exporter) -> None:
    exporter.bot.ask(cmd="child_send", connections=400, timeout=120, raw=(
        "[R.encode((R.VERSION, os.getpid(), f'fake-{k}', {}), [(R.METRICS, (('qt.trades', 1),), {})])"
        " for k in range(400)]"
        " + [R.encode((R.VERSION, os.getpid(), 'i', {}), [(R.CONTROL, R.OP_FLUSH, 1e9)]) for _ in range(400)]"),
        records=(
        "[(R.CONTROL, R.OP_FLUSH, 1e9) for _ in range(400)]"
        " + [(R.GAUGE, 'qt.risk.positions.open', {'strategy': f's{k}'}, 1.0) for k in range(2000)]"))
    exporter.assert_still_serving("AFTER-MANY")


def test_a_string_referenced_many_times_costs_bounded_exporter_cpu(exporter: Exporter) -> None:
    exporter.bot.ask(cmd="child_send", timeout=120, records=(
        "[(R.SPAN, 'qt.order.place', 3, os.urandom(16), os.urandom(8), None, False, True, 1, 2, 0, None,"
        " {'note': ('x-' * 256,) * 20000, 'more': tuple(('%04d' % k) * 128 for k in range(2000))},"
        " None, None, None, None)]"))
    exporter.assert_still_serving("AFTER-LONG-STRINGS")
    assert cpu_seconds(exporter.pid) - exporter.cpu < 3.0, "one span cost seconds of exporter CPU"


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.floats(), st.text(max_size=40),
                  st.binary(max_size=40))
_tree = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=6), max_leaves=40)


def _shaped(header: object, records: object) -> bytes:
    return msgpack.packb((header, records), use_bin_type=True)


_message = st.one_of(
    st.binary(max_size=4096),
    _tree.map(lambda t: msgpack.packb(t, use_bin_type=True)),
    st.builds(_shaped, st.tuples(st.integers(0, 5), _tree, _tree, _tree), st.lists(_tree, max_size=8)),
    st.builds(_shaped, st.just((R.VERSION, 1, "i", {})),
              st.lists(st.tuples(st.sampled_from([R.SPAN, R.METRICS, R.GAUGE, R.CONTROL, R.PREAGG, 99]), _tree,
                                 _tree, _tree), max_size=8)),
    st.integers(1, 32).map(lambda bits: bytes([0xDD]) + struct.pack(">I", (1 << bits) - 1)),
    st.integers(1, 100_000).map(lambda depth: b"\x91" * depth + b"\xc0"),
    st.builds(lambda n: b"(" + struct.pack("<i", n), st.integers(0, 2**31 - 1)),
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(_message, min_size=60, max_size=60))
def test_random_and_adversarial_messages_never_kill_or_stall_the_exporter(exporter: Exporter,
                                                                           batch: list[bytes]) -> None:
    hostile_send(exporter.address, batch)
    exporter.bot.ask(cmd="child_send", payloads=[p.hex() for p in batch], timeout=120)
    exporter.assert_still_serving("AFTER-RANDOM")
