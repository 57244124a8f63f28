"""ccxt: order calls become order spans and metrics, ccxt's exceptions become outcomes, ``watch_*`` feed health.

    import ccxt
    from qt_telemetry.ccxt import instrument_ccxt

    exchange = instrument_ccxt(ccxt.binance({"apiKey": ..., "secret": ...}))   # one exchange
    instrument_ccxt()                         # or every exchange class: sync, ccxt.async_support and ccxt.pro

``create_order``, ``create_limit_order``, ``create_market_order`` and ``edit_order`` are ``qt.order.place`` spans
(the order latency), ``cancel_order`` and ``cancel_all_orders`` are ``qt.order.cancel`` (the cancel latency),
``fetch_order`` is ``qt.order.query``. The venue is the exchange's ``id``; symbol, side, type, amount, price come
from ccxt's own arguments, the client order id from ``params`` (``clientOrderId``, ``newClientOrderId``, ...) or
else from the returned order. ``InsufficientFunds`` and ``InvalidOrder`` (``OrderNotFound`` among them) are
outcome ``rejected`` with the error as reason; every other exception (``NetworkError``, ``RequestTimeout``,
``DDoSProtection``/``RateLimitExceeded``, ``ExchangeNotAvailable``, ...) is outcome ``error`` with ``error.type``.
The returned order (id, status, filled, average) goes on the span and moves the order's lifecycle on (ack, fills,
cancel, reject), as if the venue had called ``qt.order_filled()`` and friends. The exchange's credentials
(``apiKey``, ``secret``, ``password``, ...) are redacted as exact values wherever they would appear.

A nested call (``create_limit_order`` calling ``create_order``, a base ``edit_order`` cancelling and creating) is
one span: the outermost. ``ccxt.pro``'s ``watch_*`` market-data methods report feed health to a
:class:`~qt_telemetry.FeedMonitor` named ``<exchange id>.<channel>`` (``binance.trades``): each update returned is
a message (and its gap), a ``NetworkError`` out of a watch is a disconnect, the next update a reconnect.
"""

from qt_telemetry._integrations.ccxt import instrument_ccxt, uninstrument_ccxt

__all__ = ["instrument_ccxt", "uninstrument_ccxt"]
