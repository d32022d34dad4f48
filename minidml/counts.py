"""Counts as people write them: ``"20M"`` ↔ ``20_000_000`` (budgets, token counts, targets)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from .errors import MinidmlError

_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_COUNT_RE = re.compile(r"(\d[\d_]*(?:\.\d*)?|\.\d+)([kmbg]?)")


def parse_count(text: str | int, option: str = "--budget") -> int:
    """A positive whole number from ``"20M"``, ``"1.5k"``, ``"2B"``, ``"20_000_000"`` or an int.

    Suffixes (case-insensitive): k = 10³, M = 10⁶, B or G = 10⁹. Decimals are exact (``"1.001k"``
    is 1001); a value that is not a whole number (``"1.5"``, ``"1.0005k"``) or is below 1 raises
    :class:`MinidmlError` whose message starts with ``option``.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = Decimal(text)
    else:
        m = _COUNT_RE.fullmatch(str(text).strip().lower())
        if not m or "__" in m.group(1) or m.group(1).endswith("_"):
            raise MinidmlError(f"{option} {text!r}: not a count; write it like 5000, 20k, 1.5M "
                               "or 2B")
        try:
            value = Decimal(m.group(1).replace("_", "")) * _SUFFIXES[m.group(2)]
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
            raise MinidmlError(f"{option} {text!r}: not a count") from None
    if value != value.to_integral_value():
        raise MinidmlError(f"{option} {text!r}: must be a whole number (it is {value})")
    if value < 1:
        raise MinidmlError(f"{option} {text!r}: must be at least 1")
    return int(value)


def format_count(n: float, digits: int = 3) -> str:
    """``n`` with a k/M/B suffix and at most ``digits`` significant digits: 20000000 → "20M",
    2500000 → "2.5M", 999999 → "1M" (rounded before the suffix is chosen).

    Rounds to nearest, so use :func:`round_up` first where the result must not be smaller.
    """
    value = float(f"{n:.{digits}g}")
    for suffix, scale in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(value) >= scale:
            text = f"{value / scale:.{digits}g}"
            if "e" in text:  # a thousand billion and more: 1500B
                text = f"{round(value / scale):d}"
            return text + suffix
    return f"{value:g}"


def round_up(n: int, digits: int = 2) -> int:
    """``n`` rounded up to ``digits`` significant digits: 5_510_400 → 5_600_000."""
    if n <= 0:
        return n
    scale = 10 ** max(0, len(str(n)) - digits)
    return -(-n // scale) * scale
