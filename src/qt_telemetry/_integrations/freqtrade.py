"""freqtrade: the work behind :mod:`qt_telemetry.freqtrade` (see there)."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from opentelemetry import trace

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry._engine.recorder.safety import telemetry_error
from qt_telemetry._integrations.ccxt import instrument_ccxt
from qt_telemetry.flows import Stage, TradeFlow

#: freqtrade run modes that trade (``RunMode.LIVE``, ``RunMode.DRY_RUN``); backtesting and hyperopt stay untraced.
TRADING_RUNMODES = ("live", "dry_run")
DRY_RUN = "freqtrade.dry_run"
ENTRY_TAG = "freqtrade.entry_tag"
EXIT_REASON = "freqtrade.exit_reason"
PROFIT_RATIO = "freqtrade.profit_ratio"
PROFIT_ABS = "freqtrade.profit_abs"

_DRY_RUN_ORDER: dict[str, Any] = {DRY_RUN: True}


class QtTelemetry:
    """Mixin for a freqtrade strategy: ``class MyStrategy(QtTelemetry, IStrategy):``. See the module's doc."""

    def ft_bot_start(self, **kwargs: Any) -> None:
        super().ft_bot_start(**kwargs)  # type: ignore[misc]  # IStrategy's, which calls the strategy's bot_start
        instrument_strategy(self)

    def ft_bot_cleanup(self) -> None:
        try:
            super().ft_bot_cleanup()  # type: ignore[misc]
        finally:
            bot = self.__dict__.get("_qt_bot")
            if isinstance(bot, _Bot):
                bot.stopped()


def instrument_strategy(strategy: Any) -> None:
    """What :class:`QtTelemetry` does at bot start, for a strategy that cannot take the mixin: call it in
    ``bot_start``. Does nothing outside live and dry-run, and nothing twice."""
    config = getattr(strategy, "config", None) or {}
    runmode = getattr(config.get("runmode"), "value", config.get("runmode"))
    if runmode not in TRADING_RUNMODES or "_qt_bot" in strategy.__dict__:
        return
    if qt.current() is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        named = os.environ.get("QT_TELEMETRY_SERVICE_NAME") or os.environ.get("OTEL_SERVICE_NAME")
        qt.init(service_name=None if named else str(config.get("bot_name") or "freqtrade"))
    exchange = strategy.dp._exchange  # freqtrade's Exchange: ccxt objects in _api, _api_async and _ws_async
    for api in (exchange._api, exchange._api_async, getattr(exchange, "_ws_async", None)):
        if api is not None:
            instrument_ccxt(api)
    strategy._qt_bot = _Bot(strategy, exchange)


@dataclass
class _Trade:
    """The flow of the trade a pair has open (freqtrade opens one trade per pair at a time)."""

    flow: TradeFlow
    entry_side: str
    exit: Stage | None = None
    trade_id: Any = None


class _Bot:
    """One strategy's flows and the wrappers that feed them; every wrapper calls freqtrade's own method as is."""

    def __init__(self, strategy: Any, exchange: Any) -> None:
        self.strategy = strategy
        self.name = strategy.get_strategy_name()
        self.dry_run = bool(strategy.config.get("dry_run"))
        self.venue = exchange.id
        self.signalled: dict[Any, tuple[TradeFlow, Stage]] = {}  # pair -> flow whose entry is not decided yet
        self.trades: dict[Any, _Trade] = {}
        self.dry_orders: set[Any] = set()
        for name in ("get_entry_signal", "confirm_trade_entry", "confirm_trade_exit", "order_filled",
                     "bot_loop_start"):
            _wrap(strategy, name, getattr(self, name))
        _wrap(exchange, "create_order", self.create_order)
        _wrap(exchange, "cancel_order", self.cancel_order)

    def flow(self, pair: Any, **attributes: Any) -> TradeFlow:
        attributes[DRY_RUN] = self.dry_run
        flow: TradeFlow = qt.trade_flow(symbol=pair, strategy=self.name, **attributes).start()
        return flow

    def trade(self, pair: Any, short: bool = False) -> _Trade:
        """The pair's trade flow; one opened on the spot for a trade this process did not see open (a restart)."""
        found = self.trades.get(pair)
        if found is None:
            found = self.trades[pair] = _Trade(self.flow(pair, **{"freqtrade.resumed": True}),
                                               "sell" if short else "buy")
        return found

    # --- strategy callbacks ----------------------------------------------------------------------------------
    def get_entry_signal(self, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = original(*args, **kwargs)
        try:
            direction, tag = result
            if direction:
                pair = args[0] if args else kwargs.get("pair")
                flow = self.flow(pair)
                # Replaces a flow signalled before and never entered: that one is dropped unfinished, unrecorded.
                self.signalled[pair] = flow, flow.signal(direction=getattr(direction, "value", direction),
                                                         **({ENTRY_TAG: tag} if tag else {})).start()
        except Exception as exc:  # noqa: BLE001 - telemetry never breaks the bot
            telemetry_error("freqtrade_failed", type(exc).__name__)
        return result

    def confirm_trade_entry(self, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        pair, rate, side = kwargs.get("pair"), kwargs.get("rate"), kwargs.get("side")
        flow, signal = self.signalled.pop(pair, None) or (self.flow(pair, **{"freqtrade.forced": True}), None)
        price = _positive(rate)
        if price is not None:
            flow.reference_price = price
        if signal is not None:
            signal.set_attribute(semconv.SIGNAL_REFERENCE_PRICE, price)
            signal.finish()
        allowed: Any = True
        try:
            with flow.activate(), flow.entry(**{semconv.ORDER_TYPE: kwargs.get("order_type"),
                                                semconv.ORDER_QUANTITY: kwargs.get("amount")}), \
                    qt.risk_check("confirm_trade_entry") as check:
                allowed = original(*args, **kwargs)
                if not allowed:
                    check.reject("denied")
            return allowed
        finally:  # an exception lets freqtrade enter anyway (its default is True): the trade goes on
            if allowed:
                self.trades[pair] = _Trade(flow, "sell" if side == "short" else "buy")
            else:
                flow.finish()

    def confirm_trade_exit(self, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        pair, trade = kwargs.get("pair"), kwargs.get("trade")
        ours = self.trade(pair, bool(getattr(trade, "is_short", False)))
        flow = ours.flow
        price = _positive(kwargs.get("rate"))
        if price is not None:
            flow.reference_price = price  # the exit order's slippage is against the exit's own proposed rate
        stage = flow.exit(**{EXIT_REASON: kwargs.get("exit_reason"), semconv.ORDER_TYPE: kwargs.get("order_type"),
                             semconv.ORDER_QUANTITY: kwargs.get("amount")}).start()
        before = flow.outcome, flow.reject_reason
        allowed: Any = True
        try:
            with stage.activate(), qt.risk_check("confirm_trade_exit") as check:
                allowed = original(*args, **kwargs)
                if not allowed:
                    check.reject("denied")
            return allowed
        finally:
            if allowed:
                ours.exit = stage
            else:  # a refused exit: the trade stays open, so the flow is not rejected
                flow.outcome, flow.reject_reason = before
                stage.finish(outcome=semconv.OUTCOME_REJECTED)

    def order_filled(self, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = original(*args, **kwargs)
        try:
            pair, trade, order = kwargs.get("pair"), kwargs.get("trade"), kwargs.get("order")
            order_id = getattr(order, "order_id", None)
            if order_id in self.dry_orders:  # live, ccxt's replies already told the order's fills
                self.dry_orders.discard(order_id)
                filled = _positive(getattr(order, "filled", None))
                if filled is not None:
                    qt.order_filled(order_id, quantity=filled, price=getattr(order, "safe_price", None), final=True)
                else:
                    qt.order_cancelled(order_id, reason=getattr(order, "status", None))
            ours = self.trades.get(pair)
            if ours is not None and trade is not None:
                ours.trade_id = trade.id
                ours.flow.set_attribute(semconv.TRADE_ID, trade.id)
                if getattr(order, "ft_order_side", None) == trade.exit_side and not trade.is_open:
                    self.closed(pair, trade)
        except Exception as exc:  # noqa: BLE001 - telemetry never breaks the bot
            telemetry_error("freqtrade_failed", type(exc).__name__)
        return result

    def bot_loop_start(self, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = original(*args, **kwargs)
        try:
            self.loop()
        except Exception as exc:  # noqa: BLE001 - telemetry never breaks the bot
            telemetry_error("freqtrade_failed", type(exc).__name__)
        return result

    # --- the exchange -----------------------------------------------------------------------------------------
    def create_order(self, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        pair, side = kwargs.get("pair"), kwargs.get("side")
        ours = self.trade(pair, short=side == "sell" and bool(kwargs.get("initial_order")))
        if side == ours.entry_side:
            try:
                with ours.flow.activate(), ours.flow.execution():
                    return self.place(original, kwargs)
            except BaseException:
                if kwargs.get("initial_order") and self.trades.get(pair) is ours:
                    del self.trades[pair]  # freqtrade makes no trade of a failed first entry
                    ours.flow.finish()
                raise
        stage, ours.exit = ours.exit or ours.flow.exit().start(), None  # an exit without confirm: liquidation, partial
        try:
            with stage.activate():
                return self.place(original, kwargs)
        finally:
            stage.finish()

    def place(self, original: Any, kwargs: dict[str, Any]) -> Any:
        if not self.dry_run:
            return original(**kwargs)  # ccxt's create_order inside is the order span
        with qt.order_span(venue=self.venue, symbol=kwargs.get("pair"), side=kwargs.get("side"),
                           order_type=kwargs.get("ordertype"), quantity=kwargs.get("amount"),
                           price=kwargs.get("rate"), **_DRY_RUN_ORDER) as span:
            order = original(**kwargs)
            order_id = order.get("id") if isinstance(order, dict) else None
            span.set_result(order)
            span.track(order_id)  # freqtrade's dry-run id is the only id: fills find the order by it
            if order_id is not None:
                span.set_attribute(semconv.ORDER_STATUS, order.get("status"))
                self.dry_orders.add(order_id)
        if order_id is not None and order.get("status") == "open":
            qt.order_acknowledged(order_id, order_id=order_id)
        return order

    def cancel_order(self, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = original(*args, **kwargs)
        order_id = args[0] if args else kwargs.get("order_id")
        if order_id in self.dry_orders:  # live, ccxt's cancel_order span and reply say it
            self.dry_orders.discard(order_id)
            qt.order_cancelled(order_id)
        return result

    # --- state ------------------------------------------------------------------------------------------------
    def closed(self, pair: Any, trade: Any) -> None:
        ours = self.trades.pop(pair, None)
        if ours is None:
            return
        if ours.exit is not None:
            ours.exit.finish()
        ours.flow.set_attributes({k: v for k, v in ((semconv.TRADE_ID, trade.id), (EXIT_REASON, trade.exit_reason),
                                                    (PROFIT_RATIO, trade.close_profit),
                                                    (PROFIT_ABS, trade.close_profit_abs)) if v is not None})
        ours.flow.finish()

    def loop(self) -> None:
        from freqtrade.persistence import Trade  # type: ignore[import-untyped,import-not-found,unused-ignore]

        open_trades = Trade.get_open_trades()
        open_pairs = {t.pair for t in open_trades}
        for pair in [p for p in self.trades if p not in open_pairs]:  # ended without an exit fill we saw
            done = [t for t in Trade.get_trades_proxy(pair=pair, is_open=False) if t.id == self.trades[pair].trade_id]
            if done:
                self.closed(pair, done[0])
            else:  # no trade came of it (an entry cancelled unfilled)
                self.trades.pop(pair).flow.finish(outcome=semconv.OUTCOME_CANCELLED)
        config = self.strategy.config
        midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        pnl = sum(t.close_profit_abs or 0.0 for t in Trade.get_trades_proxy(is_open=False, close_date=midnight))
        limit = self.loss_limit() * self.strategy.wallets.get_starting_balance()
        max_open = config.get("max_open_trades")
        qt.set_risk_gauges(
            strategy=self.name, open_positions=len(open_trades),
            max_positions=max_open if isinstance(max_open, int | float) and math.isfinite(max_open) else None,
            gross_exposure=sum(t.stake_amount * (t.leverage or 1.0) for t in open_trades),
            daily_pnl_used=qt.daily_pnl_used(pnl, limit) if limit > 0 else None)

    def loss_limit(self) -> float:
        """The loss freqtrade is told to stop at, as a fraction of the starting balance."""
        for protection in getattr(self.strategy, "protections", None) or ():
            if isinstance(protection, dict) and protection.get("method") == "MaxDrawdown":
                return abs(float(protection.get("max_allowed_drawdown", 0.0)))
        return abs(float(self.strategy.stoploss or 0.0))

    def stopped(self) -> None:
        """The bot stops: open trades' flows end as cancelled (the trades go on; a restart resumes them)."""
        self.signalled.clear()
        for pair in list(self.trades):
            ours = self.trades.pop(pair)
            if ours.exit is not None:
                ours.exit.finish(outcome=semconv.OUTCOME_CANCELLED)
            ours.flow.set_attribute(semconv.REASON, "bot_stopped")
            ours.flow.finish(outcome=semconv.OUTCOME_CANCELLED)
        qt.force_flush()


def _wrap(owner: Any, name: str, handler: Any) -> None:
    """``owner.name`` (a bound method) as an instance attribute calling ``handler(original, args, kwargs)``; the
    original's name and qualname are kept (freqtrade deep-copies ``trade`` only for callbacks a strategy wrote)."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return handler(original, args, kwargs)

    setattr(owner, name, wrapper)


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


__all__ = ["TRADING_RUNMODES", "QtTelemetry", "instrument_strategy"]
