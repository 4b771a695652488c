"""Types of command-line values, checked where they enter as settings are (`agent.core.config`).

`--queue -1`, `--speed nan` or `--connect-timeout inf` is one argparse error line
(exit 2) naming the flag's allowed range, never a traceback or a silent misbehaviour
later. Each helper returns an argparse `type=` callable.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """A whole number in [low, high]."""
    span = f">= {low}" if high is None else f"from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"wants a whole number {span}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"wants a whole number {span}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def number(low: float, *, above: bool = False, high: float | None = None) -> Callable[[str], float]:
    """A finite number >= low (> low with `above`), at most `high` when given."""
    span = f"{'>' if above else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"wants a finite number {span}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (above and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"wants a finite number {span}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


COUNT = integer(1)  # how many of something, at least one
NON_NEGATIVE_INT = integer(0)
SEED = integer(0, 2**32 - 1)
PORT = integer(0, 65535)  # 0: a free port the system picks
POSITIVE = number(0.0, above=True)  # a duration, a period, a rate, a size
NON_NEGATIVE = number(0.0)  # the same where 0 means "none", "no limit" or "as fast as possible"
FINITE = number(-math.inf)  # any finite number
