"""A freqtrade strategy with the one line: enters on every candle, exits once the entry is filled.

``deny_entries`` / ``deny_exits`` (set by a test on the loaded strategy) make ``confirm_trade_entry`` /
``confirm_trade_exit`` say no, as a strategy's own risk rule would.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from freqtrade.strategy import IStrategy
from pandas import DataFrame

from qt_telemetry.freqtrade import QtTelemetry


class TracedStrategy(QtTelemetry, IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    minimal_roi: ClassVar[dict[str, float]] = {"0": 100.0}  # never: exits come from custom_exit
    stoploss = -0.10
    startup_candle_count = 0
    process_only_new_candles = False
    order_types: ClassVar[dict[str, Any]] = {"entry": "market", "exit": "market", "stoploss": "market",
                                             "stoploss_on_exchange": False}
    deny_entries = False
    deny_exits = False
    entered = False

    def populate_indicators(self, dataframe: DataFrame, metadata: dict[str, Any]) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict[str, Any]) -> DataFrame:
        # QT_TEST_ONE_TRADE: one trade and no more (a test that reads "the" trade off the wire while the bot runs)
        dataframe["enter_long"] = 0 if os.environ.get("QT_TEST_ONE_TRADE") and self.entered else 1
        dataframe["enter_tag"] = "always"
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict[str, Any]) -> DataFrame:
        dataframe["exit_long"] = 0
        return dataframe

    def confirm_trade_entry(self, pair: str, order_type: str, amount: float, rate: float, time_in_force: str,
                            current_time: Any, entry_tag: str | None, side: str, **kwargs: Any) -> bool:
        self.entered = self.entered or not self.deny_entries
        return not self.deny_entries

    def confirm_trade_exit(self, pair: str, trade: Any, order_type: str, amount: float, rate: float,
                           time_in_force: str, exit_reason: str, current_time: Any, **kwargs: Any) -> bool:
        return not self.deny_exits

    def custom_exit(self, pair: str, trade: Any, current_time: Any, current_rate: float, current_profit: float,
                    **kwargs: Any) -> str | None:
        return "done" if not trade.has_open_orders else None
