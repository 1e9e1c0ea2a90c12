"""How the site prints numbers: one convention for every page and chart (the downloads keep the raw values).

- probabilities (softmax probabilities and their means): a percentage to 3 significant digits,
  0.9731 -> "97.3 %", 0.0008013 -> "0.0801 %". Never rounded to 0 % or 100 % when not exactly
  that: a positive value under 0.001 % prints "< 0.001 %", one over 99.9 % but under 1 "> 99.9 %".
- other real numbers (activations, ratios, losses, seconds): 3 significant digits, 12.345 -> "12.3",
  0.00042 -> "4.2e-4"; from 1000 the whole number, 12345.6 -> "12346"; from a million, 3 digits
  with an exponent, "1.23e6".
- integers (ranks, steps, seeds, counts): exact.
- missing (None, NaN, infinite): "–".

The spaces in a percentage ("97.3 %", "< 0.001 %") are no-break spaces: a value never wraps apart.
`assets/atlas.js` prints the grid's numbers by the same rules.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "\u2013"
PERCENT = "\u00a0%"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def finite_or_none(v: Any) -> Any:
    """A float that is NaN or infinite becomes None (null in Parquet and JSON); the rest as it is."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _exp(v: float) -> str:
    """`v` as mantissa (3 significant digits, trailing zeros dropped) and exponent: 4.2e-4, 1.23e6."""
    mantissa, exp = f"{v:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exp)}"


def number(v: Any) -> str:
    """An activation, loss, ratio or duration (3 significant digits), or an integer (exact)."""
    if _missing(v):
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if not isinstance(v, float):
        return str(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 999_500 or a < 0.000_999_5:
        return _exp(v)
    if a >= 999.5:
        return f"{v:.0f}"
    return f"{v:.3g}"


def percent(p: Any) -> str:
    """A probability in [0, 1] as a percentage (3 significant digits; see the module docstring)."""
    if _missing(p):
        return MISSING
    p = float(p)
    if 0 < p < 0.000_01:
        return "<\u00a00.001" + PERCENT
    text = f"{100 * p:.3g}"
    if p < 1 and float(text) >= 100:
        return ">\u00a099.9" + PERCENT
    return text + PERCENT


def value(v: Any) -> str:
    """Anything else a table shows: text as it is, yes/no, numbers by `number`."""
    if isinstance(v, str):
        return v
    return number(v)
