"""Change points in a case's history: where the series of run medians steps up or down.

Binary segmentation on the log of the medians (so a step is a ratio): split a segment where
splitting lowers the squared error the most, keep the split when that gain beats a BIC-like
penalty ``beta * sigma^2 * log(n)`` and the step is beyond ``min_effect``, then look inside
both halves. ``sigma`` is estimated from the median absolute first difference, which a few
steps barely move, so the noise level is learned from the series itself.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from torchsmith.interfaces import DataError


def _noise_sigma(x: NDArray[np.float64]) -> float:
    diffs = np.diff(x)
    if diffs.size == 0:
        return 0.0
    # MAD of first differences: 1.4826 makes it a normal sigma; differences have sqrt(2) of it.
    return float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / math.sqrt(2.0))


def _best_split(x: NDArray[np.float64], min_size: int) -> tuple[int, float]:
    """(index where the right part starts, squared-error gain) of the best single split."""
    n = x.size
    cumsum = np.cumsum(x)
    total = cumsum[-1]
    k = np.arange(min_size, n - min_size + 1)
    left_sum = cumsum[k - 1]
    right_sum = total - left_sum
    # Gain of splitting = sum of n_i * mean_i^2 over parts minus n * mean^2.
    gain = left_sum**2 / k + right_sum**2 / (n - k) - total**2 / n
    best = int(np.argmax(gain))
    return int(k[best]), float(gain[best])


def change_points(
    values: ArrayLike,
    *,
    min_size: int = 2,
    min_effect: float = 0.05,
    beta: float = 3.0,
) -> list[int]:
    """Indices ``i`` where a new level starts (``values[i]`` is the first after the step).

    ``values`` must be positive (run medians); ``min_effect`` is the smallest relative step
    reported, ``min_size`` the fewest points on either side of a step.
    """
    raw = np.asarray(values, dtype=np.float64).ravel()
    if raw.size and (not np.all(np.isfinite(raw)) or np.any(raw <= 0)):
        raise DataError("change_points: values must be positive and finite (run medians)")
    x = np.log(raw)
    if x.size < 2 * min_size:
        return []
    sigma = max(_noise_sigma(x), 1e-6)
    penalty = beta * sigma**2 * math.log(x.size)
    found: list[int] = []
    pending = [(0, x.size)]
    while pending:
        start, stop = pending.pop()
        segment = x[start:stop]
        if segment.size < 2 * min_size:
            continue
        split, gain = _best_split(segment, min_size)
        step = abs(segment[split:].mean() - segment[:split].mean())
        if gain <= penalty or step < math.log1p(min_effect):
            continue
        found.append(start + split)
        pending += [(start, start + split), (start + split, stop)]
    return sorted(found)
