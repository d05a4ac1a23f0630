"""Two-dimensional test functions for drawing optimizer paths, and ``descend`` to record a path on one.

Values are vectorized over a trailing axis of length 2 so one call evaluates a whole contour grid
(``f(np.stack([X, Y], axis=-1))``); gradients are analytic so paths are free of finite-difference noise.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["BEALE", "BOOK", "OBJECTIVES", "ROSENBROCK", "Objective", "descend", "get_objective"]


class _Updater(Protocol):
    def update(self, params: np.ndarray, grads: np.ndarray) -> None: ...


def _points(p: np.ndarray | tuple[float, float]) -> np.ndarray:
    """View ``p`` as floating points with a trailing axis of length 2 (float64 unless already floating)."""
    arr = np.asarray(p)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 2:
        raise ValueError(f"points must have shape (2,) or (..., 2), got {arr.shape}")
    return arr


class Objective:
    """A 2-D function f(x, y) with its analytic gradient, argmin, usual start and plotting bounds.

    Subclasses define ``_f(x, y)`` and ``_df(x, y) -> (df/dx, df/dy)`` with elementwise NumPy arithmetic.
    """

    name: str
    minimum: tuple[float, float]  # the global argmin
    default_start: tuple[float, float]
    xlim: tuple[float, float]  # plotting bounds
    ylim: tuple[float, float]

    def _f(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _df(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def value(self, p: np.ndarray | tuple[float, float]) -> np.ndarray | np.floating:
        """f at points of shape (2,) (a NumPy scalar) or (..., 2) (shape ``p.shape[:-1]``)."""
        pts = _points(p)
        return self._f(pts[..., 0], pts[..., 1])

    __call__ = value

    def grad(self, p: np.ndarray | tuple[float, float]) -> np.ndarray:
        """Gradient at points of shape (2,) or (..., 2), same shape (and floating dtype) as ``p``."""
        pts = _points(p)
        dx, dy = self._df(pts[..., 0], pts[..., 1])
        return np.stack([dx, dy], axis=-1).astype(pts.dtype, copy=False)

    def __repr__(self) -> str:
        return f"<Objective {self.name!r}: minimum {self.minimum}, start {self.default_start}>"


class Book(Objective):
    """f = x^2/20 + y^2 (Figure 6-8): 10x stiffer in y than in x, so plain SGD zig-zags."""

    name = "book"
    minimum = (0.0, 0.0)
    default_start = (-7.0, 2.0)
    xlim = (-10.0, 10.0)
    ylim = (-10.0, 10.0)

    def _f(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return x**2 / 20.0 + y**2

    def _df(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x / 10.0, 2.0 * y


class Rosenbrock(Objective):
    """f = (a - x)^2 + b (y - x^2)^2, a=1, b=100: a curved, flat-bottomed valley; classic start (-1.2, 1)."""

    name = "rosenbrock"
    a, b = 1.0, 100.0
    minimum = (1.0, 1.0)
    default_start = (-1.2, 1.0)
    xlim = (-2.0, 2.0)
    ylim = (-1.0, 3.0)

    def _f(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (self.a - x) ** 2 + self.b * (y - x**2) ** 2

    def _df(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = y - x**2
        return -2.0 * (self.a - x) - 4.0 * self.b * x * r, 2.0 * self.b * r


class Beale(Objective):
    """f = sum_i (c_i - x + x y^i)^2, c = (1.5, 2.25, 2.625): flat plateaus and sharp ridges.

    Start (1, 1) is the standard one of More, Garbow and Hillstrom (1981); bounds are the usual [-4.5, 4.5]^2.
    """

    name = "beale"
    minimum = (3.0, 0.5)
    default_start = (1.0, 1.0)
    xlim = (-4.5, 4.5)
    ylim = (-4.5, 4.5)

    def _terms(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return 1.5 - x + x * y, 2.25 - x + x * y**2, 2.625 - x + x * y**3

    def _f(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u1, u2, u3 = self._terms(x, y)
        return u1**2 + u2**2 + u3**2

    def _df(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u1, u2, u3 = self._terms(x, y)
        dx = 2.0 * (u1 * (y - 1.0) + u2 * (y**2 - 1.0) + u3 * (y**3 - 1.0))
        dy = 2.0 * x * (u1 + 2.0 * u2 * y + 3.0 * u3 * y**2)
        return dx, dy


BOOK, ROSENBROCK, BEALE = Book(), Rosenbrock(), Beale()
OBJECTIVES: dict[str, Objective] = {obj.name: obj for obj in (BOOK, ROSENBROCK, BEALE)}


def get_objective(name: str) -> Objective:
    """Look up an objective by its config name."""
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; allowed: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def descend(
    objective: Objective, optimizer: _Updater, start: np.ndarray | tuple[float, float], steps: int
) -> np.ndarray:
    """Run ``steps`` updates from ``start``; return the (steps + 1, 2) float64 path, row 0 = start.

    Row i is the position after i updates, so the book's 30-update Figure 6-8 path has 31 points. The
    optimizer is used as given (pass a fresh one for an independent path).
    """
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"descend: steps must be an int >= 0, got {steps!r}")
    p = np.array(start, dtype=np.float64)
    if p.shape != (2,):
        raise ValueError(f"descend: start must have shape (2,), got {p.shape}")
    path = np.empty((int(steps) + 1, 2))
    path[0] = p
    for i in range(1, int(steps) + 1):
        optimizer.update(p, objective.grad(p))
        path[i] = p
    return path
