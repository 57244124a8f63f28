"""A bot that plants secrets everywhere a trading bot might leak them, then exits (configured by OTEL_* only).

Prints the planted values as one JSON list: none of them may appear in anything exported.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import sys

from opentelemetry import trace

import qt_telemetry as qt

#: Attribute names a careless bot uses for credentials, in every spelling.
SECRET_NAMES = [
    "api_key", "apiKey", "API_KEY", "x-mbx-apikey", "X-MBX-APIKEY", "apikey", "secret", "client_secret", "secretKey",
    "secret_key", "private_key", "privateKey", "passphrase", "password", "passwd", "pwd", "token", "access_token",
    "refreshToken", "auth", "authorization", "Authorization", "bearer", "session", "session_id", "sessionId",
    "cookie", "signature", "sig", "hmac", "jwt", "access_key", "accessKey", "key", "otp", "mnemonic", "wallet.seed",
    "exchange.apiSecret",
]
_n = itertools.count()
planted: list[str] = []


def value(kind: str = "alnum") -> str:
    """A fresh secret of a realistic shape; remembered so the test can look for it on the wire."""
    n = next(_n)
    if kind == "hex":  # an HMAC-SHA256 signature
        out = secrets.token_hex(32)
    elif kind == "short":  # a password: only its context can give it away
        out = f"hunter{n}x{secrets.token_hex(2)}"
    elif kind == "b64":
        out = base64.b64encode(secrets.token_bytes(30)).decode()
    else:  # a Binance-style 64-character API key
        out = secrets.token_urlsafe(48).replace("-", "a").replace("_", "b")[:64]
    planted.append(out)
    return out


def jwt() -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    body = base64.urlsafe_b64encode(json.dumps({"sub": next(_n)}).encode()).decode().rstrip("=")
    token = f"{header}.{body}.{secrets.token_urlsafe(32)}"
    planted.append(token)
    return token


def free_texts() -> list[str]:
    """Secrets hidden in free text: the shapes seen in exchange errors, URLs, logs."""
    s = value("short")
    basic = base64.b64encode(f"desk:{value('short')}".encode()).decode()
    planted.append(basic)
    return [
        f"passwd={value('short')} rejected", f"private_key={value()}", f"secretKey={value()}", f"secret_key: {s}",
        f"GET /api/v3/order?symbol=BTCUSDT&key={value()}&sig={value('hex')}&timestamp=1",
        str({"apiKey": value(), "symbol": "BTCUSDT"}), json.dumps({"secret": value("b64")}),
        f"https://trader:{value('short')}@exchange.example/api", f"Authorization: Basic {basic}",
        f"Authorization: Bearer {jwt()}", f"signature={value('hex')}", f"note api_key={value()} x",
        f"X-MBX-APIKEY: {value()}", f"token={value('b64')}&next=1", f"password='{value('short')} with spaces'",
        f"-----BEGIN PRIVATE KEY-----\n{value('b64')}\n-----END PRIVATE KEY-----",
        f"AKIA{secrets.token_hex(8).upper()}",  # an AWS access key id (planted below)
        f"request failed: {value('hex')}",  # a bare long token in an error
    ]


class VenueError(Exception):
    pass


def main() -> int:
    qt.init()
    texts = free_texts()
    planted.append(texts[16])  # the AWS key id itself

    @qt.traced_order(venue="binance", attributes={name: value() for name in SECRET_NAMES[:6]})
    def place(symbol: str, side: str, quantity: float, api_key: str = "", signature: str = "",
              note: str = "", fail: str | None = None) -> dict[str, str]:
        span = trace.get_current_span()
        span.set_attribute("note", note)  # an allowed name, a value full of secrets
        for name in SECRET_NAMES:
            span.set_attribute(name, value())
        span.add_event("debug", {"payload": note, "apiKey": value()})
        if fail is not None:
            raise VenueError(fail)
        return {"orderId": "1"}

    user_tracer = trace.get_tracer("bot.own")
    for i, text in enumerate(texts):
        cid = f"c-{i}"
        extra = {name: value() for name in SECRET_NAMES}
        with qt.trade_flow(symbol="BTCUSDT", strategy="s", **extra) as flow:
            with flow.signal(reference_price=100.0, **{name: value() for name in SECRET_NAMES}):
                pass
            with flow.entry(reason=text):
                with qt.risk_check("max_position", **{name: value() for name in SECRET_NAMES}) as check:
                    check.reject(text, value=1, limit=0)
                flow.reject(text)
            with flow.execution(**{name: value() for name in SECRET_NAMES}):
                try:
                    place("BTCUSDT", "buy", 1, api_key=value(), signature=value("hex"), note=text, fail=text)
                except VenueError:
                    pass
                place("BTCUSDT", "buy", 1, api_key=value(), note=text)
            with user_tracer.start_as_current_span("bot.http", attributes={"http.url": texts[4], "note": text,
                                                                             "api_key": value()}) as own:
                own.set_status(trace.Status(trace.StatusCode.ERROR, text))
            try:
                with flow.exit():
                    raise VenueError(text)
            except VenueError:
                pass
        qt.order_acknowledged(cid, order_id=1, **{name: value() for name in SECRET_NAMES})
        qt.order_filled(cid, quantity=1, price=100.0, note=text, **{name: value() for name in SECRET_NAMES[:10]})
        qt.order_rejected(cid, reason=text, **{name: value() for name in SECRET_NAMES[10:20]})
        qt.order_cancelled(f"x-{i}", reason=text)
        with qt.order_span(venue="kraken", symbol="ETHUSD", side="sell", quantity=1, client_order_id=f"o-{i}",
                           **{name: value() for name in SECRET_NAMES[20:]}) as order:
            order.reject(text)
        qt.record_kill_switch(i % 2 == 0, name="main", reason=text, actor=text)
        qt.record_breaker_state("api", "open" if i % 2 else "closed", reason=text)
        feed = qt.FeedMonitor("ws")
        feed.connected("BTCUSDT")
        feed.disconnected("BTCUSDT", reason=text)
    qt.shutdown()
    print(json.dumps(planted))
    return 0


if __name__ == "__main__":
    sys.exit(main())
