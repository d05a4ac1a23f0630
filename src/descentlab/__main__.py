"""`python -m descentlab`: the book's Figure 6-9 comparison on the embedded digits, printed as a table.

A quick check that the numerics work on this machine, with no Hydra and no tracking: for one seed,
every optimizer starts from the same weights and sees the same minibatches.
"""

from __future__ import annotations

import argparse
import sys

from descentlab.backend import BACKENDS, select
from descentlab.data import DATASET_NAMES, load_dataset
from descentlab.nn import MLP
from descentlab.optim import OPTIMIZERS, make_optimizer
from descentlab.rng import RandomStreams
from descentlab.training import DivergedError, fit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m descentlab", description=__doc__)
    parser.add_argument("--optimizers", default="sgd,momentum,adagrad,adam",
                        help=f"comma-separated, from {','.join(OPTIMIZERS)}")
    parser.add_argument("--dataset", default="mnist_5k", choices=DATASET_NAMES)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="numerics backend: numba when installed (auto), or numpy")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        parser.error(f"unknown optimizer {unknown[0]!r}; allowed: {', '.join(OPTIMIZERS)}")
    if args.iterations < 1 or args.batch_size < 1 or args.seed < 0:
        parser.error(f"need --iterations >= 1, --batch-size >= 1 and --seed >= 0, got {args.iterations}, "
                     f"{args.batch_size} and {args.seed}")
    try:
        backend = select(args.backend)
        data = load_dataset(args.dataset)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{data.info.name}: {data.info.n_train} train / {data.info.n_test} test, "
          f"MLP {data.info.n_features}-100-100-100-100-{data.info.n_classes}, batch {args.batch_size}, "
          f"{args.iterations} iterations, seed {args.seed}")
    print(f"{'optimizer':<10} {'loss (last 100)':>16} {'test acc':>9} {'seconds':>8}")
    for name in names:
        streams = RandomStreams.from_seed(args.seed)
        model = MLP(data.info.n_features, [100, 100, 100, 100], data.info.n_classes, rng=streams.init,
                    dropout_rng=streams.dropout, backend=backend)
        try:
            history = fit(model, make_optimizer(name, backend=backend), data, iterations=args.iterations,
                          batch_size=args.batch_size, rng=streams.batches)
        except DivergedError as exc:
            print(f"{name:<10} diverged at step {exc.step}")
            continue
        summary = history.summary()
        print(f"{name:<10} {summary['final/train_loss']:>16.4f} {summary['final/test_acc']:>9.3f} "
              f"{history.elapsed_s:>8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
