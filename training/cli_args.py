"""Argument types shared by the training commands' parsers (``argparse`` ``type=`` callables)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number_in(lo: float, hi: float, *, lo_open: bool = False,
              hi_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a float in the interval from ``lo`` to ``hi`` (open ends as told); nan,
    text and values outside are usage errors that name the interval."""
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        below = value <= lo if lo_open else value < lo
        above = value >= hi if hi_open else value > hi
        if math.isnan(value) or below or above:
            raise argparse.ArgumentTypeError(f"{text} is outside {left}{lo}, {hi}{right}")
        return value

    return parse
