"""Bad input at run time is absorbed and counted; nothing raises into trading code; labels stay bounded."""

from __future__ import annotations

import pytest

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._redaction import Redactor
from qt_telemetry.testing import Capture, capture_telemetry

redact = Redactor().text


@qt.traced_order(venue="binance")
def place(symbol, side, quantity):
    return None


def test_unbounded_label_values_collapse_into_other_and_are_counted() -> None:
    with capture_telemetry(max_label_values=3) as cap:
        for i in range(10):
            place(f"SYM{i}", "buy", 1)
        _check_label_bound(cap)


def test_the_label_bound_does_not_leak_into_the_next_capture(cap: Capture) -> None:
    for i in range(5):
        place(f"SYM{i}", "buy", 1)
    assert len(cap.points(semconv.ORDER_LATENCY.name)) == 5


def _check_label_bound(cap: Capture) -> None:
    symbols = sorted(p.attributes[semconv.SYMBOL] for p in cap.points(semconv.ORDER_LATENCY.name))
    assert symbols == ["SYM0", "SYM1", "SYM2", semconv.OVERFLOW_VALUE]
    assert cap.point(semconv.ORDER_LATENCY.name, symbol=semconv.OVERFLOW_VALUE).count == 7
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="label_overflow").value == 7
    # spans keep the real value: only metric labels are bounded
    assert {s.attributes[semconv.SYMBOL] for s in cap.spans()} == {f"SYM{i}" for i in range(10)}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, "fast", -0.5])
def test_bad_latency_values_are_dropped_or_clamped_and_counted(cap: Capture, bad: object) -> None:
    STATE.engine.measure(((semconv.ORDER_LATENCY.name, bad),), {semconv.VENUE: "x"})
    points = cap.points(semconv.ORDER_LATENCY.name)
    if bad == -0.5:
        assert points[0].sum == 0.0  # a negative duration is clamped to zero
        assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="negative_duration").value == 1
    else:
        assert points == []
        assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="bad_measurement").value == 1


def test_secret_looking_span_attributes_are_dropped(cap: Capture) -> None:
    with qt.trade_flow(symbol="BTCUSDT", strategy="s", api_key="k", signature="sig", session_token="t",
                       venue_account="acct-1"):
        pass
    attrs = cap.span(semconv.SPAN_TRADE).attributes
    assert "venue_account" in attrs
    assert not {"api_key", "signature", "session_token"} & set(attrs)
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="secret_attribute_dropped").value == 3


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("GET /api/v3/order?symbol=BTC&signature=0a1b2c&timestamp=1", "0a1b2c"),
        ('{"apiKey": "AKIA123", "x": 1}', "AKIA123"),
        ("Authorization: Bearer eyJhbGciOi", "eyJhbGciOi"),
        ("X-MBX-APIKEY=vmPUZE6mv9SD5", "vmPUZE6mv9SD5"),
        ("password=hunter2 rest", "hunter2"),
    ],
)
def test_redaction_removes_credentials_from_free_text(text: str, leak: str) -> None:
    assert leak not in redact(text)
    assert "[REDACTED]" in redact(text)


def test_none_and_weird_values_everywhere_never_raise(cap: Capture) -> None:
    with qt.trade_flow(symbol=None, strategy=None, trade_id=object()) as flow:
        with flow.signal(confidence=float("nan"), direction=None, reference_price="n/a"):
            pass
        with flow.entry(**{"": 1, "ok": [1, 2]}), qt.risk_check("max_position") as check:
            check.reject(None, value="lots", limit=float("inf"))
    qt.record_kill_switch(True, name=None, reason=None)  # type: ignore[arg-type]
    qt.set_risk_gauges(open_positions="three")
    assert cap.span(semconv.SPAN_TRADE).attributes[semconv.SYMBOL] == "unknown"
    assert cap.point(semconv.RISK_CHECKS.name).attributes[semconv.REASON] == "rejected"
