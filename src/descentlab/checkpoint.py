"""Training checkpoints: model, optimizer and dropout-generator state after k updates, in one `.npz` file.

With `training.fit(..., start_step=k)` a run continued from a checkpoint is bit-identical to one that never
stopped (tests/test_determinism.py). The file holds plain arrays and strings only and is read with
`allow_pickle=False`, so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

_MODEL, _OPT = "model/", "optimizer/"
_STEP, _DROPOUT = "meta/step", "meta/dropout_rng"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, holds pickled objects, or does not fit the model/optimizer."""


def save_checkpoint(path: str | os.PathLike[str], model: Any, optimizer: Any, step: int) -> Path:
    """Write the state after `step` updates to `path` (an `.npz`; written to a temp file, then renamed)."""
    path = Path(path)
    arrays: dict[str, Any] = {f"{_MODEL}{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"{_OPT}{k}": v for k, v in optimizer.state_dict().items()})
    arrays[_STEP] = np.int64(step)
    dropout_rng = _dropout_rng(model)
    if dropout_rng is not None:  # the PCG64 state holds 128-bit ints: JSON keeps them exact, no pickle
        arrays[_DROPOUT] = np.str_(json.dumps(dropout_rng.bit_generator.state))
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike[str], model: Any, optimizer: Any) -> int:
    """Restore model, optimizer and dropout generator from `path`; returns the step to resume from."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            state = {key: npz[key] for key in npz.files}
    except ValueError as exc:  # NumPy refuses object arrays without allow_pickle
        raise CheckpointError(f"{path}: not a plain-array checkpoint ({exc}); pickled data is never loaded") from None
    except (OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint: {exc}") from None
    if _STEP not in state:
        raise CheckpointError(f"{path}: not a descentlab checkpoint (no {_STEP!r})")
    try:
        model.load_state_dict({k[len(_MODEL):]: v for k, v in state.items() if k.startswith(_MODEL)})
        optimizer.load_state_dict({k[len(_OPT):]: v for k, v in state.items() if k.startswith(_OPT)})
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: does not fit this model/optimizer: {exc}") from None
    dropout_rng = _dropout_rng(model)
    if dropout_rng is not None:
        if _DROPOUT not in state:
            raise CheckpointError(f"{path}: the model uses dropout but the checkpoint has no dropout generator state")
        dropout_rng.bit_generator.state = json.loads(str(state[_DROPOUT]))
    return int(state[_STEP])


def _dropout_rng(model: Any) -> np.random.Generator | None:
    layers = getattr(model, "dropouts", [])
    return layers[0].rng if layers else None
