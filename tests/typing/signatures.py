"""Checked by mypy (tests/unit/test_typing.py): decorated functions keep their signatures for type checkers.

Each deliberate misuse carries a ``type: ignore[...]``; under ``warn_unused_ignores`` an ignore that is not
needed fails, so if a decorator erased the signature, this file would stop type-checking.
"""

from __future__ import annotations

import qt_telemetry as qt


@qt.traced_order
def place(symbol: str, side: str, quantity: float) -> int:
    return 1


@qt.traced_order(venue="binance")
async def aplace(symbol: str, side: str, quantity: float, price: float | None = None) -> str:
    return "ok"


@qt.risk_check("max_position")
def within_limit(open_positions: int, limit: int) -> bool:
    return open_positions < limit


order_id: int = place("BTCUSDT", "buy", 1.0)
place("BTCUSDT", "buy")  # type: ignore[call-arg]
place("BTCUSDT", "buy", "lots")  # type: ignore[arg-type]
bad_return: str = place("BTCUSDT", "buy", 1.0)  # type: ignore[assignment]
pending = aplace("ETHUSDT", "sell", 2.0, price=3100.0)
wrong = aplace("ETHUSDT", "sell", 2.0, limit=1)  # type: ignore[call-arg]
allowed: bool = within_limit(1, 3)
within_limit("one", 3)  # type: ignore[arg-type]
pending.close()
wrong.close()
