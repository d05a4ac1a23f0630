"""One module per `conf/task/` option: what a job computes, with its own tags, metrics and per-run plot.

A task is built from typed settings (`config.settings.JobSettings`), never a DictConfig. Building it loads what
it needs (the data set) and may raise a bad-input error: the app builds it before any run exists. Then
`execute(tracker, name)` runs it into the tracker and returns FINISHED or FAILED, and `log_results(tracker, tmp,
name)` logs what only a completed run has (summary metrics, weights, the plot).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from descentlab.config.settings import JobSettings


class Task(Protocol):
    error: str | None  # why a run ended FAILED (its `error` tag), set by execute

    def tags(self) -> dict[str, str]: ...

    def execute(self, tracker: Any, name: str) -> str: ...

    def log_results(self, tracker: Any, tmp: Path, name: str) -> None: ...


def select_backend(name: str) -> Any:
    """The numerics backend `numerics.backend` names, chosen once per task; numba asked for but not installed is
    a bad-input error found while the job is set up, before any run exists."""
    from descentlab.backend import select
    from descentlab.config.checks import ConfigError

    try:
        return select(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def make_task(settings: JobSettings) -> Task:
    """The task of `settings.task.name` (`classify`, `function2d` or `activations`, validated before), imported on
    demand: a job loads only its own task's code."""
    import importlib

    module, cls = _TASKS[settings.task.name]
    return getattr(importlib.import_module(f"descentlab.tasks.{module}"), cls)(settings)


_TASKS: dict[str, tuple[str, str]] = {
    "classify": ("classify", "ClassifyTask"),
    "function2d": ("function2d", "Function2dTask"),
    "activations": ("activations", "ActivationsTask"),
}
