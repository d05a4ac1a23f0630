"""progress.Progress: a tqdm bar on a terminal that moves by fit's loss blocks; plain lines at evaluations."""

from __future__ import annotations

import io

import numpy as np

from descentlab.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_moves_by_loss_blocks_and_shows_the_last_loss() -> None:
    stream = Terminal()
    progress = Progress("run", 250, stream=stream)
    progress.losses(0, np.full(100, 2.0))
    progress.losses(100, np.array([]))
    progress.losses(100, np.linspace(1.0, 0.125, 150))
    assert progress.bar is not None and progress.bar.n == 250
    assert progress.last_loss == 0.125
    progress.close()
    assert "250/250" in stream.getvalue() and "loss=0.1250" in stream.getvalue()


def test_plain_lines_at_evaluations_quote_the_last_block() -> None:
    stream = io.StringIO()
    progress = Progress("run", 200, stream=stream)
    progress(0, {"test/acc": 0.1})
    progress.losses(0, np.array([2.5, 0.75]))
    progress(2, {"test/acc": 0.5})
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[run] step 0/200 loss - test/acc 0.1000")
    assert lines[1].startswith("[run] step 2/200 loss 0.7500 test/acc 0.5000")
    quiet = io.StringIO()
    off = Progress("run", 10, enabled=False, stream=quiet)
    off.losses(0, np.ones(3))
    off(3, {"test/acc": 1.0})
    assert quiet.getvalue() == "" and np.isnan(off.last_loss)
