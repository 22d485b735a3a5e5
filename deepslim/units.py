"""Numbers in words, one meaning each, for every table and report the tool prints.

A speedup is always baseline time / artifact time: above 1 the artifact is faster, below 1
it is slower and is printed as the reciprocal with "slower" (never "0.46x"). Sizes are in
binary units, KiB below 1 MiB so a small artifact never reads "0.0 MiB". Torch-free.
"""

from __future__ import annotations

import math

__all__ = ["format_count", "format_size", "format_speedup"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_speedup(speedup: float) -> str:
    """``baseline time / artifact time`` in words: 2.0 -> "2.00× faster", 0.5 -> "2.00× slower".

    Exactly 1 reads "1.00× faster"; the reciprocal is what is rounded, so 0.999 -> "1.00× slower"."""
    if not math.isfinite(speedup) or speedup <= 0:
        raise ValueError(f"A speedup is a positive finite ratio of two times, got {speedup!r}.")
    if speedup >= 1:
        return f"{speedup:.2f}× faster"
    return f"{1 / speedup:.2f}× slower"


def format_size(num_bytes: int) -> str:
    """Bytes on disk in the largest binary unit that keeps the number at 1 or more:
    "512 B", "12.3 KiB", "10.8 MiB", "1.20 GiB" (one decimal; two from GiB up)."""
    if num_bytes < 0:
        raise ValueError(f"A size in bytes cannot be negative, got {num_bytes!r}.")
    if num_bytes < 1024:
        return f"{int(num_bytes)} B"
    power = 1
    while power < len(_UNITS) - 1 and round(num_bytes / 1024**power, _digits(power)) >= 1024:
        power += 1
    return f"{num_bytes / 1024**power:.{_digits(power)}f} {_UNITS[power]}"


def _digits(power: int) -> int:
    return 1 if power < 3 else 2


def format_count(count: int) -> str:
    """A count (MACs, parameters) to three significant figures in decimal units, so a small model never
    reads "0.0M": 950 -> "950", 12_345 -> "12.3k", 4_100_000 -> "4.10M", 1_800_000_000 -> "1.80G"."""
    if count < 0:
        raise ValueError(f"A count cannot be negative, got {count!r}.")
    if count < 1000:
        return str(int(count))
    rounded = float(f"{count:.3g}")
    scale, unit = next((s, u) for s, u in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")) if rounded >= s)
    value = rounded / scale
    return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f}{unit}"
