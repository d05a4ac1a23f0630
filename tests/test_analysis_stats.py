"""analysis.stats on hand-made frames with known values; expected numbers come from scipy or by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from descentlab.analysis.runs import AnalysisError
from descentlab.analysis.stats import (
    aggregate,
    compare_to_baseline,
    holm,
    pairwise_paired,
    performance_profile,
    performance_ratios,
    steps_to_target,
    t_interval,
)

NAN = math.nan


def make_runs(rows: list[tuple]) -> pd.DataFrame:
    """(optimizer, model, seed, outcome, final/train_loss, duration_s) rows, shaped like load_runs output."""
    frame = pd.DataFrame(rows, columns=["optimizer.name", "model.name", "seed", "outcome", "final/train_loss",
                                        "duration_s"])
    frame.insert(0, "run_id", [f"r{i}" for i in range(len(frame))])
    frame["dataset.name"] = "mnist_5k"
    return frame


RUNS = make_runs([
    ("sgd", "mlp", 0, "finished", 0.30, 10.0),
    ("sgd", "mlp", 1, "finished", 0.25, 12.0),
    ("sgd", "mlp", 2, "finished", 0.35, 14.0),
    ("sgd", "mlp", 3, "diverged", NAN, 1.0),
    ("adam", "mlp", 0, "finished", 0.10, 20.0),
    ("adam", "mlp", 1, "finished", 0.14, 21.0),
    ("adam", "mlp", 2, "finished", 0.07, 23.0),
    ("adam", "mlp", 3, "killed", NAN, 2.0),
    ("adam", "mlp", 4, "finished", 0.11, 22.0),
    ("adam", "cnn", 0, "finished", 0.50, 30.0),
    ("sgd", "cnn", 0, "failed", NAN, 3.0),
    ("sgd", "cnn", 1, "running", NAN, NAN),
])


def expected_interval(x: list[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    a = np.asarray(x)
    mean, sd = a.mean(), a.std(ddof=1)
    lo, hi = sps.t.interval(confidence, len(a) - 1, loc=mean, scale=sd / np.sqrt(len(a)))
    return mean, sd, lo, hi


# -- aggregate ------------------------------------------------------------------------------------
def test_aggregate_mean_std_and_t_interval() -> None:
    agg = aggregate(RUNS).set_index(["optimizer.name", "model.name", "metric"])
    assert list(agg.index.get_level_values("metric").unique()) == ["final/train_loss", "duration_s"]
    for (opt, model), values in {("sgd", "mlp"): [0.30, 0.25, 0.35], ("adam", "mlp"): [0.10, 0.14, 0.07, 0.11]}.items():
        row = agg.loc[(opt, model, "final/train_loss")]
        mean, sd, lo, hi = expected_interval(values)
        assert row["n"] == len(values)
        assert (row["mean"], row["std"], row["ci_low"], row["ci_high"]) == pytest.approx((mean, sd, lo, hi), rel=1e-12)
    # durations of finished runs only: the diverged run's 1 s does not count
    row = agg.loc[("sgd", "mlp", "duration_s")]
    assert (row["n"], row["mean"], row["std"]) == (3, 12.0, 2.0)


def test_aggregate_counts_partition_the_runs() -> None:
    agg = aggregate(RUNS).set_index(["optimizer.name", "model.name", "metric"])
    cols = ["runs", "finished", "diverged", "failed", "killed", "running"]
    assert list(agg.loc[("sgd", "mlp", "final/train_loss"), cols]) == [4, 3, 1, 0, 0, 0]
    assert list(agg.loc[("adam", "mlp", "duration_s"), cols]) == [5, 4, 0, 0, 1, 0]
    assert list(agg.loc[("sgd", "cnn", "final/train_loss"), cols]) == [2, 0, 0, 1, 0, 1]


def test_aggregate_single_and_empty_groups() -> None:
    agg = aggregate(RUNS).set_index(["optimizer.name", "model.name", "metric"])
    one = agg.loc[("adam", "cnn", "final/train_loss")]
    assert one["n"] == 1 and one["mean"] == 0.50
    assert math.isnan(one["std"]) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    none = agg.loc[("sgd", "cnn", "final/train_loss")]
    assert none["n"] == 0 and math.isnan(none["mean"])


def test_aggregate_confidence_all_outcomes_and_by() -> None:
    agg = aggregate(RUNS, by=["optimizer.name", "nope"], metrics=["duration_s", "absent"], confidence=0.9,
                    only_finished=False)
    assert list(agg.columns[:2]) == ["optimizer.name", "metric"] and set(agg["metric"]) == {"duration_s"}
    sgd = agg.set_index("optimizer.name").loc["sgd"]
    mean, sd, lo, hi = expected_interval([10.0, 12.0, 14.0, 1.0, 3.0], 0.9)  # NaN of the running run dropped
    assert (sgd["mean"], sgd["std"]) == pytest.approx((mean, sd), rel=1e-12)
    assert sgd["n"] == 5 and (sgd["ci_low"], sgd["ci_high"]) == pytest.approx((lo, hi), rel=1e-12)
    assert agg.attrs["confidence"] == 0.9


def test_aggregate_errors_and_missing_outcome_column() -> None:
    with pytest.raises(AnalysisError, match="none of the grouping columns a, b"):
        aggregate(RUNS, by=["a", "b"])
    with pytest.raises(AnalysisError, match="none of the metrics"):
        aggregate(RUNS, metrics=["x"])
    with pytest.raises(AnalysisError, match="confidence"):
        aggregate(RUNS, confidence=95)
    plain = pd.DataFrame({"g": ["a", "a", "b"], "m": [1.0, 3.0, 5.0]})
    agg = aggregate(plain, by=["g"], metrics=["m"]).set_index("g")
    assert list(agg["finished"]) == [2, 1] and list(agg["mean"]) == [2.0, 5.0]


def test_aggregate_keeps_missing_group_keys() -> None:
    frame = pd.DataFrame({"g": ["a", None, None], "m": [1.0, 2.0, 4.0]})
    agg = aggregate(frame, by=["g"], metrics=["m"])
    assert len(agg) == 2 and agg["mean"].tolist() == [1.0, 3.0]


def test_t_interval() -> None:
    n, *rest = t_interval([])
    assert n == 0 and all(math.isnan(v) for v in rest)
    n, mean, sd, lo, hi = t_interval([1.0, 2.0, np.inf, 3.0])
    assert (n, mean, sd) == (3, 2.0, 1.0)
    assert (lo, hi) == pytest.approx(sps.t.interval(0.95, 2, loc=2.0, scale=1 / np.sqrt(3)))


# -- steps_to_target ------------------------------------------------------------------------------
def history_of(curves: dict[str, list[float]], metric: str = "train/loss") -> pd.DataFrame:
    rows = [(rid, step, metric, v) for rid, values in curves.items() for step, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["run_id", "step", "metric", "value"])


def test_steps_to_target_raw_and_smoothed() -> None:
    history = history_of({"a": [5, 1, 5, 1, 1], "b": [5, 4, 3, 2, 1], "c": [9, 9, 9, 9, 9]})
    raw = steps_to_target(history, 2.0).set_index("run_id")
    assert raw["step"].to_dict() == {"a": 1.0, "b": 3.0, "c": pytest.approx(NAN, nan_ok=True)}
    assert raw["reached"].to_dict() == {"a": True, "b": True, "c": False}
    # trailing means over 2: a -> [-, 3, 3, 3, 1], b -> [-, 4.5, 3.5, 2.5, 1.5]
    two = steps_to_target(history, 2.0, smooth_window=2).set_index("run_id")["step"]
    assert (two["a"], two["b"]) == (4.0, 4.0)
    # over 3, target 2.5: a -> [-, -, 3.67, 2.33, 2.33]: step 3; b -> [-, -, 4, 3, 2]: step 4
    three = steps_to_target(history, 2.5, smooth_window=3).set_index("run_id")["step"]
    assert (three["a"], three["b"]) == (3.0, 4.0)
    # only full windows count: a low first point alone does not reach the target
    early = steps_to_target(history_of({"d": [1, 9, 9, 1, 1]}), 2.0, smooth_window=2)
    assert early["step"].tolist() == [4.0]


def test_steps_to_target_unsorted_other_metrics_and_params() -> None:
    history = history_of({"a": [3.0, 2.0, 1.0], "b": [0.5, 0.5, 0.5]})
    acc = history_of({"a": [0.0, 0.0, 0.0]}, metric="train/acc")
    history = pd.concat([history, acc]).sample(frac=1.0, random_state=0)  # shuffled
    history["optimizer.name"] = history["run_id"].map({"a": "sgd", "b": "adam"})
    history["noise"] = np.arange(len(history))  # varies within a run: not carried
    result = steps_to_target(history, 1.5)
    assert result.set_index("run_id")["step"].to_dict() == {"a": 2.0, "b": 0.0}
    assert "optimizer.name" in result.columns and "noise" not in result.columns
    assert result.set_index("run_id")["optimizer.name"].to_dict() == {"a": "sgd", "b": "adam"}


def test_steps_to_target_higher_is_better_and_missing_metric() -> None:
    history = pd.concat([history_of({"a": [0.1, 0.5, 0.95, 0.97]}, "test/acc"), history_of({"b": [1.0]})])
    result = steps_to_target(history, 0.9, metric="test/acc", lower_is_better=False).set_index("run_id")
    assert result.loc["a", "step"] == 2.0 and math.isnan(result.loc["b", "step"])
    with pytest.raises(AnalysisError, match="smooth_window"):
        steps_to_target(history, 1.0, smooth_window=0)
    with pytest.raises(AnalysisError, match="history lacks columns value"):
        steps_to_target(history.drop(columns="value"), 1.0)


# -- compare_to_baseline --------------------------------------------------------------------------
def welch_reference(o: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Welch–Satterthwaite interval written out, independent of scipy's confidence_interval."""
    vo, vb = o.var(ddof=1) / len(o), b.var(ddof=1) / len(b)
    df = (vo + vb) ** 2 / (vo**2 / (len(o) - 1) + vb**2 / (len(b) - 1))
    diff = o.mean() - b.mean()
    half = sps.t.ppf(0.5 + confidence / 2, df) * math.sqrt(vo + vb)
    return df, diff - half, diff + half


def test_compare_to_baseline_welch_and_paired() -> None:
    result = compare_to_baseline(RUNS, "sgd", "final/train_loss")
    row = result[(result["model.name"] == "mlp") & (result["optimizer.name"] == "adam")].iloc[0]
    adam, sgd = np.array([0.10, 0.14, 0.07, 0.11]), np.array([0.30, 0.25, 0.35])
    ref = sps.ttest_ind(adam, sgd, equal_var=False)
    df, lo, hi = welch_reference(adam, sgd)
    assert (row["n"], row["n_baseline"]) == (4, 3)
    assert row["mean"] == pytest.approx(adam.mean()) and row["mean_baseline"] == pytest.approx(0.30)
    assert row["diff"] == pytest.approx(adam.mean() - 0.30, rel=1e-12)
    assert (row["t"], row["p"], row["df"]) == pytest.approx((ref.statistic, ref.pvalue, df), rel=1e-10)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), rel=1e-10)
    # paired over the shared seeds 0, 1, 2 (adam seed 4 has no partner)
    d = np.array([0.10 - 0.30, 0.14 - 0.25, 0.07 - 0.35])
    paired = sps.ttest_rel(adam[:3], sgd)
    assert row["n_pairs"] == 3 and row["paired_diff"] == pytest.approx(d.mean())
    assert row["paired_p"] == pytest.approx(paired.pvalue, rel=1e-10)
    half = sps.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert (row["paired_ci_low"], row["paired_ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))


def test_compare_to_baseline_groups_without_enough_runs() -> None:
    result = compare_to_baseline(RUNS, "sgd", "final/train_loss")
    assert list(result["model.name"]) == ["cnn", "mlp"]
    cnn = result.set_index("model.name").loc["cnn"]
    assert (cnn["n"], cnn["n_baseline"]) == (1, 0)  # sgd on cnn failed / is running
    assert all(math.isnan(cnn[c]) for c in ("diff", "t", "p", "ci_low", "paired_diff"))


def test_compare_to_baseline_other_confidence_and_no_pairing() -> None:
    result = compare_to_baseline(RUNS, "adam", "duration_s", by=(), confidence=0.9, pair_on=None)
    assert list(result["optimizer.name"]) == ["sgd"]
    row = result.iloc[0]
    sgd, adam = np.array([10.0, 12.0, 14.0]), np.array([20.0, 21.0, 23.0, 22.0, 30.0])
    df, lo, hi = welch_reference(sgd, adam, 0.9)
    assert (row["df"], row["ci_low"], row["ci_high"]) == pytest.approx((df, lo, hi), rel=1e-10)
    assert row["n_pairs"] == 0 and math.isnan(row["paired_p"])


def test_compare_to_baseline_skips_pairing_with_several_runs_per_seed() -> None:
    runs = make_runs([("sgd", "mlp", 0, "finished", 1.0, 1.0), ("sgd", "mlp", 1, "finished", 2.0, 1.0),
                      ("adam", "mlp", 0, "finished", 0.5, 1.0), ("adam", "mlp", 0, "finished", 0.7, 1.0),
                      ("adam", "mlp", 1, "finished", 0.9, 1.0)])
    row = compare_to_baseline(runs, "sgd", "final/train_loss").iloc[0]
    assert row["n"] == 3 and row["diff"] == pytest.approx(0.7 - 1.5)
    assert row["n_pairs"] == 0 and math.isnan(row["paired_diff"])


def test_compare_to_baseline_errors() -> None:
    with pytest.raises(AnalysisError, match=r"baseline 'rmsprop' is not a value of optimizer.name; values: adam, sgd"):
        compare_to_baseline(RUNS, "rmsprop", "final/train_loss")
    with pytest.raises(AnalysisError, match="no column 'final/x'"):
        compare_to_baseline(RUNS, "sgd", "final/x")


def test_compare_to_baseline_matches_scipy_pair_by_pair_on_many_arms() -> None:
    """The vectorised statistics equal scipy's ttest_ind/ttest_rel called on each pair's runs, degenerate arms too:
    one run, constant values, no shared seed, several runs of one seed, a context without the baseline."""
    rng = np.random.default_rng(7)
    rows = []
    for model in ("mlp", "cnn"):
        for name, lrs in (("sgd", (0.1, 0.01, 0.001)), ("adam", (0.001, 0.0001)), ("rmsprop", (0.01,))):
            for lr in lrs:
                for seed in range(int(rng.integers(1, 6))):
                    rows.append((name, model, lr, seed, float(rng.normal(1.0, 0.2))))
    rows += [("adam", "mlp", 0.5, 0, 0.7), ("adam", "mlp", 0.5, 1, 0.7), ("adam", "mlp", 0.5, 2, 0.7)]  # constant
    rows += [("rmsprop", "mlp", 0.2, 9, 1.1), ("rmsprop", "mlp", 0.2, 8, 1.3)]  # no seed shared with sgd's 0..4
    rows += [("adam", "cnn", 0.3, 0, 0.9), ("adam", "cnn", 0.3, 0, 1.0), ("adam", "cnn", 0.3, 1, 1.2)]  # seed twice
    rows += [("adam", "rnn", 0.1, 0, 1.0), ("adam", "rnn", 0.1, 1, 2.0)]  # no sgd on rnn
    runs = pd.DataFrame(rows, columns=["optimizer.name", "model.name", "optimizer.lr", "seed", "final/train_loss"])
    runs["outcome"] = "finished"
    result = compare_to_baseline(runs, "sgd", "final/train_loss")
    assert len(result) == 5 * 3 + 4 * 3 + 1  # mlp: 5 arms x 3 sgd lrs, cnn: 4 x 3, rnn: 1 row without a baseline
    for r in result.to_dict("records"):
        mine = runs[(runs["model.name"] == r["model.name"]) & (runs["optimizer.name"] == r["optimizer.name"])
                    & np.isclose(runs["optimizer.lr"], r["optimizer.lr"])]
        base = runs[(runs["model.name"] == r["model.name"]) & (runs["optimizer.name"] == "sgd")
                    & np.isclose(runs["optimizer.lr"], r["baseline optimizer.lr"])]
        o, b = mine["final/train_loss"].to_numpy(), base["final/train_loss"].to_numpy()
        assert (r["n"], r["n_baseline"]) == (len(o), len(b))
        expected = dict.fromkeys(("t", "df", "p", "ci_low", "ci_high", "paired_p", "paired_ci_low"), math.nan)
        if len(o) >= 2 and len(b) >= 2:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                res = sps.ttest_ind(o, b, equal_var=False)
            ci = res.confidence_interval(0.95)
            expected.update(t=res.statistic, df=res.df, p=res.pvalue, ci_low=ci.low, ci_high=ci.high)
        if not mine["seed"].duplicated().any() and not base["seed"].duplicated().any():
            pairs = mine.merge(base, on="seed")
            assert r["n_pairs"] == len(pairs)
            if len(pairs) >= 2:
                with np.errstate(all="ignore"):
                    res = sps.ttest_rel(pairs["final/train_loss_x"], pairs["final/train_loss_y"])
                expected.update(paired_p=res.pvalue, paired_ci_low=res.confidence_interval(0.95).low)
        else:
            assert r["n_pairs"] == 0
        for key, value in expected.items():
            assert r[key] == pytest.approx(value, rel=1e-9, nan_ok=True), (key, r)


def test_compare_to_baseline_against_the_best_baseline_arm_only() -> None:
    runs = pd.DataFrame(
        [("sgd", lr, s, loss + s / 100, acc)
         for lr, loss, acc in ((0.1, 0.5, 0.90), (0.01, 0.3, 0.80), (1.0, 0.9, 0.95)) for s in range(3)]
        + [("adam", 0.001, s, 0.2 + s / 100, 0.85) for s in range(3)],
        columns=["optimizer.name", "optimizer.lr", "seed", "final/train_loss", "final/test_acc"])
    every = compare_to_baseline(runs, "sgd", "final/train_loss")
    best = compare_to_baseline(runs, "sgd", "final/train_loss", against="best")
    assert len(every) == 3 and list(best["baseline optimizer.lr"]) == [0.01]  # sgd's lowest mean loss
    pd.testing.assert_frame_equal(best.reset_index(drop=True),
                                  every[every["baseline optimizer.lr"] == 0.01].reset_index(drop=True))
    acc = compare_to_baseline(runs, "sgd", "final/test_acc", against="best", lower_is_better=False)
    assert list(acc["baseline optimizer.lr"]) == [1.0]  # sgd's highest mean accuracy
    with pytest.raises(AnalysisError, match="against must be 'every' or 'best', got 'all'"):
        compare_to_baseline(runs, "sgd", "final/train_loss", against="all")


# -- performance profile --------------------------------------------------------------------------
def profile_runs() -> pd.DataFrame:
    """P1: A=1 (mean of 0.5, 1.5), B=2, C=4.  P2: A=3, B=1.5, C diverged on one seed.  P3: only killed runs."""
    rows = [("A", "P1", 0.5, "finished"), ("A", "P1", 1.5, "finished"), ("B", "P1", 2.0, "finished"),
            ("C", "P1", 4.0, "finished"), ("A", "P2", 3.0, "finished"), ("B", "P2", 1.5, "finished"),
            ("C", "P2", 1.0, "finished"), ("C", "P2", NAN, "diverged"), ("A", "P3", 1.0, "killed")]
    return pd.DataFrame(rows, columns=["optimizer.name", "model.name", "m", "outcome"])


def test_performance_ratios_by_hand() -> None:
    ratio = performance_ratios(profile_runs(), "m")
    assert list(ratio.index) == ["P1", "P2"] and list(ratio.columns) == ["A", "B", "C"]
    np.testing.assert_array_equal(ratio.to_numpy(), [[1.0, 2.0, 4.0], [2.0, 1.0, math.inf]])


def test_performance_profile_by_hand() -> None:
    prof = performance_profile(profile_runs(), "m")
    assert list(prof.columns) == ["solver", "tau", "rho"]
    got = {(s, t): r for s, t, r in prof.itertuples(index=False)}
    assert got == {("A", 1.0): 0.5, ("A", 2.0): 1.0, ("A", 4.0): 1.0,
                   ("B", 1.0): 0.5, ("B", 2.0): 1.0, ("B", 4.0): 1.0,
                   ("C", 1.0): 0.0, ("C", 2.0): 0.0, ("C", 4.0): 0.5}
    explicit = performance_profile(profile_runs(), "m", taus=[3.0, 1.5, 10.0]).set_index(["solver", "tau"])["rho"]
    assert explicit[("A", 1.5)] == 0.5 and explicit[("C", 3.0)] == 0.0 and explicit[("C", 10.0)] == 0.5


def test_performance_profile_higher_is_better_and_missing_solver() -> None:
    runs = pd.DataFrame({"optimizer.name": ["A", "B", "A", "C"], "model.name": ["P1", "P1", "P2", "P1"],
                         "acc": [0.9, 0.6, 0.8, 0.45]})
    ratio = performance_ratios(runs, "acc", lower_is_better=False)
    # P1: best 0.9 -> A 1, B 1.5, C 2; P2: only A ran -> B and C fail it
    np.testing.assert_allclose(ratio.to_numpy(), [[1.0, 1.5, 2.0], [1.0, math.inf, math.inf]])
    prof = performance_profile(runs, "acc", lower_is_better=False).set_index(["solver", "tau"])["rho"]
    assert prof[("A", 1.0)] == 1.0 and prof[("B", 2.0)] == 0.5 and prof[("C", 1.5)] == 0.0


def test_performance_profile_needs_positive_values() -> None:
    runs = pd.DataFrame({"optimizer.name": ["A", "B"], "model.name": ["P", "P"], "f": [0.0, 1.0]})
    with pytest.raises(AnalysisError, match="positive values; f has 0"):
        performance_profile(runs, "f")


# -- Holm and pairwise paired differences ---------------------------------------------------------
def test_holm_by_hand() -> None:
    # m = 4 finite p: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06, max(1*0.04, 0.06)=0.06;
    # NaN stays NaN and does not count in m.
    adjusted = holm([0.01, 0.04, 0.03, 0.005, NAN])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02], rel=1e-12)
    assert math.isnan(adjusted[4])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1 (2*0.5, then the running max)
    assert holm([0.2]) == pytest.approx([0.2])  # one test: nothing to correct
    assert holm([]).shape == (0,) and np.isnan(holm([NAN, NAN])).all()
    with pytest.raises(AnalysisError, match="p-values must be in"):
        holm([0.1, 1.5])


def test_holm_matches_the_step_down_definition_on_random_p() -> None:
    rng = np.random.default_rng(3)
    for m in (2, 5, 17):
        p = rng.uniform(0, 0.2, m)
        order = np.argsort(p)
        expected = np.empty(m)
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p[i]))
            expected[i] = running
        assert holm(p) == pytest.approx(expected, rel=1e-12)


def paired_frame() -> pd.DataFrame:
    rows = []
    values = {"sgd": [0.90, 0.91, 0.89, 0.92], "momentum": [0.93, 0.95, 0.92, 0.94], "adam": [0.94, 0.94, 0.93, 0.96]}
    for name, accs in values.items():
        for seed, acc in enumerate(accs, start=1):
            rows.append({"optimizer.name": name, "seed": seed, "model.name": "mlp", "outcome": "finished",
                         "final/test_acc": acc})
    rows.append({"optimizer.name": "adam", "seed": 9, "model.name": "mlp", "outcome": "diverged",
                 "final/test_acc": NAN})  # never paired, never counted
    rows.append({"optimizer.name": "sgd", "seed": 5, "model.name": "mlp", "outcome": "finished",
                 "final/test_acc": 0.5})  # no partner: in n_a and mean_a, not in the pairs
    return pd.DataFrame(rows)


def test_pairwise_paired_matches_ttest_rel_and_holm() -> None:
    runs = paired_frame()
    result = pairwise_paired(runs, "final/test_acc", by=["model.name"], order=["adam", "momentum", "sgd"])
    assert list(zip(result["a"], result["b"], strict=True)) == [("adam", "momentum"), ("adam", "sgd"),
                                                                 ("momentum", "sgd")]
    acc = {n: runs[(runs["optimizer.name"] == n) & (runs["seed"] <= 4)]["final/test_acc"].to_numpy()
           for n in ("sgd", "momentum", "adam")}
    raw = []
    for _, row in result.iterrows():
        ref = sps.ttest_rel(acc[row["a"]], acc[row["b"]])
        ci = ref.confidence_interval(0.95)
        d = acc[row["a"]] - acc[row["b"]]
        assert row["n_pairs"] == 4 and row["diff"] == pytest.approx(d.mean(), rel=1e-12)
        assert (row["t"], row["p"], row["df"]) == pytest.approx((ref.statistic, ref.pvalue, 3), rel=1e-10)
        half = sps.t.ppf(0.975, 3) * d.std(ddof=1) / 2  # by hand: t quantile * sd / sqrt(4)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-10)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
        raw.append(ref.pvalue)
    assert result["p_holm"].to_numpy() == pytest.approx(holm(raw), rel=1e-12)
    sgd = result[result["a"] == "momentum"].iloc[0]
    assert sgd["n_b"] == 5 and sgd["mean_b"] == pytest.approx((0.90 + 0.91 + 0.89 + 0.92 + 0.5) / 5)


def test_pairwise_paired_untestable_pairs_and_errors() -> None:
    runs = paired_frame()
    runs.loc[runs["optimizer.name"] == "momentum", "final/test_acc"] = \
        runs.loc[runs["optimizer.name"] == "adam", "final/test_acc"].to_numpy()[:4]  # equal per seed: no spread
    result = pairwise_paired(runs, "final/test_acc", order=["adam", "momentum", "sgd"]).set_index(["a", "b"])
    same = result.loc[("adam", "momentum")]
    assert same["diff"] == 0 and math.isnan(same["p"]) and math.isnan(same["p_holm"]) and math.isnan(same["ci_low"])
    assert result["p_holm"].notna().sum() == 2  # the NaN p is not counted in Holm's m
    one = runs[runs["seed"].isin([1, 5, 9])]
    single = pairwise_paired(one, "final/test_acc")
    assert (single["n_pairs"] <= 1).all() and single["p"].isna().all()
    twice = pd.concat([runs, runs.iloc[[0]]])
    with pytest.raises(AnalysisError, match="pairing is ambiguous"):
        pairwise_paired(twice, "final/test_acc")
    with pytest.raises(AnalysisError, match="no column"):
        pairwise_paired(runs, "final/nope")
