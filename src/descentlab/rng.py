"""One seed, independent random streams: weight init, minibatch order and dropout.

Each stream is derived from the seed with its own fixed `spawn_key`, so the streams are
statistically independent and none depends on how much another was used. For a given seed
every optimizer therefore starts from the same weights and sees the same minibatches
(common random numbers), a fairer comparison than re-drawing the init per optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Fixed keys: adding a stream later must never change the numbers an existing stream yields.
STREAM_KEYS = {"init": 0, "batches": 1, "dropout": 2}


def stream(seed: int, name: str) -> np.random.Generator:
    """A fresh generator for the stream `name` ("init", "batches" or "dropout") of `seed`."""
    if name not in STREAM_KEYS:
        raise ValueError(f"unknown random stream {name!r}; allowed: {sorted(STREAM_KEYS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(STREAM_KEYS[name],))))


@dataclass(frozen=True)
class RandomStreams:
    """The three generators one run uses, all derived from `seed`."""

    seed: int
    init: np.random.Generator
    batches: np.random.Generator
    dropout: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int) -> RandomStreams:
        return cls(seed, stream(seed, "init"), stream(seed, "batches"), stream(seed, "dropout"))
