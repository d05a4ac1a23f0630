"""Curve smoothing for loss plots: the book's Kaiser window (to reproduce Figure 6-9) and an EMA."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

Smoother = Callable[[np.ndarray], np.ndarray]


def smooth_kaiser(x: np.ndarray, window: int = 11, beta: float = 2) -> np.ndarray:
    """The book's `common/util.py smooth_curve`, kept byte-for-byte so Figure 6-9 looks the same.

    A centred Kaiser-window moving average over a mirrored copy of the ends (the book's padding: the left
    mirror skips the first point, the right one repeats the last). The output has the input's length.
    The book's code only works when len(x) >= window; shorter inputs use the largest odd window that fits
    (a single point is returned unchanged) instead of silently returning a shorter array.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"smooth_kaiser: x must be 1-D, got shape {x.shape}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"smooth_kaiser: window must be an odd integer >= 1, got {window}")
    window_len = min(window, len(x) if len(x) % 2 else len(x) - 1)
    if window_len <= 1:
        return x.copy()
    s = np.r_[x[window_len - 1 : 0 : -1], x, x[-1:-window_len:-1]]
    w = np.kaiser(window_len, beta)
    y = np.convolve(w / w.sum(), s, mode="valid")
    half = (window_len - 1) // 2  # the book's 5 for its window of 11
    return y[half : len(y) - half]


def ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average y_t = (1-alpha) y_{t-1} + alpha x_t, y_0 = x_0 (TensorBoard-style, causal)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"ema: alpha must be in (0, 1], got {alpha}")
    return pd.Series(np.asarray(x, dtype=float)).ewm(alpha=alpha, adjust=False).mean().to_numpy()


def get_smoother(smooth: str | Smoother | None, *, window: int = 11, alpha: float = 0.1) -> Smoother | None:
    """Resolve a `smooth=` argument ("kaiser", "ema", a callable or None) to a function of one array."""
    if smooth is None or callable(smooth):
        return smooth
    if smooth == "kaiser":
        return lambda v: smooth_kaiser(v, window=window)
    if smooth == "ema":
        return lambda v: ema(v, alpha)
    raise ValueError(f"smooth must be None, 'kaiser', 'ema' or a callable, got {smooth!r}")
