"""A small Binance spot venue on loopback: the REST endpoints ccxt's ``binance`` calls, answered as Binance does.

ccxt itself is not mocked: point a real ``ccxt.binance`` (sync or ``ccxt.async_support``) at it with
:meth:`FakeBinance.point` and it loads markets, signs requests (the signature is checked) and parses the replies
exactly as it would against the venue. What ccxt's ``load_markets()`` asks for with API keys set:
``GET /api/v3/exchangeInfo``, ``/fapi/v1/exchangeInfo``, ``/dapi/v1/exchangeInfo`` and, signed,
``/sapi/v1/capital/config/getall``, ``/sapi/v1/margin/allPairs``, ``/sapi/v1/margin/isolated/allPairs``.

Market data and the account, as freqtrade asks for them: ``GET /api/v3/klines`` (flat candles at
:attr:`FakeBinance.fill_price`, up to the running one), ``/api/v3/ticker/24hr``, ``/api/v3/ticker/bookTicker``,
``/api/v3/depth``, and, signed, ``/api/v3/account`` (balances: :attr:`FakeBinance.balances` moved by every fill)
and ``/api/v3/myTrades``.

Orders: ``POST /api/v3/order`` (a market order fills at :attr:`FakeBinance.fill_price`, a limit order rests as
``NEW``), ``DELETE /api/v3/order``, ``GET /api/v3/order``, ``DELETE /api/v3/openOrders``,
``POST /api/v3/order/cancelReplace``. A test scripts the next answer of an endpoint with :meth:`FakeBinance.script`
and one of the answers below (an insufficient balance, a filter failure, a rate limit, an outage, a hang).

:class:`FakeBinanceStream` is the market-data websocket (``wss://stream.binance.com:9443/ws``) for ``ccxt.pro``,
driven step by step by the test (it runs on the test's own event loop).
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

SIGNED_PREFIXES = ("/api/v3/order", "/api/v3/openOrders", "/api/v3/account", "/api/v3/myTrades", "/sapi/")
SYMBOLS = ("BTCUSDT", "ETHUSDT")
INTERVALS_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}


@dataclass
class Request:
    """One request as the venue saw it."""

    method: str
    path: str
    params: dict[str, str]  # query string and form body together, as Binance reads them
    headers: dict[str, str]
    raw: str  # the query string or body exactly as sent (the signature is in it)


Reply = tuple[int, Any]
Responder = Callable[["FakeBinance", Request], Reply]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _symbol_info(symbol: str, base: str, quote: str) -> dict[str, Any]:
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
        "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00", "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00000", "stepSize": "0.00001"},
            {"filterType": "NOTIONAL", "minNotional": "5.00", "applyMinToMarket": True, "maxNotional": "9000000.00",
             "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


# --- scripted answers (what Binance sends in each case) ----------------------------------------------------

def error(status: int, code: int, msg: str) -> Responder:
    """Binance's error body: ``{"code": -2010, "msg": "..."}`` with an HTTP 4xx/5xx status."""
    return lambda venue, request: (status, {"code": code, "msg": msg})


#: ``POST /api/v3/order`` without the funds for it (ccxt: ``InsufficientFunds``).
INSUFFICIENT_BALANCE = error(400, -2010, "Account has insufficient balance for requested action.")
#: A quantity that breaks the LOT_SIZE filter (ccxt: ``InvalidOrder``).
LOT_SIZE_FAILURE = error(400, -1013, "Filter failure: LOT_SIZE")
#: Too many requests (ccxt: ``DDoSProtection``, a ``NetworkError``).
RATE_LIMITED = error(429, -1003, "Too much request weight used; current limit is 6000 request weight per 1 MINUTE.")


def unavailable(venue: FakeBinance, request: Request) -> Reply:
    """503 with an HTML body, as a load balancer sends it (ccxt: ``ExchangeNotAvailable``)."""
    return 503, "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"


def hang(venue: FakeBinance, request: Request) -> Reply:
    """Answer only when the test is over: the client's timeout fires first (ccxt: ``RequestTimeout``)."""
    venue.released.wait(30)
    return 503, "<html>too late</html>"


def fills(status: str, executed: str) -> Responder:
    """``POST /api/v3/order`` that is (partly) filled at once: ``fills("PARTIALLY_FILLED", "0.2")``."""
    return lambda venue, request: venue.new_order(request, status=status, executed=executed)


def echo(message: str) -> Responder:
    """An error whose message repeats ``message`` (a venue that echoes what it was sent)."""
    return error(400, -1100, message)


@dataclass
class FakeBinance:
    """Binance spot REST on ``127.0.0.1`` (random port). ``requests`` lists what it received."""

    secret: str = "venue-secret"
    fill_price: str = "100.50"
    requests: list[Request] = field(default_factory=list)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)
    balances: dict[str, float] = field(default_factory=lambda: {"USDT": 10_000.0, "BTC": 0.0, "ETH": 0.0})
    #: The venue's clock minus ours, in seconds: every timestamp it stamps (orders, fills, server time) is that far
    #: off, as a venue whose clock is skewed would be.
    clock_offset: float = 0.0
    #: Seconds a new order takes to be accepted (its ``transactTime`` is stamped after them): an order-to-ack.
    order_delay: float = 0.0

    def __post_init__(self) -> None:
        self._scripts: dict[tuple[str, str], list[Responder]] = {}
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        venue = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                raw = body if self.command == "POST" else url.query
                request = Request(self.command, url.path, dict(parse_qsl(url.query)) | dict(parse_qsl(body)),
                                  {k.lower(): v for k, v in self.headers.items()}, raw)
                status, payload = venue.answer(request)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

            do_GET = do_POST = do_DELETE = do_PUT = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-binance",
                                        daemon=True)
        self._thread.start()

    # --- test controls ---------------------------------------------------------------------------------
    def point(self, exchange: Any) -> Any:
        """Send every REST call of ``exchange`` here: each ``urls['api']`` entry keeps its path, loses its host."""
        for name, url in list(exchange.urls["api"].items()):
            if isinstance(url, str) and url.startswith("http"):
                exchange.urls["api"][name] = self.url + urlsplit(url).path
        return exchange

    def script(self, method: str, path: str, *answers: Responder) -> None:
        """The next answers of ``method path``, in order; afterwards the default behaviour resumes."""
        with self._lock:
            self._scripts.setdefault((method, path), []).extend(answers)

    def received(self, method: str, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def now_ms(self) -> int:
        """The venue's clock (ours plus :attr:`clock_offset`), in milliseconds as Binance stamps."""
        return _now_ms() + round(self.clock_offset * 1000)

    def fill(self, order_id: Any, executed: str | None = None, *, at_ms: int | None = None) -> None:
        """The market trades against a resting order: filled completely, or ``executed`` of it so far (at the venue's
        time ``at_ms``, default now)."""
        with self._lock:
            order = self.orders[int(order_id)]
            before = float(order["executedQty"])
            done = executed is None or float(executed) >= float(order["origQty"])
            order["executedQty"] = order["origQty"] if executed is None else executed
            order["cummulativeQuoteQty"] = f"{float(order['executedQty']) * float(self.fill_price):.8f}"
            order["status"] = "FILLED" if done else "PARTIALLY_FILLED"
            order["updateTime"] = self.now_ms() if at_ms is None else at_ms
            self._settle(order["symbol"], order["side"], float(order["executedQty"]) - before)

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    # --- the venue --------------------------------------------------------------------------------------
    def answer(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            scripted = self._scripts.get((request.method, request.path))
            responder = scripted.pop(0) if scripted else None
        if request.path.startswith(SIGNED_PREFIXES):
            problem = self._check_signature(request)
            if problem is not None:
                return problem
        if responder is not None:
            return responder(self, request)
        route = _ROUTES.get((request.method, request.path))
        if route is None:
            return 404, {"code": -1, "msg": f"no route {request.method} {request.path}"}
        return route(self, request)

    def _check_signature(self, request: Request) -> Reply | None:
        if not request.headers.get("x-mbx-apikey"):
            return 401, {"code": -2014, "msg": "API-key format invalid."}
        unsigned, _, signature = request.raw.rpartition("&signature=")
        expected = hmac.new(self.secret.encode(), unsigned.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return 400, {"code": -1022, "msg": "Signature for this request is not valid."}
        return None

    def new_order(self, request: Request, *, status: str | None = None, executed: str | None = None) -> Reply:
        p = request.params
        qty = p["quantity"]
        if status is None:
            status = "FILLED" if p["type"] == "MARKET" else "NEW"
        if executed is None:
            executed = qty if status == "FILLED" else "0"
        price = p.get("price", "0.00000000")
        if self.order_delay:
            time.sleep(self.order_delay)  # the matching engine taking its time: a real order-to-ack
        now = self.now_ms()
        order = {
            "symbol": p["symbol"], "orderId": next(self._ids), "orderListId": -1,
            "clientOrderId": p["newClientOrderId"], "transactTime": now, "price": price, "origQty": qty,
            "executedQty": executed, "origQuoteOrderQty": "0.00000000",
            "cummulativeQuoteQty": f"{float(executed) * float(self.fill_price):.8f}", "status": status,
            "timeInForce": p.get("timeInForce", "GTC"), "type": p["type"], "side": p["side"], "workingTime": now,
            "selfTradePreventionMode": "NONE",
        }
        with self._lock:
            self.orders[order["orderId"]] = dict(order, time=now, updateTime=now, isWorking=True)
            self._settle(order["symbol"], order["side"], float(executed))
        fills = [{"price": self.fill_price, "qty": executed, "commission": "0.00000000", "commissionAsset": "BNB",
                  "tradeId": order["orderId"] * 10}] if float(executed) > 0 else []
        return 200, dict(order, fills=fills)

    def _settle(self, symbol: str, side: str, quantity: float) -> None:
        """The account after a fill (caller holds the lock): base in, quote out on a buy; the reverse on a sell."""
        base = symbol.removesuffix("USDT")
        sign = 1.0 if side == "BUY" else -1.0
        self.balances[base] = self.balances.get(base, 0.0) + sign * quantity
        self.balances["USDT"] -= sign * quantity * float(self.fill_price)

    def _find(self, params: dict[str, str]) -> dict[str, Any] | None:
        with self._lock:
            for order in self.orders.values():
                if order["symbol"] == params.get("symbol") and (
                        str(order["orderId"]) == params.get("orderId")
                        or order["clientOrderId"] == params.get("origClientOrderId")):
                    return order
        return None

    def cancel_order(self, request: Request) -> Reply:
        order = self._find(request.params)
        if order is None or order["status"] not in ("NEW", "PARTIALLY_FILLED"):
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        order["status"] = "CANCELED"
        reply = {k: order[k] for k in ("symbol", "orderId", "orderListId", "price", "origQty", "executedQty",
                                       "cummulativeQuoteQty", "status", "timeInForce", "type", "side")}
        # Binance names the cancel request itself clientOrderId; the order's own id is origClientOrderId.
        return 200, dict(reply, origClientOrderId=order["clientOrderId"],
                         clientOrderId=request.params.get("newClientOrderId", f"cancel-{next(self._ids)}"),
                         transactTime=_now_ms(), selfTradePreventionMode="NONE")

    def query_order(self, request: Request) -> Reply:
        order = self._find(request.params)
        if order is None:
            return 400, {"code": -2013, "msg": "Order does not exist."}
        return 200, order

    def cancel_open_orders(self, request: Request) -> Reply:
        with self._lock:
            open_orders = [o for o in self.orders.values() if o["symbol"] == request.params.get("symbol")
                           and o["status"] in ("NEW", "PARTIALLY_FILLED")]
        replies = []
        for order in open_orders:
            _, reply = self.cancel_order(Request("DELETE", "/api/v3/order", {
                "symbol": order["symbol"], "orderId": str(order["orderId"])}, {}, ""))
            replies.append(reply)
        if not replies:
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        return 200, replies

    def cancel_replace(self, request: Request) -> Reply:
        p = request.params
        status, cancelled = self.cancel_order(Request("DELETE", "/api/v3/order", {
            "symbol": p["symbol"], "orderId": p.get("cancelOrderId", ""),
            "origClientOrderId": p.get("cancelOrigClientOrderId", "")}, {}, ""))
        if status != 200:
            return 400, {"code": -2022, "msg": "Order cancel-replace failed.",
                         "data": {"cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                                  "cancelResponse": cancelled, "newOrderResponse": None}}
        _, created = self.new_order(request)
        return 200, {"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS", "cancelResponse": cancelled,
                     "newOrderResponse": created}


def _klines(venue: FakeBinance, request: Request) -> Reply:
    """Flat candles at the venue's price, oldest first, the last one still running (as Binance sends it)."""
    step = INTERVALS_MS[request.params["interval"]]
    limit = min(int(request.params.get("limit", 500)), 1000)
    now = _now_ms()
    last = now - now % step
    start = int(request.params["startTime"]) if "startTime" in request.params else last - (limit - 1) * step
    start -= start % step
    price = venue.fill_price
    return 200, [[t, price, price, price, price, "10.0", t + step - 1, f"{10 * float(price):.2f}", 100, "5.0",
                  f"{5 * float(price):.2f}", "0"] for t in range(start, last + 1, step)][:limit]


def _ticker(venue: FakeBinance, request: Request) -> Reply:
    """One symbol's 24-hour ticker, or (no ``symbol``) every symbol's."""
    if "symbol" not in request.params:
        return 200, [_ticker(venue, Request("GET", request.path, {"symbol": s}, {}, ""))[1] for s in SYMBOLS]
    price, now = float(venue.fill_price), _now_ms()
    return 200, {"symbol": request.params["symbol"], "priceChange": "0", "priceChangePercent": "0",
                 "weightedAvgPrice": venue.fill_price, "prevClosePrice": venue.fill_price,
                 "lastPrice": venue.fill_price, "lastQty": "1", "bidPrice": f"{price - 0.01:.2f}", "bidQty": "50",
                 "askPrice": venue.fill_price, "askQty": "50", "openPrice": venue.fill_price,
                 "highPrice": venue.fill_price, "lowPrice": venue.fill_price, "volume": "1000",
                 "quoteVolume": f"{1000 * price:.2f}", "openTime": now - 86_400_000, "closeTime": now,
                 "firstId": 1, "lastId": 1000, "count": 1000}


def _book_ticker(venue: FakeBinance, request: Request) -> Reply:
    price = float(venue.fill_price)
    return 200, {"symbol": request.params.get("symbol", "BTCUSDT"), "bidPrice": f"{price - 0.01:.2f}", "bidQty": "50",
                 "askPrice": venue.fill_price, "askQty": "50"}


def _depth(venue: FakeBinance, request: Request) -> Reply:
    """Ten levels a cent apart on each side, best ask at the venue's price: a market order fills at it."""
    price = float(venue.fill_price)
    return 200, {"lastUpdateId": 1, "bids": [[f"{price - 0.01 * (i + 1):.2f}", "50"] for i in range(10)],
                 "asks": [[f"{price + 0.01 * i:.2f}", "50"] for i in range(10)]}


def _account(venue: FakeBinance, request: Request) -> Reply:
    with venue._lock:
        balances = [{"asset": a, "free": f"{v:.8f}", "locked": "0.00000000"} for a, v in venue.balances.items()]
    return 200, {"makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
                 "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
                 "requireSelfTradePrevention": False, "updateTime": _now_ms(), "accountType": "SPOT",
                 "balances": balances, "permissions": ["SPOT"]}


def _my_trades(venue: FakeBinance, request: Request) -> Reply:
    with venue._lock:
        orders = [o for o in venue.orders.values() if o["symbol"] == request.params.get("symbol")
                  and float(o["executedQty"]) > 0]
    return 200, [{"symbol": o["symbol"], "id": o["orderId"] * 10, "orderId": o["orderId"], "orderListId": -1,
                  "price": venue.fill_price, "qty": o["executedQty"], "quoteQty": o["cummulativeQuoteQty"],
                  "commission": "0.00000000", "commissionAsset": "BNB", "time": o["updateTime"],
                  "isBuyer": o["side"] == "BUY", "isMaker": False, "isBestMatch": True} for o in orders]


def _exchange_info(venue: FakeBinance, request: Request) -> Reply:
    return 200, {"timezone": "UTC", "serverTime": _now_ms(), "rateLimits": [], "exchangeFilters": [],
                 "symbols": [_symbol_info("BTCUSDT", "BTC", "USDT"), _symbol_info("ETHUSDT", "ETH", "USDT")]}


def _no_symbols(venue: FakeBinance, request: Request) -> Reply:
    return 200, {"timezone": "UTC", "serverTime": _now_ms(), "rateLimits": [], "exchangeFilters": [], "symbols": []}


def _empty_list(venue: FakeBinance, request: Request) -> Reply:
    return 200, []


_ROUTES: dict[tuple[str, str], Responder] = {
    ("GET", "/api/v3/time"): lambda venue, request: (200, {"serverTime": venue.now_ms()}),
    ("GET", "/api/v3/exchangeInfo"): _exchange_info,
    ("GET", "/api/v3/klines"): _klines,
    ("GET", "/api/v3/ticker/24hr"): _ticker,
    ("GET", "/api/v3/ticker/bookTicker"): _book_ticker,
    ("GET", "/api/v3/depth"): _depth,
    ("GET", "/api/v3/account"): _account,
    ("GET", "/api/v3/myTrades"): _my_trades,
    ("GET", "/fapi/v1/exchangeInfo"): _no_symbols,
    ("GET", "/dapi/v1/exchangeInfo"): _no_symbols,
    ("GET", "/sapi/v1/capital/config/getall"): _empty_list,
    ("GET", "/sapi/v1/margin/allPairs"): _empty_list,
    ("GET", "/sapi/v1/margin/isolated/allPairs"): _empty_list,
    ("POST", "/api/v3/order"): FakeBinance.new_order,
    ("DELETE", "/api/v3/order"): FakeBinance.cancel_order,
    ("GET", "/api/v3/order"): FakeBinance.query_order,
    ("DELETE", "/api/v3/openOrders"): FakeBinance.cancel_open_orders,
    ("POST", "/api/v3/order/cancelReplace"): FakeBinance.cancel_replace,
}


# --- the market-data websocket (ccxt.pro) -------------------------------------------------------------------

@dataclass
class StreamConnection:
    """One websocket connection of the client and the streams it subscribed to (``btcusdt@trade``)."""

    ws: Any
    streams: list[str] = field(default_factory=list)


class FakeBinanceStream:
    """Binance's market streams on ``ws://127.0.0.1:<port>/ws/<n>``: answers SUBSCRIBE as Binance does and sends
    only what the test tells it to (:meth:`send`), or drops a connection (:meth:`drop`)."""

    def __init__(self) -> None:
        self.connections: list[StreamConnection] = []
        self._changed = asyncio.Condition()
        self._runner: Any = None
        self.url = ""

    async def start(self) -> FakeBinanceStream:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/ws/{stream}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"ws://127.0.0.1:{port}/ws"
        return self

    def point(self, exchange: Any) -> Any:
        """Send ``exchange``'s spot market streams here."""
        exchange.urls["api"]["ws"]["spot"] = self.url
        return exchange

    async def _serve(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connection = StreamConnection(ws)
        self.connections.append(connection)
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            command = json.loads(message.data)
            if command.get("method") == "SUBSCRIBE":
                await ws.send_json({"result": None, "id": command["id"]})
                async with self._changed:
                    connection.streams.extend(command["params"])
                    self._changed.notify_all()
        return ws

    async def subscribed(self, stream: str, count: int = 1, timeout: float = 10.0) -> StreamConnection:
        """The ``count``-th connection that subscribed to ``stream`` (waits for it, up to ``timeout`` seconds)."""
        def found() -> list[StreamConnection]:
            return [c for c in self.connections if stream in c.streams]

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(found()) >= count), timeout)
        return found()[count - 1]

    async def send(self, connection: StreamConnection, event: dict[str, Any]) -> None:
        await connection.ws.send_json(event)

    async def drop(self, connection: StreamConnection) -> None:
        """The venue closes the connection (as on its 24-hour limit or a restart)."""
        await connection.ws.close(code=1001, message=b"going away")

    async def close(self) -> None:
        for connection in self.connections:
            await connection.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()


def trade_event(symbol_id: str, trade_id: int, price: str, quantity: str) -> dict[str, Any]:
    """A ``<symbol>@trade`` stream event."""
    now = _now_ms()
    return {"e": "trade", "E": now, "s": symbol_id, "t": trade_id, "p": price, "q": quantity, "T": now, "m": True,
            "M": True}


def mini_ticker_event(symbol_id: str, last: str, *, time_ms: int | None = None) -> dict[str, Any]:
    """A ``<symbol>@miniTicker`` stream event (what ccxt's ``watch_ticker`` subscribes to on spot), stamped
    ``time_ms`` (default now)."""
    stamp = _now_ms() if time_ms is None else time_ms
    return {"e": "24hrMiniTicker", "E": stamp, "s": symbol_id, "c": last, "o": last, "h": last, "l": last, "v": "10",
            "q": "1000"}


def kline_event(symbol_id: str, interval: str, price: str) -> dict[str, Any]:
    """A ``<symbol>@kline_<interval>`` stream event: the running candle (what ``watch_ohlcv`` subscribes to)."""
    now, step = _now_ms(), INTERVALS_MS[interval]
    start = now - now % step
    return {"e": "kline", "E": now, "s": symbol_id, "k": {
        "t": start, "T": start + step - 1, "s": symbol_id, "i": interval, "f": 1, "L": 2, "o": price, "c": price,
        "h": price, "l": price, "v": "1.0", "n": 2, "x": False, "q": price, "V": "0.5", "Q": "0.5", "B": "0"}}


class ThreadedStream:
    """:class:`FakeBinanceStream` on an event loop of its own thread, for a client that runs its own loop (freqtrade's
    websocket thread). The calls block until the stream has done it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-binance-ws", daemon=True)
        self._thread.start()
        self.stream = self._run(FakeBinanceStream().start())
        self.url = self.stream.url

    def _run(self, coroutine: Any, timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def subscribed(self, stream: str, count: int = 1, timeout: float = 20.0) -> StreamConnection:
        return self._run(self.stream.subscribed(stream, count, timeout), timeout + 1)  # type: ignore[no-any-return]

    def connections_to(self, stream: str) -> list[StreamConnection]:
        """The connections subscribed to ``stream`` so far (without waiting)."""
        return [c for c in list(self.stream.connections) if stream in c.streams]

    def send(self, connection: StreamConnection, event: dict[str, Any]) -> None:
        self._run(self.stream.send(connection, event))

    def drop(self, connection: StreamConnection) -> None:
        self._run(self.stream.drop(connection))

    def close(self) -> None:
        try:
            self._run(self.stream.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()
