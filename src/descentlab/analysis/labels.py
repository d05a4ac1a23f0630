"""Words for keys in figures: axis labels ("training loss" for `train/loss`) and group labels ("adam, lr=0.1").

Why: a reader of a figure should not have to decode `final/train_loss` or `optimizer.name`; the keys stay
as they are in tables and CSV files, where they are column names to look up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from descentlab.analysis.groups import value_text

__all__ = ["AXIS_LABELS", "axis_label", "key_label", "setting_label"]

AXIS_LABELS: dict[str, str] = {
    "optimizer.name": "optimizer",
    "optimizer.lr": "learning rate",
    "model.name": "model",
    "model.hidden_sizes": "hidden layers",
    "dataset.name": "data set",
    "training.iterations": "iterations",
    "training.batch_size": "batch size",
    "seed": "seed",
    "step": "iteration",
    "train/loss": "training loss",
    "train/acc": "training accuracy",
    "test/loss": "test loss",
    "test/acc": "test accuracy",
    "final/train_loss": "final training loss",
    "final/train_acc": "final training accuracy",
    "final/test_loss": "final test loss",
    "final/test_acc": "final test accuracy",
    "best/test_acc": "best test accuracy",
    "duration_s": "run time (s)",
    "time/elapsed_s": "training time (s)",
}
# In a group label these keys are shown by value alone ("adam", "mlp_5x100"); others as key=value.
_VALUE_ONLY = ("optimizer.name", "model.name", "dataset.name")
_SHORT = {"optimizer.lr": "lr", "training.iterations": "iterations", "model.hidden_sizes": "hidden"}


def axis_label(key: str) -> str:
    """Words for a column or metric key: `AXIS_LABELS`, else the key with its separators as spaces."""
    if key in AXIS_LABELS:
        return AXIS_LABELS[key]
    if key.startswith("steps_to_loss_"):
        return f"iterations to loss {key.removeprefix('steps_to_loss_')}"
    return key.replace("/", " ").replace("_", " ").replace(".", " ")


def key_label(key: str) -> str:
    """The short name of a param in a group label: `lr`, `iterations`, else its last dotted part."""
    return _SHORT.get(key, key.rsplit(".", 1)[-1])


def _value(key: str, value: object) -> str:
    return value_text(value)


def setting_label(items: Iterable[tuple[str, object]], name_of: Callable[[str, object], str] = _value,
                  sep: str = ", ") -> str:
    """"adam, lr=0.1, iterations=20": names (optimizer, model, data set) as `name_of(key, value)`, others
    as short key=value, joined by `sep`."""
    return sep.join(name_of(k, v) if k in _VALUE_ONLY else f"{key_label(k)}={value_text(v)}" for k, v in items)
