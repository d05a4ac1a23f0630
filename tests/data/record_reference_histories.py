"""Record the loss histories tests/test_reference_histories.py compares against, from the code on ``sys.path``.

Why: the numerics were restructured (reference rules + a backend seam); these histories, recorded from the code
before that change, pin that training still produces the same bits. Re-run to record from another tree:

    PYTHONPATH=<tree>/src python tests/data/record_reference_histories.py tests/data/reference_histories.npz

Trees with ``descentlab.backend`` choose the backend through it; older trees are run once per backend in a child
process with ``DESCENTLAB_NUMBA=0`` (numpy) or unset (numba), the switch they had.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

BACKENDS = ("numpy", "numba")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
ITERATIONS = 200
# Figure 6-8's learning rates (conf/experiment/fig6_8.yaml).
FIG6_8_LR = {"sgd": 0.95, "momentum": 0.1, "nesterov": 0.1, "adagrad": 1.5, "rmsprop": 0.1, "adam": 0.3,
             "adamw": 0.3}


def _factories(backend: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(make_optimizer, MLP) bound to ``backend`` when the tree has a backend seam, else plain."""
    from descentlab.nn import MLP
    from descentlab.optim import make_optimizer

    try:
        from descentlab.backend import select
    except ImportError:  # the tree before the seam: the environment chose the backend
        return make_optimizer, MLP
    chosen = select(backend)
    return (lambda name, **hp: make_optimizer(name, backend=chosen, **hp),
            lambda *a, **kw: MLP(*a, backend=chosen, **kw))


def histories(backend: str) -> dict[str, np.ndarray]:
    """Every recorded series for one backend, keyed ``<backend>/<run>``."""
    from descentlab.data import load_dataset
    from descentlab.objectives import BOOK, descend
    from descentlab.rng import RandomStreams
    from descentlab.training import fit

    make_optimizer, mlp = _factories(backend)
    data = load_dataset("mnist_5k")
    out: dict[str, np.ndarray] = {}

    def run(key: str, optimizer: str, **model_kw: Any) -> None:
        streams = RandomStreams.from_seed(0)
        model = mlp(data.info.n_features, [100, 100, 100, 100], data.info.n_classes, rng=streams.init,
                    dropout_rng=streams.dropout, **model_kw)
        history = fit(model, make_optimizer(optimizer), data, iterations=ITERATIONS, batch_size=128,
                      eval_every=None, rng=streams.batches, eval_train_subset=100, eval_test_subset=100)
        # fit records float64 losses; the loss of a float32 network is a float32 value, kept as such.
        dtype = np.float32 if model.dtype == np.float32 else np.float64
        out[f"{backend}/{key}"] = history.losses.astype(dtype)
        # The final weights as a SHA-256 of their bytes: equal digests mean bit-identical weights, in 32 bytes.
        out[f"{backend}/{key}/params_sha256"] = np.frombuffer(hashlib.sha256(model.params.tobytes()).digest(), np.uint8)

    for name in OPTIMIZERS:
        run(f"mlp_5x100/{name}", name)
    run("mlp_5x100/adam/float64", "adam", dtype="float64")
    run("mlp_5x100/adam/batch_norm_dropout", "adam", batch_norm=True, dropout=0.2)  # the layer path
    for name in OPTIMIZERS:
        out[f"{backend}/fig6_8/{name}"] = descend(BOOK, make_optimizer(name, lr=FIG6_8_LR[name]), (-7.0, 2.0), 30)
    return out


def record(path: str) -> None:
    """Write every backend's histories to ``path`` (an .npz)."""
    try:
        import descentlab.backend  # noqa: F401
    except ImportError:
        arrays: dict[str, np.ndarray] = {}
        for backend in BACKENDS:
            env = {k: v for k, v in os.environ.items() if k != "DESCENTLAB_NUMBA"}
            if backend == "numpy":
                env["DESCENTLAB_NUMBA"] = "0"
            part = f"{path}.{backend}.npz"
            subprocess.run([sys.executable, __file__, "--one", backend, part], check=True, env=env)
            with np.load(part) as npz:
                arrays.update({k: npz[k] for k in npz.files})
            os.remove(part)
    else:
        arrays = {k: v for backend in BACKENDS for k, v in histories(backend).items()}
    np.savez_compressed(path, **arrays)


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        np.savez(sys.argv[3], **histories(sys.argv[2]))
    else:
        record(sys.argv[1])
