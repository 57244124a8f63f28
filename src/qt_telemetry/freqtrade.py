"""freqtrade: each trade as a trade flow, freqtrade's own state as risk gauges, its websocket as feed health.

    from freqtrade.strategy import IStrategy
    from qt_telemetry.freqtrade import QtTelemetry

    class MyStrategy(QtTelemetry, IStrategy):   # the one line: QtTelemetry first
        ...

At bot start (live and dry-run; never in backtesting or hyperopt) this calls ``qt_telemetry.init()`` unless telemetry
is already set up (configure it with ``OTEL_*`` / ``QT_TELEMETRY_*`` variables; the service name defaults to the
bot's ``bot_name``), traces the exchange's ccxt objects with :func:`qt_telemetry.ccxt.instrument_ccxt`, and wraps
the strategy's callbacks *on the instance*, so a strategy's own ``confirm_trade_entry`` needs no ``super()`` call:

- ``qt.trade`` opens when freqtrade finds an entry signal (``get_entry_signal``) and ends when the exit order's
  fill closes the trade (``order_filled``); ``qt.trade.signal`` lasts from the signal to freqtrade's entry
  decision (pricing, stake, leverage) and carries direction and entry tag; the proposed rate is the reference
  price fills' slippage is measured against. A signal freqtrade does not act on (pair locked, no free slot, no
  stake) records nothing.
- ``qt.trade.entry`` holds ``confirm_trade_entry`` as the risk check ``confirm_trade_entry`` (False = rejected,
  and the trade with it); ``qt.trade.exit`` holds ``confirm_trade_exit`` (a refused exit leaves the trade open).
- The entry order is placed inside ``qt.trade.execution``, the exit order inside ``qt.trade.exit``: live, those
  are ccxt's ``create_order`` spans, with fills read from ccxt's replies; in dry-run, where freqtrade simulates
  the order without ccxt, a ``qt.order.place`` span of its own (``freqtrade.dry_run``) whose simulated fill
  arrives through ``order_filled``.
- Every bot loop (``bot_loop_start``): open trades, ``max_open_trades``, the stake in open trades (gross exposure)
  and today's closed PnL against the loss limit (``max_allowed_drawdown`` of a ``MaxDrawdown`` protection, else
  the stoploss, as a fraction of the starting balance) as risk gauges; trades that ended unseen (an entry
  cancelled unfilled) end their flow.
- The candle websocket (``watch_ohlcv`` of ``ccxt.pro``) reports feed health as ``<exchange id>.ohlcv``.
"""

from qt_telemetry._integrations.freqtrade import TRADING_RUNMODES, QtTelemetry, instrument_strategy

__all__ = ["TRADING_RUNMODES", "QtTelemetry", "instrument_strategy"]
