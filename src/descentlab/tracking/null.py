"""A tracker that records nothing: `tracking=none`, for dry runs and for measuring what tracking costs."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any


class NullTracker:
    """RunTracker's interface, doing nothing; `status` still ends terminal like a real run's."""

    run_id: str | None = None
    artifact_uri: str | None = None
    keeps_artifacts = False  # callers skip building files only a tracker would keep (weights, plots)

    def __init__(self) -> None:
        self.status: str | None = None

    def start(self) -> NullTracker:
        return self

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.status is None:
            self.status = "FINISHED" if exc_type is None else (
                "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")

    def finish(self, status: str = "FINISHED", error: str | None = None) -> None:
        self.status = status

    def log_params(self, params: Mapping[str, object]) -> None: ...

    def log_metric(self, key: str, value: float, step: int) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_series(self, key: str, first_step: int, values: Any) -> None: ...

    def set_tag(self, key: str, value: object) -> None: ...

    def set_tags(self, tags: Mapping[str, object]) -> None: ...

    def log_artifact(self, local_path: Any, artifact_path: str | None = None) -> None: ...

    def log_artifacts(self, local_dir: Any, artifact_path: str | None = None) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_history(self, artifact_path: str | None = None, filename: str = "metrics.csv") -> None: ...
