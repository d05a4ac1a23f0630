"""Progress of one run: a tqdm bar on a terminal, plain periodic lines in logs and CI."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO


class Progress:
    """A `fit` callback that shows iteration, loss and rate; `close()` when the run ends."""

    def __init__(self, name: str, total: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.name = name
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.bar = None
        self.start = time.perf_counter()
        self.last_loss = float("nan")
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=name, unit="it", file=self.stream, mininterval=0.25, leave=True)

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        if "train/loss" in metrics:
            self.last_loss = metrics["train/loss"]
            if self.bar is not None:
                self.bar.update(1)
                if step % 50 == 0:
                    self.bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)
        elif "test/acc" in metrics and self.bar is None:
            elapsed = time.perf_counter() - self.start
            rate = step / elapsed if elapsed > 0 else 0.0
            loss = "-" if self.last_loss != self.last_loss else f"{self.last_loss:.4f}"  # NaN before step 1
            print(
                f"[{self.name}] step {step}/{self.total} loss {loss} "
                f"test/acc {metrics['test/acc']:.4f} ({rate:.0f} it/s)",
                file=self.stream,
                flush=True,
            )

    def losses(self, first_step: int, losses: Sequence[float]) -> None:
        """A block of `train/loss` values (`fit`'s `loss_callback`): the bar moves by the block."""
        if not self.enabled or len(losses) == 0:
            return
        self.last_loss = float(losses[-1])
        if self.bar is not None:
            self.bar.update(len(losses))
            self.bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
