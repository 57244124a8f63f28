"""A small gate.io spot venue on loopback: REST (API v4) and the websocket (``spot.*`` channels and the order API),
answered as gate does, for the real ``ccxt.gate`` / ``ccxt.async_support.gate`` / ``ccxt.pro.gate``.

Gate's shape differs from Binance's where it matters to order tracking: a client order id is sent as ``text``
with a ``t-`` prefix (ccxt sends ``lim2`` as ``t-lim2`` and reports ``t-lim2``), and an order placed without one
is answered ``"text": "apiv4"`` — the same placeholder for every such order. Requests are HMAC-SHA512 signed
(``KEY``/``Timestamp``/``SIGN`` headers; the signature is checked), errors are ``{"label": ..., "message": ...}``
(``BALANCE_NOT_ENOUGH`` -> ``InsufficientFunds``, ``ORDER_NOT_FOUND`` -> ``OrderNotFound``, ...), batches answer
per order (``"succeeded": false`` with a label for a refused one).

REST: ``POST /spot/orders``, ``GET|DELETE|PATCH /spot/orders/{id}``, ``POST /spot/batch_orders``,
``POST /spot/cancel_batch_orders``, ``GET /spot/open_orders``, ``GET /spot/my_trades``, plus what
``load_markets()`` asks for. The venue's own events (a fill, a cancel) are test controls (:meth:`FakeGate.fill`);
with a :class:`FakeGateStream` attached, each is also pushed on ``spot.orders`` / ``spot.usertrades``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

PREFIX = "/api/v4"
PLACEHOLDER = "apiv4"  # gate's text for an order placed without one


@dataclass
class Request:
    method: str
    path: str  # without /api/v4
    query: dict[str, str]
    body: Any  # parsed JSON (or None)
    headers: dict[str, str]


Reply = tuple[int, Any]
Responder = Callable[["FakeGate", Request], Reply]


def error(status: int, label: str, message: str) -> Responder:
    """Gate's error body: ``{"label": "BALANCE_NOT_ENOUGH", "message": "..."}``."""
    return lambda venue, request: (status, {"label": label, "message": message})


#: ccxt: ``InsufficientFunds``.
BALANCE_NOT_ENOUGH = error(400, "BALANCE_NOT_ENOUGH", "Not enough balance")
#: ccxt: ``InvalidOrder``.
AMOUNT_TOO_LITTLE = error(400, "AMOUNT_TOO_LITTLE", "Order amount too little")
#: ccxt: ``RateLimitExceeded`` (a ``NetworkError``).
TOO_MANY_REQUESTS = error(429, "TOO_MANY_REQUESTS", "Request Rate limit Exceeded")


def hang(venue: FakeGate, request: Request) -> Reply:
    """Accept the order, answer only when the test is over: the client's timeout fires first (ccxt:
    ``RequestTimeout``), yet the order rests at the venue, as a late request does at a real one."""
    venue.new_order(request.body)
    venue.released.wait(30)
    return 503, "<html>too late</html>"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _pair(pair_id: str) -> dict[str, Any]:
    base, quote = pair_id.split("_")
    return {"id": pair_id, "base": base, "base_name": base, "quote": quote, "quote_name": quote, "fee": "0.2",
            "min_base_amount": "0.0001", "min_quote_amount": "1", "max_quote_amount": "5000000",
            "amount_precision": 4, "precision": 2, "trade_status": "tradable", "sell_start": 1516320000,
            "buy_start": 1516320000, "type": "normal", "trade_url": f"https://www.gate.com/trade/{pair_id}"}


@dataclass
class FakeGate:
    """gate.io spot REST on ``127.0.0.1`` (random port). ``requests`` lists what it received."""

    key: str = "venue-key"
    secret: str = "venue-secret"
    fill_price: str = "100.5"
    requests: list[Request] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    stream: FakeGateStream | None = None

    def __post_init__(self) -> None:
        self._scripts: dict[tuple[str, str], list[Responder]] = {}
        self._order_ids = itertools.count(95282841887)
        self._trade_ids = itertools.count(2876130500)
        self._lock = threading.RLock()
        venue = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload = venue.answer(self.command, url.path, url.query, raw, headers)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-gate",
                                        daemon=True)
        self._thread.start()

    # --- test controls ---------------------------------------------------------------------------------
    def point(self, exchange: Any) -> Any:
        """Send every REST call of ``exchange`` here (each ``urls['api']`` entry keeps its path)."""
        for access in ("public", "private"):
            for name, url in list(exchange.urls["api"][access].items()):
                exchange.urls["api"][access][name] = self.url + urlsplit(url).path
        return exchange

    def script(self, method: str, path: str, *answers: Responder) -> None:
        """The next answers of ``method path`` (``path`` without ``/api/v4``); then the default resumes."""
        with self._lock:
            self._scripts.setdefault((method, path), []).extend(answers)

    def received(self, method: str, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def fill(self, order_id: str, amount: str | None = None) -> dict[str, Any]:
        """The market trades ``amount`` (default: all that is left) of a resting order; the trade is recorded
        (``/spot/my_trades``) and, with a stream attached, pushed on ``spot.usertrades`` and ``spot.orders``."""
        with self._lock:
            order = self.orders[order_id]
            qty = Decimal(order["left"]) if amount is None else Decimal(amount)
            left = Decimal(order["left"]) - qty
            filled = Decimal(order["amount"]) - left
            order.update(left=str(left), filled_amount=str(filled), filled_total=str(filled * Decimal(self.fill_price)),
                         avg_deal_price=self.fill_price, fill_price=str(filled * Decimal(self.fill_price)),
                         update_time_ms=str(_now_ms()), update_time=str(int(time.time())))
            if left == 0:
                order.update(status="closed", finish_as="filled", event="finish")
            else:
                order.update(event="update")
            now = time.time()
            trade = {"id": str(next(self._trade_ids)), "create_time": str(int(now)),
                     "create_time_ms": f"{now * 1000:.6f}", "currency_pair": order["currency_pair"],
                     "side": order["side"], "role": "maker", "amount": str(qty), "price": self.fill_price,
                     "order_id": order_id, "fee": "0", "fee_currency": "USDT", "point_fee": "0", "gt_fee": "0",
                     "amend_text": "-", "sequence_id": "1", "text": order["text"]}
            self.trades.append(trade)
            snapshot = dict(order)
        self._push("spot.usertrades", [dict(trade, user_id=1001, biz_info="ccxt")])
        self._push("spot.orders", [snapshot])
        return snapshot

    def cancel(self, order_id: str) -> dict[str, Any]:
        """The venue cancels a resting order (an expiry, a self-trade prevention)."""
        with self._lock:
            order = self.orders[order_id]
            order.update(status="cancelled", finish_as="cancelled", event="finish", update_time_ms=str(_now_ms()))
            snapshot = dict(order)
        self._push("spot.orders", [snapshot])
        return snapshot

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    def _push(self, channel: str, result: list[dict[str, Any]]) -> None:
        if self.stream is not None:
            self.stream.push(channel, result)

    # --- the venue --------------------------------------------------------------------------------------
    def answer(self, method: str, path: str, query: str, raw: str, headers: dict[str, str]) -> Reply:
        body = json.loads(raw) if raw else None
        request = Request(method, path.removeprefix(PREFIX), dict(parse_qsl(query)), body, headers)
        with self._lock:
            self.requests.append(request)
        if "sign" in headers or request.path.startswith(("/spot/orders", "/spot/batch", "/spot/cancel",
                                                         "/spot/open", "/spot/my", "/account")):
            problem = self._check_signature(method, path, query, raw, headers)
            if problem is not None:
                return problem
        with self._lock:
            scripted = self._scripts.get((method, _route_of(request.path)))
            responder = scripted.pop(0) if scripted else None
        if responder is not None:
            return responder(self, request)
        return self._route(request)

    def _check_signature(self, method: str, path: str, query: str, raw: str, headers: dict[str, str]) -> Reply | None:
        if headers.get("key") != self.key:
            return 401, {"label": "INVALID_KEY", "message": "Invalid key provided"}
        timestamp = headers.get("timestamp", "")
        if not timestamp.isdigit() or abs(int(timestamp) - time.time()) > 60:
            return 401, {"label": "REQUEST_EXPIRED",
                         "message": "gap between request Timestamp and server time exceeds 60"}
        payload = "\n".join([method, path, unquote(query), hashlib.sha512(raw.encode()).hexdigest(), timestamp])
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha512).hexdigest()
        if not hmac.compare_digest(headers.get("sign", ""), expected):
            return 401, {"label": "INVALID_SIGNATURE", "message": "Signature mismatch"}
        return None

    def _route(self, request: Request) -> Reply:
        method, path = request.method, request.path
        if method == "GET" and path == "/spot/currency_pairs":
            return 200, [_pair("BTC_USDT"), _pair("ETH_USDT")]
        if method == "GET" and path == "/account/detail":
            return 200, {"user_id": 1001, "ip_whitelist": [], "currency_pairs": [], "key": {"mode": 1}, "tier": 0}
        if method == "POST" and path == "/spot/orders":
            return 200, self.new_order(request.body)
        if method == "POST" and path == "/spot/batch_orders":
            return 200, [dict(self.new_order(item), succeeded=True) for item in request.body]
        if method == "POST" and path == "/spot/cancel_batch_orders":
            return 200, [self._cancel_item(item) for item in request.body]
        if method == "GET" and path == "/spot/open_orders":
            with self._lock:
                open_orders = [dict(o) for o in self.orders.values() if o["status"] == "open"]
            pairs = sorted({o["currency_pair"] for o in open_orders})
            return 200, [{"currency_pair": p, "total": len([o for o in open_orders if o["currency_pair"] == p]),
                          "orders": [o for o in open_orders if o["currency_pair"] == p]} for p in pairs]
        if method == "GET" and path == "/spot/my_trades":
            with self._lock:
                return 200, [t for t in self.trades if t["currency_pair"] == request.query.get("currency_pair",
                                                                                            t["currency_pair"])]
        if path.startswith("/spot/orders/"):
            return self._one_order(request, path.removeprefix("/spot/orders/"))
        if method == "GET":  # what load_markets asks besides spot (margin, futures, delivery, options): none here
            return 200, []
        return 404, {"label": "NOT_FOUND", "message": f"no route {method} {path}"}

    def new_order(self, body: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        order_id = str(next(self._order_ids))
        amount = body["amount"]
        order = {
            "id": order_id, "text": body.get("text", PLACEHOLDER), "amend_text": "-",
            "create_time": str(int(now)), "update_time": str(int(now)), "create_time_ms": str(int(now * 1000)),
            "update_time_ms": str(int(now * 1000)), "status": "open", "currency_pair": body["currency_pair"],
            "type": body.get("type", "limit"), "account": body.get("account", "spot"), "side": body["side"],
            "amount": amount, "price": body.get("price", "0"), "time_in_force": body.get("time_in_force", "gtc"),
            "iceberg": "0", "left": amount, "filled_amount": "0", "fill_price": "0", "filled_total": "0",
            "avg_deal_price": "0", "fee": "0", "fee_currency": body["currency_pair"].split("_")[0],
            "point_fee": "0", "gt_fee": "0", "gt_discount": False, "rebated_fee": "0",
            "rebated_fee_currency": "USDT", "finish_as": "open", "event": "put", "user": 1001,
        }
        with self._lock:
            self.orders[order_id] = order
        self._push("spot.orders", [dict(order)])
        return dict(order)

    def _one_order(self, request: Request, order_id: str) -> Reply:
        with self._lock:
            order = self.orders.get(order_id)
            if order is None or order["currency_pair"] != request.query.get("currency_pair"):
                return 404, {"label": "ORDER_NOT_FOUND", "message": "Order not found"}
            if request.method == "GET":
                return 200, dict(order)
            if order["status"] != "open":
                return 400, {"label": "ORDER_CLOSED", "message": "Order closed"}
            if request.method == "DELETE":
                order.update(status="cancelled", finish_as="cancelled", event="finish", update_time_ms=str(_now_ms()))
            else:  # PATCH: amend price or amount, same order id
                for key in ("price", "amount"):
                    if key in (request.body or {}):
                        order[key] = request.body[key]
                order["left"] = str(Decimal(order["amount"]) - Decimal(order["filled_amount"]))
                order.update(amend_text=(request.body or {}).get("amend_text", "-"), event="update",
                             update_time_ms=str(_now_ms()))
            snapshot = dict(order)
        self._push("spot.orders", [snapshot])
        return 200, snapshot

    def _cancel_item(self, item: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            order = self.orders.get(str(item.get("id")))
            if order is None or order["status"] != "open":
                return {"currency_pair": item.get("currency_pair"), "id": item.get("id"), "succeeded": False,
                        "label": "ORDER_NOT_FOUND", "message": "Order not found", "account": "spot"}
            order.update(status="cancelled", finish_as="cancelled", event="finish", update_time_ms=str(_now_ms()))
        return {"currency_pair": order["currency_pair"], "id": order["id"], "text": order["text"], "succeeded": True,
                "label": "", "message": "", "account": "spot"}


def refuse_batch_item(label: str, message: str) -> Responder:
    """``POST /spot/batch_orders`` that refuses its *last* order (gate answers each order on its own)."""
    def answer(venue: FakeGate, request: Request) -> Reply:
        *placed, refused = request.body
        return 200, [dict(venue.new_order(item), succeeded=True) for item in placed] + [
            {"text": refused.get("text"), "succeeded": False, "label": label, "message": message}]

    return answer


def _route_of(path: str) -> str:
    """``/spot/orders/95282841887`` -> ``/spot/orders/{id}`` (what :meth:`FakeGate.script` is told)."""
    return "/spot/orders/{id}" if path.startswith("/spot/orders/") else path


# --- the websocket (ccxt.pro) ------------------------------------------------------------------------------

class FakeGateStream:
    """gate's spot websocket (``wss://api.gateio.ws/ws/v4/``) on ``ws://127.0.0.1:<port>/ws/v4/``: login and the
    order API (``spot.login``, ``spot.order_place``, ``spot.order_cancel``, ``spot.order_amend``, signed and
    checked), subscriptions to ``spot.orders`` and ``spot.usertrades`` (signed), and the venue's pushes on them.
    Runs on the test's event loop; orders live in the :class:`FakeGate` it is attached to."""

    def __init__(self, venue: FakeGate) -> None:
        self.venue = venue
        venue.stream = self
        self.connections: list[Any] = []
        self.subscribed: dict[str, list[Any]] = {}
        self.received: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None
        self.url = ""

    async def start(self) -> FakeGateStream:
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        app = web.Application()
        app.router.add_get("/ws/v4/", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"ws://127.0.0.1:{self._runner.addresses[0][1]}/ws/v4/"
        return self

    def point(self, exchange: Any) -> Any:
        exchange.urls["api"]["spot"] = self.url
        return exchange

    async def until_subscribed(self, channel: str, timeout: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: bool(self.subscribed.get(channel))), timeout)

    def push(self, channel: str, result: list[dict[str, Any]]) -> None:
        """An update on ``channel`` to every connection subscribed to it (thread-safe: the REST venue calls it)."""
        loop = self._loop
        if loop is None or not self.subscribed.get(channel):
            return
        now = time.time()
        message = {"time": int(now), "time_ms": int(now * 1000), "channel": channel, "event": "update",
                   "result": result}
        for ws in list(self.subscribed[channel]):
            coroutine = ws.send_json(message)
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(coroutine)
            else:
                asyncio.run_coroutine_threadsafe(coroutine, loop)

    async def flushed(self) -> None:
        """Let the pushes queued on this loop go out."""
        await asyncio.sleep(0)

    async def close(self) -> None:
        for ws in self.connections:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections.append(ws)
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            command = json.loads(message.data)
            self.received.append(command)
            if command.get("event") == "subscribe":
                await self._subscribe(ws, command)
            elif command.get("event") == "api":
                await self._api(ws, command)
        return ws

    async def _subscribe(self, ws: Any, command: dict[str, Any]) -> None:
        channel, auth, now = command["channel"], command.get("auth") or {}, command["time"]
        expected = hmac.new(self.venue.secret.encode(), f"channel={channel}&event=subscribe&time={now}".encode(),
                            hashlib.sha512).hexdigest()
        base = {"time": int(time.time()), "id": command["id"], "channel": channel, "event": "subscribe"}
        if auth.get("KEY") != self.venue.key or not hmac.compare_digest(auth.get("SIGN", ""), expected):
            await ws.send_json(dict(base, error={"code": 4, "message": '{"label":"INVALID_KEY"}'},
                                    result={"status": "fail"}))
            return
        await ws.send_json(dict(base, result={"status": "success"}))
        async with self._changed:
            self.subscribed.setdefault(channel, []).append(ws)
            self._changed.notify_all()

    async def _api(self, ws: Any, command: dict[str, Any]) -> None:
        channel, payload = command["channel"], command["payload"]
        params = payload.get("req_param") or {}
        header = {"response_time": str(int(time.time() * 1000)), "channel": channel, "event": "api",
                  "client_id": "127.0.0.1-0x1", "conn_id": "c0ffee"}
        signed = "\n".join(["api", channel, json.dumps(params, separators=(",", ":")), payload["timestamp"]])
        expected = hmac.new(self.venue.secret.encode(), signed.encode(), hashlib.sha512).hexdigest()
        if payload.get("api_key") != self.venue.key or not hmac.compare_digest(payload.get("signature", ""), expected):
            await ws.send_json({"header": dict(header, status="401"), "request_id": payload["req_id"],
                                "data": {"errs": {"label": "INVALID_SIGNATURE", "message": "Signature mismatch"}}})
            return
        if channel == "spot.login":
            await ws.send_json({"header": dict(header, status="200"), "request_id": payload["req_id"],
                                "data": {"result": {"api_key": self.venue.key, "uid": "1001"}}})
            return
        await ws.send_json({"header": dict(header, status="200"), "request_id": payload["req_id"], "ack": True,
                            "data": {"result": {"req_id": payload["req_id"], "req_param": params}}})
        if channel == "spot.order_place":
            status, result = 200, self.venue.new_order(params)
        else:
            path = f"/spot/orders/{params.get('order_id')}"
            status, result = self.venue._one_order(
                Request("DELETE" if channel == "spot.order_cancel" else "PATCH", path,
                        {"currency_pair": params.get("currency_pair", "")}, params, {}), str(params.get("order_id")))
        if status != 200:
            await ws.send_json({"header": dict(header, status=str(status)), "request_id": payload["req_id"],
                                "data": {"errs": result}})
            return
        await ws.send_json({"header": dict(header, status="200"), "request_id": payload["req_id"],
                            "data": {"result": result}})
