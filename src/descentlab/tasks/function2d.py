"""`task=function2d`: run the optimizer on a 2-D objective from a start point (the book's Figure 6-8), in float64,
and draw its path over the objective's contours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from descentlab.config.settings import Function2dSettings, JobSettings
from descentlab.tasks import select_backend


class Function2dTask:
    """A descent of `task.steps` steps on `task.objective`; path/x, path/y, path/f at every step (0: the start)."""

    def __init__(self, settings: JobSettings) -> None:
        from descentlab.objectives import get_objective

        assert isinstance(settings.task, Function2dSettings)
        self.settings = settings
        self.task: Function2dSettings = settings.task
        self.error: str | None = None
        self.objective = get_objective(self.task.objective)
        self.backend = select_backend(settings.numerics.backend)
        self.path: np.ndarray | None = None  # the descent's points once it stayed finite
        self.values: np.ndarray | None = None

    def tags(self) -> dict[str, str]:
        return {"objective": self.objective.name}

    def execute(self, tracker: Any, name: str) -> str:
        """Descend and log the path; FINISHED, or FAILED if it left the finite numbers."""
        from descentlab.objectives import descend
        from descentlab.optim import make_optimizer

        opt = self.settings.optimizer
        optimizer = make_optimizer(opt.name, backend=self.backend, **opt.hyperparams)
        with np.errstate(over="ignore", invalid="ignore"):
            path = descend(self.objective, optimizer, np.array(self.task.start, dtype=np.float64), self.task.steps)
            values = np.asarray(self.objective.value(path), dtype=np.float64)
        finite = np.isfinite(path).all(axis=1) & np.isfinite(values)
        last = len(path) if finite.all() else int(np.argmin(finite))
        for step in range(last):
            tracker.log_metrics({"path/x": float(path[step, 0]), "path/y": float(path[step, 1]),
                                 "path/f": float(values[step])}, step)
        if last < len(path):
            tracker.set_tag("diverged_at_step", str(last))
            self.error = f"DivergedError: the path left the finite numbers at step {last}"
            return "FAILED"
        self.path, self.values = path, values
        return "FINISHED"

    def log_results(self, tracker: Any, tmp: Path, name: str) -> None:
        """After a finite descent: the final value and distance to the minimum, and the path plot."""
        from descentlab.tasks.plots import path_png

        if self.path is None or self.values is None:
            return
        distance = float(np.hypot(*(self.path[-1] - np.asarray(self.objective.minimum))))
        tracker.log_metrics({"final/f": float(self.values[-1]), "final/distance_to_min": distance}, self.task.steps)
        if tracker.keeps_artifacts:
            tracker.log_artifact(str(path_png(self.objective, self.path, name, tmp / "path.png")))
