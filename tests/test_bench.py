"""Smoke test of scripts/bench.py: a 20-iteration run, the report's structure, and one first loss for all.

No timing assertions: the benchmark prints numbers, docs/benchmarks.md reports them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO

BENCH = REPO / "scripts" / "bench.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("descentlab_bench_script", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["descentlab_bench_script"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    tmp = tmp_path_factory.mktemp("bench")
    doc = tmp / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n\n<!-- bench:core:start -->\nold numbers\n<!-- bench:core:end -->\n\ntail\n")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--iterations", "20", "--repeats", "1", "--optimizers", "sgd,adam",
         "--eval-datasets", "none", "--json", str(tmp / "report.json"), "--write", str(doc)],
        cwd=tmp, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp / "report.json").read_text()), proc.stdout, doc


def test_flop_count_of_the_figure_6_9_network() -> None:
    flops = load_bench().matmul_flops()
    assert flops["forward"] == 2 * 128 * (784 * 100 + 3 * 100 * 100 + 100 * 10)
    assert round(flops["train"] / 1e6, 1) == 63.9
    assert round(flops["train_with_input_grad"] / 1e6, 1) == 84.0


@pytest.mark.e2e
def test_report_structure(bench_run: tuple[dict, str, Path]) -> None:
    report, stdout, _ = bench_run
    assert report["settings"]["iterations"] == 20 and report["settings"]["optimizers"] == ["sgd", "adam"]
    machine = report["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["numpy"]
    blas = [b for b in machine["blas"] if b["internal_api"] in ("openblas", "mkl", "blis")]
    assert blas and all(b["num_threads"] == 1 for b in blas)  # one BLAS thread by default
    expected = {"book_loss", "book", "core", "fit", "fit_eval", "floor", "floor64"}
    assert expected <= set(report["results"])
    for impl, cells in report["results"].items():
        for cell in cells.values():
            assert 0 < cell["min"] <= cell["median"] and cell["gflops"] > 0, impl
    assert set(report["results"]["core"]) == {"sgd", "adam"}
    assert {"book / core", "core / floor", "fit(eval_every=None) / core"} <= set(report["ratios"])
    profile = report["profile"]["adam"]
    assert profile["total"] > 0 and profile["update"] > 0 and "Affine1.forward" in profile
    # The lean loop's matmuls and kernels are timed under the layer pieces' names (wrap_lean_step).
    assert report["profile_lean"] is True
    lean_pieces = {f"Affine{k}.{m}" for k in range(1, 6) for m in ("forward", "backward")}
    lean_pieces |= {f"ReLU{k}.{m}" for k in range(1, 5) for m in ("forward", "backward")}
    assert lean_pieces | {"SoftmaxCrossEntropy.forward"} == {k for k in profile if "." in k}
    assert all(profile[k] > 0 for k in lean_pieces)
    assert "runs the fused Affine/ReLU loop" in stdout
    assert all(math.isfinite(v) for impl in report["final_loss"].values() for v in impl.values())
    assert "Seconds per 1,000 iterations" in stdout and "| descentlab core" in stdout


@pytest.mark.e2e
def test_baseline_descentlab_and_torch_start_from_the_same_loss(bench_run: tuple[dict, str, Path]) -> None:
    first = bench_run[0]["first_loss"]
    for opt in ("sgd", "adam"):
        core = first["core"][opt]
        assert 2.0 < core < 3.0  # ~ln(10) for He-initialized weights on 10 classes
        assert first["book"][opt] == pytest.approx(core, rel=1e-5)  # float64 vs float32, log(y + 1e-7) vs LSE
        assert first["fit"][opt] == pytest.approx(core, rel=1e-6)
        for impl in ("torch", "torch_fused"):
            if impl in first:
                assert first[impl][opt] == pytest.approx(core, rel=1e-5)
    torch_installed = importlib.util.find_spec("torch") is not None
    assert ("torch" in first) == torch_installed


@pytest.mark.e2e
def test_write_replaces_only_the_marked_section(bench_run: tuple[dict, str, Path]) -> None:
    text = bench_run[2].read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n<!-- bench:core:start -->\n")
    assert text.endswith("<!-- bench:core:end -->\n\ntail\n")
    assert "old numbers" not in text and text.count("<!-- bench:core:start -->") == 1
    assert "| book-style float64 |" in text


def test_book_style_net_computes_the_books_weight_decay_terms_and_casts_float32_input() -> None:
    """BookNet follows MultiLayerNet: loss adds 0.5*lambda*sum(W**2), gradient returns dW + lambda*W."""
    import numpy as np

    bench = load_bench()
    rng = np.random.default_rng(0)
    sizes = list(bench.SIZES)
    weights = {}
    for i in range(1, len(sizes)):
        weights[f"W{i}"] = (0.1 * rng.standard_normal((sizes[i - 1], sizes[i]))).astype(np.float32)
        weights[f"b{i}"] = np.zeros(sizes[i], np.float32)
    x = rng.random((8, sizes[0]), dtype=np.float32)  # float32 images, as load_mnist(normalize=True)
    t = rng.integers(0, sizes[-1], 8).astype(np.uint8)
    plain, decayed = bench.BookNet(weights), bench.BookNet(weights, weight_decay_lambda=0.1)
    loss0, grads0 = plain.gradient(x, t)
    loss1, grads1 = decayed.gradient(x, t)
    penalty = sum(0.5 * 0.1 * np.sum(np.asarray(weights[f"W{i}"], np.float64) ** 2) for i in range(1, len(sizes)))
    assert loss1 - loss0 == pytest.approx(penalty, rel=1e-9)
    for i in range(1, len(sizes)):
        assert grads0[f"W{i}"].dtype == np.float64  # the float32 input was cast by np.dot
        np.testing.assert_allclose(grads1[f"W{i}"], grads0[f"W{i}"] + 0.1 * plain.params[f"W{i}"], rtol=1e-12)
        np.testing.assert_array_equal(grads1[f"b{i}"], grads0[f"b{i}"])
    assert plain.layers["Affine1"].x.dtype == np.float32
