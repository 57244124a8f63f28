"""freqtrade configured for the tests: the real bot, trading BTC/USDT on a local Binance (tests/support/fake_binance).

:func:`write_config` writes the JSON a ``freqtrade trade --config`` run reads; :func:`make_bot` builds the same bot
in this process (freqtrade's own ``Configuration`` and ``FreqtradeBot``), for tests that drive its loop with
``bot.process()`` one iteration at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STRATEGIES = Path(__file__).parent / "freqtrade_strategies"
API_KEY = "ft-planted-apikey-4Kd"
SECRET = "ft-planted-secret-8Wq"


def write_config(directory: Path, venue_url: str, *, dry_run: bool, ws_url: str | None = None,
                 throttle_s: int = 5) -> Path:
    """A bot config for ``directory``: its database, user data and logs stay there."""
    api = {name: f"{venue_url}/api/v3" for name in ("public", "private")}
    api |= {"sapi": f"{venue_url}/sapi/v1", "fapiPublic": f"{venue_url}/fapi/v1", "dapiPublic": f"{venue_url}/dapi/v1"}
    urls: dict[str, Any] = {"api": dict(api)}
    if ws_url is not None:
        urls["api"]["ws"] = {"spot": ws_url}
    config = {
        "bot_name": "ft-test-bot",
        "max_open_trades": 1,
        "stake_currency": "USDT",
        "stake_amount": 100,
        "dry_run": dry_run,
        "dry_run_wallet": 1000,
        "cancel_open_orders_on_exit": False,
        "trading_mode": "spot",
        "timeframe": "1m",
        "entry_pricing": {"price_side": "other", "use_order_book": False, "price_last_balance": 0.0},
        "exit_pricing": {"price_side": "other", "use_order_book": False},
        "exchange": {
            "name": "binance", "key": API_KEY, "secret": SECRET,
            "enable_ws": ws_url is not None,
            "pair_whitelist": ["BTC/USDT"],
            "ccxt_config": {"enableRateLimit": False, "urls": urls},
            "ccxt_async_config": {"enableRateLimit": False, "urls": urls},
        },
        "pairlists": [{"method": "StaticPairList"}],
        "initial_state": "running",
        "force_entry_enable": False,
        "internals": {"process_throttle_secs": throttle_s, "heartbeat_interval": 0},
        "db_url": f"sqlite:///{directory / 'trades.sqlite'}",
        "user_data_dir": str(directory / "user_data"),
        "strategy": "TracedStrategy",
        "strategy_path": str(STRATEGIES),
    }
    (directory / "user_data").mkdir(exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def make_bot(config_path: Path, *, dry_run: bool) -> Any:
    """freqtrade's own bot, as ``freqtrade trade`` builds it (markets loaded, strategy started)."""
    from freqtrade.configuration import Configuration
    from freqtrade.enums import RunMode
    from freqtrade.freqtradebot import FreqtradeBot

    args = {"config": [str(config_path)], "strategy": "TracedStrategy", "strategy_path": str(STRATEGIES)}
    config = Configuration(args, RunMode.DRY_RUN if dry_run else RunMode.LIVE).get_config()
    bot = FreqtradeBot(config)
    bot.startup()
    return bot
