"""The per-run loss-curve PNG: what the figure shows, and that drawing over kept pixels gives a full draw's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from descentlab.tasks import plots as run_plots


def _run(seed: int, n: int = 400, scale: float = 1.0) -> tuple[np.ndarray, list[dict[str, float]]]:
    rng = np.random.default_rng(seed)
    losses = scale * (2.3 * np.exp(-np.linspace(0, 4, n)) + 0.05 * rng.random(n))
    evals = [{"step": s, "test/loss": float(scale * 2.3 / (1 + s / 50))} for s in range(0, n, 100)] + [
        {"step": n - 1, "test/loss": float(scale * 0.2)}]
    return losses, evals


def _full_draw(figure: run_plots._LossFigure) -> np.ndarray:
    """The figure as a plain draw of every artist renders it."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba()).copy()


def test_a_run_drawn_over_kept_pixels_looks_exactly_like_a_full_draw(tmp_path: Path) -> None:
    figure = run_plots._LossFigure()
    first, second = _run(0), _run(1)
    figure.save(*first, "sgd-s0", tmp_path / "a.png")  # draws the background
    assert len(figure.backgrounds) == 1
    figure.save(*second, "adam-s1", tmp_path / "b.png")  # same limits: restores it
    assert len(figure.backgrounds) == 1
    saved = np.asarray(Image.open(tmp_path / "b.png"))
    assert saved.shape == (360, 600, 4)
    np.testing.assert_array_equal(saved, _full_draw(figure))
    figure.save(*first, "sgd-s0", tmp_path / "a2.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a2.png")), _full_draw(figure))
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), saved)  # the runs differ


def test_a_curve_across_the_kept_legend_is_drawn_over_it_as_in_a_full_draw(tmp_path: Path) -> None:
    """The legend is part of the kept pixels: a full draw must draw it under the curves too."""
    figure = run_plots._LossFigure()
    losses, evals = _run(3)
    figure.save(losses, evals, "sgd-s3", tmp_path / "a.png")
    losses[320:380] = 6.0  # near 10 (the top): through the legend's box in the upper right, same limits
    figure.save(losses, evals, "sgd-s3", tmp_path / "b.png")
    assert len(figure.backgrounds) == 1
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), _full_draw(figure))
    renderer = figure.canvas.get_renderer()
    box = figure.ax.get_legend().get_window_extent(renderer)
    curve = figure.ax.transData.transform(np.column_stack([np.arange(320, 380), losses[320:380]]))
    assert ((curve[:, 0] > box.x0) & (curve[:, 0] < box.x1) & (curve[:, 1] > box.y0) & (curve[:, 1] < box.y1)).any()


def test_the_figure_holds_the_run_and_axes_that_enclose_it(tmp_path: Path) -> None:
    figure = run_plots._LossFigure()
    losses, evals = _run(2, n=1000, scale=30.0)
    losses[10] = np.nan  # a gap, not a failure
    figure.save(losses, evals, "momentum-s2", tmp_path / "c.png")
    x, y = figure.train.get_data()
    np.testing.assert_array_equal(x, np.arange(1000))
    np.testing.assert_array_equal(y, losses)
    assert list(figure.test.get_xdata()) == [e["step"] for e in evals] and figure.test.get_visible()
    assert figure.title.get_text() == "momentum-s2"
    assert figure.ax.get_xlim() == pytest.approx((-49.95, 1048.95))
    low, high = figure.ax.get_ylim()
    assert (low, high) == pytest.approx((1.0, 100.0))  # whole decades around 1.3 ... 70
    assert low <= np.nanmin(losses) and np.nanmax(losses) <= high
    figure.save(losses[:50], [], "no-evals", tmp_path / "d.png")
    assert not figure.test.get_visible()
    assert len(figure.backgrounds) == 2  # other limits: a second background


@pytest.mark.parametrize(("values", "limits"), [
    ([[0.5, 2.0]], (0.1, 10.0)),
    ([[1.0]], (1.0, 10.0)),  # one exact power of ten still spans a decade
    ([[1e-4, np.inf, np.nan, 0.0, -1.0], [3e-2]], (1e-4, 0.1)),  # only positive finite values count
    ([[np.nan, 0.0]], (1e-3, 10.0)),
])
def test_decade_limits(values: list[list[float]], limits: tuple[float, float]) -> None:
    assert run_plots._decade_limits(values) == pytest.approx(limits)


def test_a_run_without_points_still_gets_a_valid_figure(tmp_path: Path) -> None:
    figure = run_plots._LossFigure()
    figure.save(np.array([]), [], "empty", tmp_path / "empty.png")
    low, high = figure.ax.get_xlim()
    assert low < 0 < high
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_kept_backgrounds_are_bounded(tmp_path: Path) -> None:
    figure = run_plots._LossFigure()
    for n in range(2, 2 + figure.MAX_BACKGROUNDS + 3):
        figure.save(np.ones(n), [], "r", tmp_path / "e.png")  # each run length: other x limits
    assert 1 <= len(figure.backgrounds) <= figure.MAX_BACKGROUNDS


def test_loss_curve_png_writes_a_png(tmp_path: Path) -> None:
    out = run_plots.loss_curve_png(*_run(3), "adagrad-s3", tmp_path / "loss_curve.png")
    assert out == tmp_path / "loss_curve.png"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (600, 360)
