"""Argument types of the ``qt-telemetry`` command: bad values are usage errors naming the option, never a
traceback (a zero rate once divided by zero, an empty symbol list took a modulo by zero)."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable


def number(low: float, *, above: bool = False, whole: bool = False, high: float = math.inf) -> Callable[[str], float]:
    """An argparse type: a finite number at least ``low`` (or ``above`` it) and at most ``high``, named in the
    error (argparse adds the option's name): no ZeroDivisionError or negative duration reaches the demo."""
    bound = f"greater than {low:g}" if above else f"at least {low:g}"
    if high < math.inf:
        bound += f" and at most {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(int(text)) if whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if whole else ''}number") from None
        if not math.isfinite(value) or value < low or (above and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number {bound}")
        return value

    return parse


def symbols(text: str) -> list[str]:
    """A comma-separated list of at least one symbol (letters, digits and ``/._:-``)."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected at least one symbol, e.g. BTCUSDT,ETHUSDT")
    bad = [s for s in items if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9/._:-]{0,31}", s)]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r} is not a symbol (letters, digits and / . _ : -)")
    return items
