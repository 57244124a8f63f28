"""Secrets never leave the process: hundreds planted under every name and in every shape, through every path a
bot has (our spans, events, statuses, metric labels, free-text reasons, exception texts, URLs, the bot's own
spans), exported over real OTLP — and not one of them is on the wire."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from qt_telemetry._redaction import MARKER, Redactor
from tests.support.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, attributes
from tests.support.servers import REPO


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_no_planted_secret_reaches_the_wire(protocol: str) -> None:
    receiver = OtlpHttpReceiver() if protocol == "http/protobuf" else OtlpGrpcReceiver()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                    "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"})
        proc = subprocess.run([sys.executable, "-m", "tests.bots.secrets"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        planted = json.loads(proc.stdout.strip().splitlines()[-1])
        assert len(planted) > 300

        def everything() -> bool:
            names = {s.name for _, s in receiver.spans()}
            return {"qt.trade", "qt.order.place", "qt.order.update", "bot.http", "qt.kill_switch"} <= names and \
                any(m.name == "qt.risk.checks" for _, m in receiver.metrics())

        receiver.wait_for(everything, timeout=60, what="the bot's telemetry", interval=0.5)
        with receiver.lock:
            wire = b"".join(r.SerializeToString() for r in [*receiver.trace_requests, *receiver.metric_requests])
        leaked = [s for s in planted if s.encode() in wire]
        assert leaked == [], f"{len(leaked)} of {len(planted)} planted secrets reached the wire: {leaked[:5]}"
        assert MARKER.encode() in wire  # redacted where they were, not silently dropped wholesale
        orders = [attributes(s) for _, s in receiver.spans() if s.name == "qt.order.place"]
        assert orders and all(o["venue"] in ("binance", "kraken") for o in orders)  # the rest survives
    finally:
        receiver.close()


@pytest.mark.parametrize("text", [
    "passwd=hunter2 x", "private_key=abc123", "secretKey=XYZ", "secret_key: xyz", "GET /o?key=AB12&sig=CD34",
    str({"apiKey": "K-123"}), "https://user:PASS@host/x", "Authorization: Basic dXNlcjpwYXNz",
    "reason=signature=deadbeef", 'password="two words"', "X-MBX-APIKEY=vmPUZE6mv9SD5",
])
def test_the_marker_never_repeats_any_part_of_the_secret(text: str) -> None:
    secret = {"passwd=hunter2 x": "hunter2", "private_key=abc123": "abc123", "secretKey=XYZ": "XYZ",
              "secret_key: xyz": "xyz", "GET /o?key=AB12&sig=CD34": "CD34", str({"apiKey": "K-123"}): "K-123",
              "https://user:PASS@host/x": "PASS", "Authorization: Basic dXNlcjpwYXNz": "dXNlcjpwYXNz",
              "reason=signature=deadbeef": "deadbeef", 'password="two words"': "two",
              "X-MBX-APIKEY=vmPUZE6mv9SD5": "vmPUZE6mv9SD5"}[text]
    out = Redactor().text(text)
    assert secret not in out and MARKER in out


def test_users_extend_the_rules_with_words_patterns_and_exact_values() -> None:
    redactor = Redactor(extra_words=["desk_pin"], patterns=[r"ACCT-\d{6}"], values=["my-vault-token-77"])
    assert redactor.is_secret_key("desk_pin") and redactor.is_secret_key("deskPin")
    assert redactor.text("desk_pin=4242 account ACCT-123456 uses my-vault-token-77") == \
        f"desk_pin={MARKER} account {MARKER} uses {MARKER}"


@pytest.mark.parametrize("name", ["symbol", "venue", "side", "order.type", "strategy", "risk.rule", "kill_switch",
                                  "outcome", "reason", "note", "trade.id", "order.client_order_id", "author",
                                  "monkey", "passed"])
def test_ordinary_trading_names_are_not_mistaken_for_secrets(name: str) -> None:
    assert not Redactor().is_secret_key(name)


@pytest.mark.parametrize("text, secret", [
    ("x" * 70 + "password=hunter22", "hunter22"),  # a name longer than 64 characters: its last 64 decide
    ("--password=hunter22", "hunter22"),
    ("9password=hunter22", "hunter22"),
    ("note=fine reason=signature=deadbeef", "deadbeef"),
    ("a.b.c.token : 'quoted value'", "quoted value"),
    ("ok=1 " * 30 + "api_key=K-999", "K-999"),
    ("kv " * 40 + "{'apiKey': 'K-123'}", "K-123"),
])
def test_pairs_are_found_wherever_the_name_starts(text: str, secret: str) -> None:
    out = Redactor().text(text)
    assert secret not in out and MARKER in out


def test_ordinary_pairs_and_text_pass_unchanged() -> None:
    text = "venue=binance symbol=BTCUSDT side: buy note='all fine' " * 8
    assert Redactor().text(text) == text


@pytest.mark.parametrize("unit", ["keya=", "key=a ", "abcdefgh", "a=", "k:", "a.", 'key="', "Basic ", "A1b2C3d4-"])
def test_scrubbing_costs_time_linear_in_the_text(unit: str) -> None:
    """One 512-character word cost 1.1-2.4 ms (the pair expression backtracked through 64 name characters at
    every position): quadratic. 16 times the text must cost about 16 times the time, far from 256."""
    def cost(text: str) -> float:
        best = float("inf")
        for _ in range(5):
            redactor = Redactor()
            start = time.perf_counter()
            redactor.text(text)
            best = min(best, time.perf_counter() - start)
        return best

    small, large = (unit * 20000)[:4096], (unit * 200000)[:65536]  # long enough that a tick of noise is small
    assert cost(large) < 64 * cost(small)


def test_a_repeated_long_value_is_scrubbed_once() -> None:
    redactor = Redactor()
    scrubbed = []
    scrub = redactor._scrub

    def counting(text: str) -> str:
        scrubbed.append(text)
        return scrub(text)

    redactor._scrub = counting  # type: ignore[method-assign]
    value = "x" * 495 + " password=hunter2"  # as long as the trading side keeps (512 characters)
    outs = {redactor.text(value) for _ in range(20_000)}
    assert len(scrubbed) == 1 and len(outs) == 1 and "hunter2" not in outs.pop()


def test_identifiers_that_are_uuids_stay_readable_and_secrets_around_them_do_not() -> None:
    """A UUID is an identifier (an instance id, a client order id, freqtrade's dry-run order id), not a random
    token: redacting it hid every bot's ``service_instance_id`` and every dry-run order id. A secret next to one
    is still redacted, and a key that is a UUID is redacted as the exact value the integrations register."""
    uuid = "3f2b6c1e-9a4d-4e2b-8c1f-0a9b8c7d6e5f"
    redactor = Redactor(values=["0c8d7e6f-5a4b-4c3d-9e2f-1a0b9c8d7e6f"])
    assert redactor.text(uuid) == uuid
    assert redactor.text(f"dry_run_buy_BTC/USDT_{uuid}") == f"dry_run_buy_BTC/USDT_{uuid}"
    assert redactor.text(f"{uuid} token=abc123def") == f"{uuid} token={MARKER}"
    assert redactor.text(f"x{'a1' * 20}{uuid}") == MARKER
    assert redactor.text("key 0c8d7e6f-5a4b-4c3d-9e2f-1a0b9c8d7e6f used") == f"key {MARKER} used"


def test_every_credential_name_the_secrets_bot_plants_is_refused_by_name() -> None:
    """Names alone must refuse these: a value with no digit (1 in 20 of the bot's 64-letter keys) passes the
    long-token rule, so ``wallet.seed`` leaked one run in about twenty."""
    from tests.bots.secrets import SECRET_NAMES

    assert [name for name in SECRET_NAMES if not Redactor().is_secret_key(name)] == []
