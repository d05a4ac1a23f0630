"""Analysis figures: checked through the matplotlib objects they hold (axes, lines, bands, labels), not pixels."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.contour import ContourSet
from scipy import stats

from descentlab.analysis.book_figures import figure_6_8, figure_6_9, figure_6_9_ours
from descentlab.analysis.plots import (
    OPTIMIZER_COLORS,
    add_note,
    auto_logy,
    curve_summary,
    final_metric_points,
    loss_curves,
    lr_sensitivity,
    optimizer_style,
    performance_profile_plot,
    save_figure,
)
from descentlab.analysis.smoothing import ema, smooth_kaiser

STEPS = 300
SEEDS = (0, 1, 2)
SPREAD = 0.05  # seed s adds (s - 1) * SPREAD: the mean over seeds is exactly the base curve, the SD exactly SPREAD
T_HALF = stats.t.ppf(0.975, 2) * SPREAD / np.sqrt(3)


def base_curve(optimizer: str, steps: np.ndarray) -> np.ndarray:
    rate = {"sgd": 100.0, "adam": 30.0}[optimizer]
    return 0.2 + 0.7 * np.exp(-steps / rate) + 0.01 * np.sin(steps)  # a wiggle so smoothing matters


def make_frames(optimizers=("sgd", "adam"), models=("mlp_5x100",), lrs=(0.01,)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`runs` and `history` as analysis.runs builds them, with known means over seeds."""
    steps = np.arange(STEPS)
    runs, history = [], []
    for opt in optimizers:
        for model in models:
            for lr in lrs:
                for seed in SEEDS:
                    run_id = f"{opt}-{model}-{lr}-s{seed}"
                    loss = base_curve(opt, steps) + (seed - 1) * SPREAD + lr
                    runs.append({
                        "run_id": run_id, "status": "FINISHED", "outcome": "finished", "optimizer.name": opt,
                        "optimizer.lr": lr, "model.name": model, "dataset.name": "mnist_5k", "seed": seed,
                        "final/train_loss": float(loss[-100:].mean()), "final/test_acc": 0.9, "duration_s": 1.0,
                    })
                    history.append(pd.DataFrame({"run_id": run_id, "step": steps, "metric": "train/loss",
                                                 "value": loss}))
                    history.append(pd.DataFrame({"run_id": run_id, "step": steps[::100], "metric": "test/acc",
                                                 "value": 0.5 + 0.001 * steps[::100]}))
    return pd.DataFrame(runs), pd.concat(history, ignore_index=True)


def bands(ax) -> list[PolyCollection]:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def data_lines(ax) -> list:
    return [line for line in ax.lines if len(line.get_xdata()) > 1]


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_frames()


# ---------------------------------------------------------------------------------------------- smoothing


def test_smooth_kaiser_keeps_length_and_matches_a_hand_computed_window():
    w = np.kaiser(11, 2)
    w = w / w.sum()
    for n in (11, 12, 57, 300):
        assert len(smooth_kaiser(np.random.default_rng(n).random(n))) == n

    x = np.arange(15.0)
    y = smooth_kaiser(x)
    # Interior of a straight line: a symmetric window returns it unchanged.
    np.testing.assert_allclose(y[5:10], x[5:10])
    # First point: the book mirrors x[1..5] to the left, so the window sees |d| for d = -5..5.
    assert y[0] == pytest.approx(sum(w[d + 5] * abs(d) for d in range(-5, 6)))
    # Last point: the book's right mirror repeats the end: x[14], x[13], ... = 14, 13, ..., 10.
    right = [14 + d if d <= 0 else 15 - d for d in range(-5, 6)]
    assert y[-1] == pytest.approx(float(np.dot(w, right)))
    # An impulse comes back as the window itself.
    impulse = np.zeros(21)
    impulse[10] = 1.0
    np.testing.assert_allclose(smooth_kaiser(impulse)[5:16], w)


def test_smooth_kaiser_short_input_and_bad_window():
    assert len(smooth_kaiser(np.array([1.0, 2.0, 4.0, 8.0]))) == 4
    np.testing.assert_array_equal(smooth_kaiser(np.array([3.0])), [3.0])
    with pytest.raises(ValueError, match="odd"):
        smooth_kaiser(np.arange(20.0), window=10)


def test_ema_values():
    np.testing.assert_allclose(ema(np.array([0.0, 1.0, 1.0]), 0.5), [0.0, 0.5, 0.75])
    np.testing.assert_allclose(ema(np.array([2.0, 4.0]), 1.0), [2.0, 4.0])
    with pytest.raises(ValueError, match="alpha"):
        ema(np.array([1.0]), 0.0)


# -------------------------------------------------------------------------------------------- loss curves


def test_loss_curves_mean_and_t_band_per_optimizer(frames):
    runs, history = frames
    fig = loss_curves(history, runs)
    assert len(fig.axes) == 1  # model.name and dataset.name have one value each: no facets
    ax = fig.axes[0]
    lines = data_lines(ax)
    assert [line.get_label() for line in lines] == ["SGD", "Adam"]  # the book's order and names
    assert len(bands(ax)) == 2
    steps = np.arange(STEPS)
    for line, opt in zip(lines, ("sgd", "adam"), strict=True):
        np.testing.assert_array_equal(line.get_xdata(), steps)
        np.testing.assert_allclose(line.get_ydata(), base_curve(opt, steps) + 0.01, atol=1e-12)
        assert to_hex(line.get_color()) == OPTIMIZER_COLORS[opt]
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "training loss"  # words, not keys

    summary = curve_summary(history, runs)
    np.testing.assert_allclose(summary["hi"] - summary["mean"], T_HALF, rtol=1e-9)
    assert set(summary["n"]) == {3}


def test_loss_curves_thinning_smoothing_and_log_scale(frames):
    runs, history = frames
    fig = loss_curves(history, runs, every=50, smooth="kaiser", logy=True)
    ax = fig.axes[0]
    sgd = data_lines(ax)[0]
    np.testing.assert_array_equal(sgd.get_xdata(), [0, 50, 100, 150, 200, 250, 299])  # the last step kept
    smoothed = smooth_kaiser(base_curve("sgd", np.arange(STEPS)) + 0.01)  # smoothing is linear: mean of smooths
    np.testing.assert_allclose(sgd.get_ydata(), smoothed[[0, 50, 100, 150, 200, 250, 299]], atol=1e-12)
    assert ax.get_yscale() == "log"

    ema_line = data_lines(loss_curves(history, runs, smooth="ema").axes[0])[0]
    np.testing.assert_allclose(ema_line.get_ydata(), ema(base_curve("sgd", np.arange(STEPS)) + 0.01, 0.1))


def test_loss_curves_facets_when_model_varies():
    runs, history = make_frames(models=("mlp_5x100", "mlp_2x50"))
    fig = loss_curves(history, runs, metric="test/acc")
    assert len(fig.axes) == 2  # one column per model, no row facet (one data set)
    assert sorted(ax.get_title() for ax in fig.axes) == ["model: mlp_2x50", "model: mlp_5x100"]
    for ax in fig.axes:
        assert len(data_lines(ax)) == 2
        assert len(bands(ax)) == 2
        np.testing.assert_array_equal(data_lines(ax)[0].get_xdata(), [0, 100, 200])

    with pytest.warns(UserWarning, match="same seed"):  # two models pooled into one curve
        one_facet = loss_curves(history, runs, col=None)
    assert len(one_facet.axes) == 1


def test_loss_curves_leave_out_unfinished_runs_with_a_note(frames):
    runs, history = frames
    runs = runs.copy()
    runs.loc[runs["run_id"] == "adam-mlp_5x100-0.01-s2", "outcome"] = "diverged"
    fig = loss_curves(history, runs)
    adam = data_lines(fig.axes[0])[1]
    expected = base_curve("adam", np.arange(STEPS)) + 0.01 - SPREAD / 2  # mean of seeds 0 and 1
    np.testing.assert_allclose(adam.get_ydata(), expected, atol=1e-12)
    assert any("1 diverged (adam)" in t.get_text() for t in fig.texts)


def test_loss_curves_warn_when_seeds_repeat_within_a_curve():
    runs, history = make_frames(lrs=(0.01, 0.1))
    with pytest.warns(UserWarning, match="same seed"):
        loss_curves(history, runs)


# -------------------------------------------------------------------------------------- summary figures


def _point_means(ax) -> dict[str, float]:
    """Per pointplot marker line: the finite y values (seaborn draws one marker line per hue level)."""
    out = {}
    for line in ax.lines:
        if line.get_marker() not in (None, "None", ""):
            y = np.asarray(line.get_ydata(), dtype=float)
            out[line.get_marker()] = y[np.isfinite(y)]
    return out


def test_final_metric_points_mean_ci_and_unfinished_runs(frames):
    runs, _ = frames
    runs = runs.copy()
    runs.loc[runs["run_id"] == "sgd-mlp_5x100-0.01-s0", "outcome"] = "failed"
    fig = final_metric_points(runs)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    means = _point_means(ax)  # markers are the optimizers' own: SGD 'o', Adam 'D'
    finished = runs[runs["outcome"] == "finished"]
    for marker, opt in (("o", "sgd"), ("D", "adam")):
        expected = finished.loc[finished["optimizer.name"] == opt, "final/train_loss"].mean()
        np.testing.assert_allclose(means[marker], [expected])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["SGD", "Adam"]
    assert any(c.get_label() == "not finished (left out)" for c in ax.collections)
    assert any("1 failed (sgd)" in t.get_text() for t in fig.texts)


def test_lr_sensitivity_needs_several_learning_rates(frames):
    runs, _ = frames
    with pytest.raises(ValueError, match=r"more than one optimizer\.lr"):
        lr_sensitivity(runs)

    many, _ = make_frames(lrs=(0.001, 0.01, 0.1))
    fig = lr_sensitivity(many)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "learning rate" and ax.get_ylabel() == "final training loss"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["SGD", "Adam"]


def test_performance_profile_steps_per_solver():
    profile = pd.DataFrame({"solver": ["adam"] * 3 + ["sgd"] * 3, "tau": [1, 2, 4, 1, 3, 8],
                            "rho": [0.5, 0.75, 1.0, 0.5, 0.75, 0.75]})
    ax = performance_profile_plot(profile).axes[0]
    lines = data_lines(ax)
    assert [line.get_label() for line in lines] == ["SGD", "Adam"]
    assert ax.get_ylim() == (0, 1.02)
    assert all(line.get_drawstyle() == "steps-post" for line in lines)
    assert lines[0].get_xdata()[-1] == lines[1].get_xdata()[-1]  # both run to the right edge


# ------------------------------------------------------------------------------------------ book figures


def book_paths(n: int = 4) -> dict[str, np.ndarray]:
    names = ["SGD", "Momentum", "AdaGrad", "Adam", "rmsprop", "nesterov"][:n]
    t = np.linspace(0, 1, 31)[:, None]
    return {name: (1 - t) * np.array([-7.0, 2.0]) * (0.5 + 0.1 * i) for i, name in enumerate(names)}


def test_figure_6_8_panels():
    fig = figure_6_8(book_paths())
    assert len(fig.axes) == 4
    for ax, name in zip(fig.axes, ["SGD", "Momentum", "AdaGrad", "Adam"], strict=True):
        assert ax.get_title() == name
        assert ax.get_xlim() == (-10, 10) and ax.get_ylim() == (-10, 10)
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y")
        red = [line for line in ax.lines if to_hex(line.get_color()) == "#ff0000"]
        assert len(red) == 1 and len(red[0].get_xdata()) == 31 and red[0].get_marker() == "o"
        assert red[0].get_xdata()[0] == pytest.approx(-7 * (0.5 + 0.1 * fig.axes.index(ax)))
        assert any(line.get_marker() == "+" and list(line.get_xdata()) == [0] for line in ax.lines)
        contours = [c for c in ax.collections if isinstance(c, ContourSet)]
        assert len(contours) == 1 and max(contours[0].levels) <= 7  # values above 7 masked

    assert len(figure_6_8(book_paths(3)).axes) == 3
    assert len(figure_6_8(book_paths(6)).axes) == 6
    with pytest.raises(ValueError, match="shape"):
        figure_6_8({"sgd": np.zeros((31, 3))})


def test_figure_6_9_the_books_look(frames):
    runs, history = frames
    fig = figure_6_9(history, runs)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_ylim() == (0, 1)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("iterations", "loss")
    lines = data_lines(ax)
    assert [line.get_marker() for line in lines] == ["o", "D"]  # SGD 'o', Adam 'D' as in the book
    assert all(line.get_markevery() == 100 for line in lines)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SGD", "Adam"]
    seed0 = base_curve("sgd", np.arange(STEPS)) + 0.01 - SPREAD  # the smallest seed by default
    np.testing.assert_allclose(lines[0].get_ydata(), smooth_kaiser(seed0), atol=1e-12)
    assert to_hex(lines[0].get_color()) == optimizer_style("sgd").color

    seed2 = data_lines(figure_6_9(history, runs, seed=2).axes[0])[0]
    np.testing.assert_allclose(seed2.get_ydata(), smooth_kaiser(seed0 + 2 * SPREAD), atol=1e-12)
    with pytest.raises(ValueError, match="seed 7"):
        figure_6_9(history, runs, seed=7)


def test_figure_6_9_refuses_pooled_runs():
    runs, history = make_frames(models=("mlp_5x100", "mlp_2x50"))
    with pytest.raises(ValueError, match=r"model\.name"):
        figure_6_9(history, runs)
    with pytest.raises(ValueError, match=r"model\.name"):
        figure_6_9_ours(history, runs)


def test_figure_6_9_ours_mean_over_seeds_with_band(frames):
    runs, history = frames
    fig = figure_6_9_ours(history, runs)
    ax = fig.axes[0]
    assert ax.get_ylim() == (0, 1) and ax.get_xlabel() == "iterations"
    assert "3 seeds" in ax.get_title()
    assert len(data_lines(ax)) == 2 and len(bands(ax)) == 2
    expected = smooth_kaiser(base_curve("adam", np.arange(STEPS)) + 0.01)
    np.testing.assert_allclose(data_lines(ax)[1].get_ydata(), expected, atol=1e-12)


# ------------------------------------------------------------------------------------------------ saving


def test_save_figure_writes_png_and_pdf(tmp_path, frames):
    runs, history = frames
    paths = save_figure(figure_6_9(history, runs), tmp_path / "figs", "fig6_9")
    assert [p.name for p in paths] == ["fig6_9.png", "fig6_9.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match="file stem"):
        save_figure(figure_6_8(book_paths(1)), tmp_path, "a/b")


# ------------------------------------------------------------------------- readable figures, no pooling


def _boxes(fig):
    """Window extents of the figure's legends, axes and titles after a draw."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [leg.get_window_extent(renderer) for leg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
               if leg is not None]
    axes = [ax.get_window_extent(renderer) for ax in fig.axes]
    titles = [t.get_window_extent(renderer) for t in [fig._suptitle, *(ax.title for ax in fig.axes)]
              if t is not None and t.get_text()]
    return legends, axes, titles


FIGURES = ("loss_curves", "loss_curves_by_setting", "final_metric_points", "lr_sensitivity", "performance_profile")


def _figure(name: str):
    runs, history = make_frames(lrs=(0.001, 0.01, 0.1))
    profile = pd.DataFrame({"solver": ["adam"] * 2 + ["sgd"] * 2, "tau": [1, 2, 1, 3], "rho": [0.5, 1.0, 0.5, 1.0]})
    figures = {
        "loss_curves": lambda: loss_curves(history, runs[runs["optimizer.lr"] == 0.01], smooth="kaiser"),
        "loss_curves_by_setting": lambda: loss_curves(history, runs, hue=["optimizer.name", "optimizer.lr"]),
        "final_metric_points": lambda: final_metric_points(runs, hue="optimizer.lr"),
        "lr_sensitivity": lambda: lr_sensitivity(runs),
        "performance_profile": lambda: performance_profile_plot(profile),
    }
    return figures[name]()


@pytest.mark.parametrize("name", FIGURES)
def test_legends_cover_neither_titles_nor_data(name):
    legends, axes, titles = _boxes(_figure(name))
    assert legends
    for legend in legends:
        assert not any(legend.overlaps(box) for box in axes), "legend over the data"
        assert not any(legend.overlaps(box) for box in titles), "legend over the title"


@pytest.mark.parametrize("name", FIGURES)
def test_axis_labels_are_words(name):
    for ax in _figure(name).axes:
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            assert label and not any(ch in label for ch in "/_") and "optimizer.name" not in label, label


def test_axis_labels_name_the_keys():
    runs, _ = make_frames()
    ax = final_metric_points(runs).axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("optimizer", "final training loss")


def test_log_scale_when_values_span_more_than_two_decades():
    runs, history = make_frames()
    assert loss_curves(history, runs).axes[0].get_yscale() == "linear"  # 0.2 .. 1: one decade at most
    steep = history.copy()
    adam = steep["run_id"].str.startswith("adam") & (steep["metric"] == "train/loss")
    steep.loc[adam, "value"] = 2.0 * np.exp(-steep.loc[adam, "step"] / 30.0) + 1e-4  # 2 -> 1e-4: four decades
    assert loss_curves(history=steep, runs=runs).axes[0].get_yscale() == "log"
    assert loss_curves(history=steep, runs=runs, logy=False).axes[0].get_yscale() == "linear"
    assert loss_curves(history, runs, logy=True).axes[0].get_yscale() == "log"
    assert auto_logy([1.0, 99.0]) is False and auto_logy([1.0, 101.0]) is True
    assert auto_logy([-1.0, 1000.0]) is False  # not all positive: a log axis would hide values
    tiny = runs.assign(**{"final/train_loss": np.where(runs["optimizer.name"] == "adam", 1e-4, 0.3)})
    assert final_metric_points(tiny).axes[0].get_yscale() == "log"


def test_a_hue_of_several_columns_is_one_curve_per_setting():
    runs, history = make_frames(lrs=(0.01, 0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing pooled: no "same seed" warning
        fig = loss_curves(history, runs, hue=["optimizer.name", "optimizer.lr"])
    ax = fig.axes[0]
    lines = data_lines(ax)
    assert [line.get_label() for line in lines] == ["SGD, lr=0.01", "SGD, lr=0.1", "Adam, lr=0.01", "Adam, lr=0.1"]
    assert len({to_hex(line.get_color()) for line in lines}) == 4  # two settings per optimizer: a palette
    for line, (opt, lr) in zip(lines, [("sgd", 0.01), ("sgd", 0.1), ("adam", 0.01), ("adam", 0.1)], strict=True):
        np.testing.assert_allclose(line.get_ydata(), base_curve(opt, np.arange(STEPS)) + lr, atol=1e-12)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [line.get_label() for line in lines]
    assert fig.legends[0].get_title().get_text() == "optimizer, learning rate"

    points = final_metric_points(runs, x=["optimizer.name", "optimizer.lr"], hue=None).axes[0]
    assert [t.get_text() for t in points.get_xticklabels()] == ["SGD\nlr=0.01", "SGD\nlr=0.1", "Adam\nlr=0.01",
                                                                "Adam\nlr=0.1"]


def test_notes_stack_under_the_figure():
    runs, history = make_frames()
    fig = loss_curves(history, runs)
    add_note(fig, "pooled over optimizer.lr (0.01, 0.1)")
    add_note(fig, "second note")
    notes = [t for t in fig.texts if "pooled" in t.get_text()]
    assert len(notes) == 1 and notes[0].get_text() == "pooled over optimizer.lr (0.01, 0.1)\nsecond note"
    fig.canvas.draw()
    note_box = notes[0].get_window_extent(fig.canvas.get_renderer())
    assert all(not note_box.overlaps(ax.get_window_extent()) for ax in fig.axes)
