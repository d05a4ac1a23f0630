"""Tests for descentlab.objectives: hand values, gradient checks, vectorization, registry, descend."""

from __future__ import annotations

import numpy as np
import pytest

from descentlab.objectives import BEALE, BOOK, OBJECTIVES, ROSENBROCK, Objective, descend, get_objective
from descentlab.optim import SGD, Adam

ALL = list(OBJECTIVES.values())


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_registry_names_each_objective_by_its_own_name_and_its_minimum_is_stationary(name: str) -> None:
    objective = get_objective(name)
    assert objective.name == name and OBJECTIVES[name] is objective
    assert objective.value(objective.minimum) == pytest.approx(0.0, abs=1e-12)  # a minimum of value 0 ...
    np.testing.assert_allclose(objective.grad(objective.minimum), 0.0, atol=1e-12)  # ... where the gradient vanishes


def test_registry_refuses_an_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"^unknown objective 'himmelblau'; allowed: book, rosenbrock, beale$"):
        get_objective("himmelblau")


@pytest.mark.parametrize(
    ("objective", "point", "value", "grad"),
    [
        (BOOK, (-7.0, 2.0), 49 / 20 + 4, (-0.7, 4.0)),
        # the classic Rosenbrock start: f = 2.2^2 + 100 * 0.44^2, grad = (-4.4 - 211.2, -88)
        (ROSENBROCK, (-1.2, 1.0), 24.2, (-215.6, -88.0)),
        # at y = 1 every (y^i - 1) vanishes, so df/dx = 0; df/dy = 2 (1.5 + 2 * 2.25 + 3 * 2.625)
        (BEALE, (1.0, 1.0), 1.5**2 + 2.25**2 + 2.625**2, (0.0, 27.75)),
    ],
)
def test_hand_computed_values(
    objective: Objective, point: tuple[float, float], value: float, grad: tuple[float, float]
) -> None:
    assert objective(point) == pytest.approx(value, rel=1e-14)
    np.testing.assert_allclose(objective.grad(point), grad, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("objective", ALL, ids=lambda o: o.name)
def test_gradient_matches_centered_differences(objective: Objective) -> None:
    rng = np.random.default_rng(0)
    (x0, x1), (y0, y1) = objective.xlim, objective.ylim
    points = np.column_stack([rng.uniform(x0, x1, 25), rng.uniform(y0, y1, 25)])
    points = np.vstack([points, objective.default_start, [0.3, -0.7]])
    h = 1e-6
    for p in points:
        numeric = np.array([(objective(p + h * e) - objective(p - h * e)) / (2 * h) for e in np.eye(2)])
        scale = max(1.0, abs(float(objective(p))))
        np.testing.assert_allclose(objective.grad(p), numeric, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("objective", ALL, ids=lambda o: o.name)
def test_minimum_is_a_zero_of_value_and_gradient(objective: Objective) -> None:
    assert objective(objective.minimum) == 0.0
    assert np.array_equal(objective.grad(objective.minimum), [0.0, 0.0])
    nearby = np.asarray(objective.minimum) + np.array([[1e-3, 0], [0, 1e-3], [-1e-3, 1e-3]])
    assert np.all(objective(nearby) > 0.0)


@pytest.mark.parametrize("objective", ALL, ids=lambda o: o.name)
def test_start_and_minimum_lie_within_plot_bounds(objective: Objective) -> None:
    for x, y in (objective.minimum, objective.default_start):
        assert objective.xlim[0] < x < objective.xlim[1]
        assert objective.ylim[0] < y < objective.ylim[1]


@pytest.mark.parametrize("objective", ALL, ids=lambda o: o.name)
def test_vectorized_over_contour_grids(objective: Objective) -> None:
    xs, ys = np.linspace(*objective.xlim, 7), np.linspace(*objective.ylim, 5)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)  # (5, 7, 2)
    values, grads = objective(grid), objective.grad(grid)
    assert values.shape == (5, 7) and grads.shape == (5, 7, 2)
    assert values[2, 3] == objective(grid[2, 3])
    assert np.array_equal(grads[4, 6], objective.grad(grid[4, 6]))
    assert np.array_equal(objective.value(grid), values)


def test_point_shape_and_dtype_handling() -> None:
    assert np.ndim(BOOK((1, 2))) == 0  # integer input is fine, a single point gives a scalar
    assert BOOK.grad(np.array([1.0, 2.0], dtype=np.float32)).dtype == np.float32
    assert BOOK.grad((1, 2)).dtype == np.float64
    with pytest.raises(ValueError, match=r"shape \(2,\) or \(\.\.\., 2\), got \(3,\)"):
        BOOK((1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match=r"got \(\)"):
        BOOK.grad(1.0)


def test_descend_records_start_then_each_update() -> None:
    start = np.array([-7.0, 2.0])
    path = descend(BOOK, SGD(lr=0.5), start, 4)
    assert path.shape == (5, 2) and path.dtype == np.float64
    assert np.array_equal(start, [-7.0, 2.0])  # the caller's start is not moved
    p, opt = start.copy(), SGD(lr=0.5)
    assert np.array_equal(path[0], start)
    for i in range(1, 5):
        opt.update(p, BOOK.grad(p))
        assert np.array_equal(path[i], p)


def test_descend_book_figure_has_31_points_and_integer_start_works() -> None:
    path = descend(BOOK, Adam(lr=0.3), (-7, 2), 30)
    assert path.shape == (31, 2) and path.dtype == np.float64
    assert BOOK(path[-1]) < BOOK(path[0]) / 50  # 6.45 -> 0.102
    assert descend(BOOK, Adam(), BOOK.default_start, 0).tolist() == [[-7.0, 2.0]]


@pytest.mark.parametrize(("start", "steps"), [((1.0, 2.0, 3.0), 3), ((1.0, 2.0), -1), ((1.0, 2.0), 2.5)])
def test_descend_rejects_bad_arguments(start: tuple[float, ...], steps: object) -> None:
    with pytest.raises(ValueError, match="descend: "):
        descend(BOOK, SGD(), start, steps)  # type: ignore[arg-type]


@pytest.mark.parametrize("objective", [ROSENBROCK, BEALE], ids=lambda o: o.name)
def test_adam_reaches_the_minimum_from_the_default_start(objective: Objective) -> None:
    path = descend(objective, Adam(lr=0.05), objective.default_start, 2000)
    np.testing.assert_allclose(path[-1], objective.minimum, atol=1e-3)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_descend_gives_the_same_path_under_every_backend(name: str) -> None:
    """A 2-D point is below the numba backend's kernel size: both backends run the rule itself."""
    from descentlab.backend import numba_available, select
    from descentlab.optim import make_optimizer

    names = ["numpy", "numba"] if numba_available() else ["numpy"]
    paths = [descend(BOOK, make_optimizer(name, lr=0.1, backend=select(b)), BOOK.default_start, 30) for b in names]
    assert all(np.array_equal(path, paths[0]) for path in paths)
    assert np.linalg.norm(paths[0][-1]) < np.linalg.norm(paths[0][0])  # the path moved towards the minimum
