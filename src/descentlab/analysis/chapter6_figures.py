"""The rest of the book's chapter 6, drawn from tracked runs: weight initialisation (Figure 6-15 and the activation
histograms of Figures 6-10 to 6-14), batch normalisation (Figure 6-18) and overfitting with and without weight
decay or dropout (Figures 6-20, 6-21, 6-23).

Each study has a `*_curves`/`*_histograms` function (tracked runs and their history -> the tidy table that is
plotted, written as CSV next to the figure), a `figure_*` function (that table -> a matplotlib Figure, so tests can
count its panels and lines and compare the plotted values with the tracked ones) and a `*_summary` table.
Several seeds are averaged (the mean line, and a 95% t band when there are at least two).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from descentlab.analysis.plots import add_note, half_width, new_figure
from descentlab.analysis.smoothing import smooth_kaiser

__all__ = [
    "activation_histograms", "activation_summary", "batch_norm_curves", "batch_norm_summary", "figure_activation_grid",
    "figure_batch_norm", "figure_overfit", "figure_weight_init", "init_label", "overfit_curves",
    "overfit_summary", "weight_init_curves", "weight_init_summary",
]

ACTIVATION_ORDER = ("sigmoid", "tanh", "relu")
# The book's looks: Figure 6-15's markers per initialisation, Figure 6-18's two lines.
INIT_MARKERS = {"xavier": "s", "he": "D"}
BN_STYLE = {True: ("-", "tab:blue", "Batch Normalization"), False: ("--", "tab:green", "Normal (without BatchNorm)")}


def init_label(value: object) -> str:
    """How the book names an initialisation: `std=0.01`, `Xavier`, `He`."""
    if isinstance(value, str) and value.lower() in ("xavier", "he"):
        return {"xavier": "Xavier", "he": "He"}[value.lower()]
    return f"std={float(value):g}"  # type: ignore[arg-type]


def _init_rank(value: object) -> tuple[int, float]:
    """Fixed stds first (largest first, as the book's logspace(0, -4)), then Xavier, then He."""
    if isinstance(value, str) and value.lower() in ("xavier", "he"):
        return (1 if value.lower() == "xavier" else 2, 0.0)
    return (0, -float(value))  # type: ignore[arg-type]


def _init_labels(frame: pd.DataFrame) -> list[str]:
    """The `init` labels of a table with `weight_init` and `init` columns, in the book's order (`_init_rank`)."""
    pairs = frame.drop_duplicates("init")
    ranks = [_init_rank(_parse_init(v)) for v in pairs["weight_init"]]
    return [label for _, label in sorted(zip(ranks, pairs["init"], strict=True))]


def _mean_band(values: pd.DataFrame, by: Sequence[str], x: str, y: str) -> pd.DataFrame:
    """Per group and x: the mean of y over seeds, n and a 95% t band (NaN for n = 1)."""
    g = values.groupby([*by, x], sort=True)[y]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    half = half_width(("ci", 95), out["std"], out["n"])
    out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
    return out


# ------------------------------------------------------------------------------------------ weight_init (6-15)
def weight_init_curves(history: pd.DataFrame, runs: pd.DataFrame, metric: str = "train/loss") -> pd.DataFrame:
    """Figure 6-15's data: per run, the minibatch loss and the book's Kaiser smoothing of it.

    Columns: run_id, weight_init (the param), init (its label), seed, step, value, smoothed."""
    h = history[history["metric"] == metric]
    parts = []
    for row in runs.to_dict("records"):
        curve = h[h["run_id"] == row["run_id"]].sort_values("step")
        if curve.empty:
            continue
        init = row["model.weight_init"]
        parts.append(pd.DataFrame({"run_id": row["run_id"], "weight_init": str(init), "init": init_label(init),
                                   "seed": row["seed"], "step": curve["step"].to_numpy(),
                                   "value": curve["value"].to_numpy(),
                                   "smoothed": smooth_kaiser(curve["value"].to_numpy())}))
    if not parts:
        raise ValueError(f"no {metric!r} history for the weight_init runs")
    return pd.concat(parts, ignore_index=True)


def figure_weight_init(curves: pd.DataFrame, ylim: tuple[float, float] = (0, 2.5)) -> Figure:
    """The book's Figure 6-15: one line per initialisation (smoothed training loss; the mean over seeds, with a
    95% t band from two seeds on), markers every 100 iterations, y from 0 to 2.5."""
    fig = new_figure((6.4, 4.8))
    ax = fig.subplots()
    summary = _mean_band(curves, ["init"], "step", "smoothed")
    for label in _init_labels(curves):
        part = summary[summary["init"] == label]
        steps = part["step"].to_numpy()
        every = max(1, round(100 / max(float(np.median(np.diff(steps))) if len(steps) > 1 else 1.0, 1e-12)))
        (line,) = ax.plot(steps, part["mean"].to_numpy(), marker=INIT_MARKERS.get(label.lower(), "o"),
                          markevery=every, label=label)
        if (part["n"] > 1).any():
            ax.fill_between(steps, part["lo"], part["hi"], color=line.get_color(), alpha=0.2, lw=0)
    n = int(summary["n"].max())
    ax.set_xlabel("iterations")
    ax.set_ylabel("loss")
    ax.set_ylim(*ylim)
    ax.set_title("Kaiser-smoothed minibatch loss" + (f", mean of {n} seeds, 95% t band" if n > 1 else ""),
                 fontsize=10)
    ax.legend()
    return fig


def weight_init_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per initialisation: runs, the mean final training loss (last 100 iterations) and final test accuracy."""
    frame = runs.assign(init=runs["model.weight_init"].map(init_label),
                        rank=runs["model.weight_init"].map(_init_rank))
    out = frame.groupby(["rank", "init"], sort=True).agg(
        runs=("run_id", "size"), final_train_loss=("final/train_loss", "mean"),
        final_test_acc=("final/test_acc", "mean")).reset_index().drop(columns="rank")
    return out


def _parse_init(value: object) -> object:
    """A weight_init as the param reads: a float std, or 'xavier' / 'he'."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


# ------------------------------------------------------------------------------- activation histograms (6-10..14)
def activation_histograms(history: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The histograms `task=activations` runs logged (`layer{i}/hist`, bin b at step b), one row per bin.

    Columns: run_id, activation, weight_init, init, layer, bin, bin_lo, bin_hi, count."""
    from descentlab.tasks.activations import histogram_edges

    parts = []
    for params in runs.to_dict("records"):
        h = history[(history["run_id"] == params["run_id"]) & history["metric"].str.endswith("/hist")]
        for metric, part in h.groupby("metric", sort=False):
            part = part.sort_values("step")
            edges = histogram_edges(params["model.activation"], len(part))
            parts.append(pd.DataFrame({
                "run_id": params["run_id"], "activation": params["model.activation"],
                "weight_init": str(params["model.weight_init"]), "init": init_label(params["model.weight_init"]),
                "layer": int(str(metric).removeprefix("layer").split("/")[0]), "bin": part["step"].to_numpy(),
                "bin_lo": edges[:-1], "bin_hi": edges[1:], "count": part["value"].to_numpy()}))
    if not parts:
        raise ValueError("no layer histograms (layer{i}/hist) in the activations runs")
    return pd.concat(parts, ignore_index=True).sort_values(["run_id", "layer", "bin"], ignore_index=True)


def _activation_rows(hists: pd.DataFrame) -> list[tuple[str, str]]:
    acts = [a for a in ACTIVATION_ORDER if a in set(hists["activation"])]
    acts += sorted(set(hists["activation"]) - set(acts))
    inits = _init_labels(hists)
    present = set(zip(hists["activation"], hists["init"], strict=True))
    return [(a, i) for a in acts for i in inits if (a, i) in present]


def figure_activation_grid(hists: pd.DataFrame) -> Figure:
    """Rows: activation × initialisation; columns: hidden layers 1..L; each panel the layer's histogram over the
    activation's range (the book's Figures 6-10 to 6-14, all in one grid). One seed (the histograms' first run).

    A row shares its y axis (labels on the first panel, as the book's row). ReLU rows are clipped above the other
    bins (the book's ylim(0, 7000)); each ReLU panel names the first bin's share of the values within the plotted
    range (values above 1 are not counted, as in the book's plt.hist). 3 x ticks a panel and a fixed layout
    (no constrained layout): 60 panels then draw in about a second instead of several."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rows = _activation_rows(hists)
    layers = sorted(set(hists["layer"]))
    fig = Figure(figsize=(1.9 * len(layers) + 0.9, 1.25 * len(rows) + 0.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), len(layers), squeeze=False, sharey="row")
    for r, (act, init) in enumerate(rows):
        cell = hists[(hists["activation"] == act) & (hists["init"] == init)]
        cell = cell[cell["run_id"] == cell["run_id"].iloc[0]]
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            part = cell[cell["layer"] == layer].sort_values("bin")
            edges = np.r_[part["bin_lo"].to_numpy(), part["bin_hi"].to_numpy()[-1:]]
            ax.stairs(part["count"].to_numpy(), edges, fill=True)
            ax.set_xlim(edges[0], edges[-1])
            ax.set_xticks([edges[0], (edges[0] + edges[-1]) / 2, edges[-1]])
            ax.tick_params(labelsize=6, pad=1, length=2)
            ax.yaxis.set_major_locator(MaxNLocator(3))
            if c:
                ax.tick_params(labelleft=False)
            if r == 0:
                ax.set_title(f"{layer}-layer", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{act}\n{init}", fontsize=8)
            if act == "relu":  # the zero bin holds about half the values: clip it (the book's ylim) and say so
                counts = part["count"].to_numpy()
                ax.text(0.97, 0.9, f"[0, {edges[1]:.2g}): {counts[0] / max(counts.sum(), 1):.0%}", fontsize=6,
                        ha="right", va="top", transform=ax.transAxes)
        rest = cell.loc[cell["bin"] > 0, "count"]
        if act == "relu" and len(rest) and rest.max() > 0:
            axes[r, 0].set_ylim(0, 1.2 * rest.max())
    top = 1 - 0.55 / fig.get_figheight()
    fig.subplots_adjust(left=0.09, right=0.99, bottom=0.3 / fig.get_figheight(), top=top, hspace=0.45, wspace=0.15)
    fig.suptitle("activations at initialisation (1,000 random inputs): histogram per hidden layer", fontsize=10,
                 y=1 - 0.15 / fig.get_figheight())
    return fig


def activation_summary(history: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per activation and initialisation: each layer's std (`std L1`..), and the last layer's share at the flat
    ends (`end share`: within 0.01 of sigmoid's/tanh's bounds, or exactly 0 for ReLU) — narrow enough to print."""
    h = history[history["metric"].str.match(r"layer\d+/(std|saturated|zero)$")]
    if h.empty:
        return pd.DataFrame()
    h = h.assign(layer=h["metric"].str.extract(r"layer(\d+)/")[0].astype(int),
                 kind=h["metric"].str.split("/").str[1])
    std = h[h["kind"] == "std"].pivot_table(index="run_id", columns="layer", values="value")
    std.columns = [f"std L{c}" for c in std.columns]
    ends = h[h["kind"] != "std"]
    last = ends[ends["layer"] == ends.groupby("run_id")["layer"].transform("max")].set_index("run_id")["value"]
    keep = runs.set_index("run_id")[["model.activation", "model.weight_init"]]
    out = keep.join(std, how="inner").join(last.rename("end share (last layer)"))
    out.insert(1, "init", out["model.weight_init"].map(init_label))
    rank = out["model.activation"].map({a: i for i, a in enumerate(ACTIVATION_ORDER)}).fillna(99)
    out = out.assign(_r=rank, _i=out["model.weight_init"].map(_init_rank)).sort_values(["_r", "_i"])
    out = out.drop(columns=["_r", "_i", "model.weight_init"]).rename(columns={"model.activation": "activation"})
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------------------- batch_norm (6-18)
def _epoch_curves(history: pd.DataFrame, runs: pd.DataFrame, metrics: Sequence[str], keys: Sequence[str],
                  iterations_per_epoch: float) -> pd.DataFrame:
    """Evaluation metrics per run as a long table with the run's `keys`, seed and the epoch (step / it per epoch)."""
    h = history[history["metric"].isin(metrics)]
    cols = ["run_id", "seed", "outcome", *keys]
    out = h.merge(runs[cols], on="run_id", how="inner", validate="many_to_one")
    out["epoch"] = out["step"] / iterations_per_epoch
    return out.sort_values([*keys, "seed", "metric", "step"], ignore_index=True)


def batch_norm_curves(history: pd.DataFrame, runs: pd.DataFrame, iterations_per_epoch: float) -> pd.DataFrame:
    """Figure 6-18's data: train/acc at every evaluation of every run, with its weight scale and batch_norm flag.

    Columns: run_id, step, metric, value, seed, outcome, model.weight_init (float), model.batch_norm (bool), epoch.
    A diverged run keeps the points tracked before it diverged."""
    runs = runs.assign(**{"model.weight_init": runs["model.weight_init"].astype(float),
                          "model.batch_norm": runs["model.batch_norm"].astype(bool)})
    return _epoch_curves(history, runs, ["train/acc"], ["model.weight_init", "model.batch_norm"],
                         iterations_per_epoch)


def figure_batch_norm(curves: pd.DataFrame) -> Figure:
    """The book's Figure 6-18: one panel per initial weight scale (largest first, a near-square grid: 4×4 for 16),
    titled "W:<std>", training accuracy over epochs with batch norm (solid) and without (dashed), y from 0 to 1.
    Runs that diverged are drawn up to their last tracked point and named in the panel."""
    scales = sorted(set(curves["model.weight_init"]), reverse=True)
    ncols = math.ceil(math.sqrt(len(scales)))
    nrows = math.ceil(len(scales) / ncols)
    fig = new_figure((2.6 * ncols, 2.2 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, w in zip(axes, scales, strict=False):
        cell = curves[curves["model.weight_init"] == w]
        diverged = []
        for bn in (True, False):
            part = cell[cell["model.batch_norm"] == bn]
            if part.empty:
                continue
            mean = _mean_band(part, [], "epoch", "value")
            style, color, label = BN_STYLE[bn]
            gone = bool((part["outcome"] == "diverged").any())  # its last tracked point marked with an x
            ax.plot(mean["epoch"], mean["mean"], style, color=color, lw=1.2, label=label,
                    marker="x" if gone else None, markevery=[len(mean) - 1] if gone else None)
            if gone:
                diverged.append("BN" if bn else "no BN")
        ax.set_title(f"W:{w:.6g}", fontsize=9)
        ax.set_ylim(0, 1.0)
        if diverged:
            ax.text(0.97, 0.05, f"diverged: {', '.join(diverged)}", transform=ax.transAxes, ha="right",
                    fontsize=7, color="tab:red")
    for ax in axes[len(scales):]:
        fig.delaxes(ax)
    for ax in axes[:len(scales)]:
        ax.tick_params(labelsize=7)
    fig.supxlabel("epochs", fontsize=9)
    fig.supylabel("training accuracy", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=2, fontsize=8)
    return fig


def batch_norm_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per weight scale: final training accuracy and the mean over all evaluations (the area under the learning
    curve: "learns faster") with and without batch norm, means over seeds, and whether BN is ahead on each.
    A diverged run counts with its last tracked accuracy and is flagged."""
    last = curves.sort_values("step").groupby("run_id").agg(
        w=("model.weight_init", "first"), bn=("model.batch_norm", "first"), final=("value", "last"),
        mean=("value", "mean"), diverged=("outcome", lambda s: bool((s == "diverged").any())))
    rows = []
    for w, part in last.groupby("w", sort=False):
        with_bn, without = part[part["bn"]], part[~part["bn"]]
        row = {"weight_init": w, "final_acc_bn": with_bn["final"].mean(), "final_acc_plain": without["final"].mean(),
               "mean_acc_bn": with_bn["mean"].mean(), "mean_acc_plain": without["mean"].mean(),
               "diverged_bn": int(with_bn["diverged"].sum()), "diverged_plain": int(without["diverged"].sum()),
               "seeds": int(max(len(with_bn), len(without)))}
        row["bn_ahead_final"] = bool(row["final_acc_bn"] > row["final_acc_plain"])
        row["bn_ahead_mean"] = bool(row["mean_acc_bn"] > row["mean_acc_plain"])
        rows.append(row)
    return pd.DataFrame(rows).sort_values("weight_init", ascending=False, ignore_index=True)


# --------------------------------------------------------------------------------------- overfit (6-20/21/23)
def overfit_variant(weight_decay: float, dropout: float) -> str:
    """The name of a regularisation setting as the figure and the table show it."""
    parts = ([f"weight decay λ={weight_decay:g}"] if weight_decay else []) + (
        [f"dropout {dropout:g}"] if dropout else [])
    return ", ".join(parts) or "no regularisation"


def overfit_curves(history: pd.DataFrame, runs: pd.DataFrame, iterations_per_epoch: float) -> pd.DataFrame:
    """Train and test accuracy at every evaluation of every run, with its variant (see `overfit_variant`).

    Columns: run_id, step, metric (train/acc, test/acc), value, seed, outcome, variant, epoch."""
    runs = runs.assign(variant=[overfit_variant(float(wd), float(d))
                                for wd, d in zip(runs["model.weight_decay"], runs["model.dropout"], strict=True)])
    return _epoch_curves(history, runs, ["train/acc", "test/acc"], ["variant"], iterations_per_epoch)


def _variant_order(variants: Collection[str]) -> list[str]:
    return sorted(set(variants), key=lambda v: (v != "no regularisation", "dropout" in v, v))


def figure_overfit(curves: pd.DataFrame) -> Figure:
    """One panel per variant (none, weight decay, dropout: the book's Figures 6-20, 6-21, 6-23): train (solid,
    circles) and test (dashed, squares) accuracy over epochs, y from 0 to 1."""
    variants = _variant_order(curves["variant"])
    fig = new_figure((4.2 * len(variants), 3.6))
    axes = fig.subplots(1, len(variants), squeeze=False, sharey=True)[0]
    for ax, variant in zip(axes, variants, strict=True):
        cell = curves[curves["variant"] == variant]
        for metric, style, marker, label in (("train/acc", "-", "o", "train"), ("test/acc", "--", "s", "test")):
            mean = _mean_band(cell[cell["metric"] == metric], [], "epoch", "value")
            ax.plot(mean["epoch"], mean["mean"], style, marker=marker, markevery=max(1, len(mean) // 10), ms=4,
                    label=label)
        ax.set_title(variant, fontsize=10)
        ax.set_xlabel("epochs")
        ax.set_ylim(0, 1.0)
        ax.legend(loc="lower right")
    axes[0].set_ylabel("accuracy")
    n = int(curves.groupby("variant")["seed"].nunique().max())
    if n > 1:
        add_note(fig, f"mean of {n} seeds")
    return fig


def overfit_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per variant: the final train and test accuracy (means over seeds) and the gap between them."""
    last = curves.sort_values("step").groupby(["variant", "run_id", "metric"])["value"].last().unstack("metric")
    out = last.groupby("variant").agg(runs=("train/acc", "size"), final_train_acc=("train/acc", "mean"),
                                      final_test_acc=("test/acc", "mean")).reset_index()
    out["gap"] = out["final_train_acc"] - out["final_test_acc"]
    order = {v: i for i, v in enumerate(_variant_order(out["variant"]))}
    return out.sort_values("variant", key=lambda s: s.map(order), ignore_index=True)
