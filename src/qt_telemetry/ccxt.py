"""ccxt: order calls become order spans and metrics, the venue's answers move each order's lifecycle on.

    import ccxt
    from qt_telemetry.ccxt import instrument_ccxt

    exchange = instrument_ccxt(ccxt.binance({"apiKey": ..., "secret": ...}))   # one exchange
    instrument_ccxt()                         # or every exchange class: sync, ccxt.async_support and ccxt.pro

Placements — ``create_order`` (and the limit/market variants), ``create_order_ws``, ``create_orders`` (one span per
order of the batch), ``edit_order``/``edit_order_ws`` — are ``qt.order.place`` spans (the order latency); cancels —
``cancel_order``, ``cancel_orders``, ``cancel_all_orders`` and their ``_ws`` forms — are ``qt.order.cancel`` (the
cancel latency); ``fetch_order``, ``fetch_open_orders``, ``fetch_closed_orders``, ``fetch_orders`` and
``fetch_my_trades`` are ``qt.order.query``. The venue is the exchange's ``id``; symbol, side, type, amount, price
come from ccxt's own arguments, the client order id from ``params`` (``clientOrderId``, ``newClientOrderId``, ...).

``InsufficientFunds`` and ``InvalidOrder`` (``OrderNotFound`` among them) are outcome ``rejected`` with the error
as reason (a refused placement is also a ``reject`` update); every other exception is outcome ``error`` with
``error.type``. A ``RequestTimeout`` leaves the order tracked: the venue may have it, and its fills still join.

Every order the venue reports — in a reply, a fetch, or on the ``watch_orders``/``watch_my_trades`` streams —
moves the lifecycle of the order it names (ack, fills, cancel, reject, as ``qt.order_filled()`` and friends do):
matched by the venue's order id first, then by a client order id that is ours — the one we sent, or the one
ccxt sent for us (gate's ``t-lim2`` for ``lim2``, Binance's ``x-...`` made up) — never by a placeholder a venue
gives every order (gate's ``apiv4``). Fills reported both as trades and as order snapshots count once; after an
edit, fills stay with the order's placement. Orders not placed here are left alone. The exchange's credentials
(``apiKey``, ``secret``, ``password``, ...) are redacted as exact values wherever they would appear.

A nested call (``create_limit_order`` calling ``create_order``, a base ``edit_order`` cancelling and creating) is
one span: the outermost. ``ccxt.pro``'s ``watch_*`` market-data methods report feed health to a
:class:`~qt_telemetry.FeedMonitor` named ``<exchange id>.<channel>`` (``binance.trades``): each update returned is
a message (and its gap), a ``NetworkError`` out of a watch is a disconnect, the next update a reconnect.

The latency budget (:mod:`qt_telemetry.latency`) fills its venue side by itself: a placement's reply carries the
venue's ``timestamp`` of the order, which is its ack (``order_to_ack`` on the order span) and a sample of the
venue's clock offset, as is every ``fetch_time()``; fills carry the trade's or order's venue time. A ``watch_*``
message names a trade's trigger::

    ticker = await exchange.watch_ticker("BTC/USDT")
    with flow.signal(trigger=market_event(exchange, ticker)): ...
"""

from qt_telemetry._integrations.ccxt import ccxt_market_event as market_event
from qt_telemetry._integrations.ccxt import instrument_ccxt, uninstrument_ccxt

__all__ = ["instrument_ccxt", "market_event", "uninstrument_ccxt"]
