"""A process's start-up: the cyclic garbage collector paused while modules load, then their objects frozen.

Why: a tracked job imports mlflow, SQLAlchemy, pandas, numba and matplotlib: ~400k objects that live until the
process exits. While they load, every full collection scans all of them again; measured here, the collector
took 0.3–0.5 s of a tracked run's ~3.2 s to its first step. So the collector is paused from the
entry point (`pause`) until the first job starts its work (`resume`), which freezes what is alive then
(`gc.freeze`: never scanned again) and turns collection back on, so a job's own cyclic garbage is still
collected. After the first job, `after_first_job` freezes once more what that job loaded lazily: joblib's loky
workers call `gc.collect()` after every task (~160 ms a call unfrozen, ~1 ms frozen).
"""

from __future__ import annotations

import gc

_paused = False  # this module turned the collector off and has not turned it back on
_first_job_done = False


def pause() -> None:
    """Turn cyclic collection off until `resume`, unless this process has already run a job."""
    global _paused
    if not _first_job_done and gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze what is alive and turn collection back on, if `pause` turned it off; later calls do nothing."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def after_first_job() -> None:
    """Once per process, after its first job: resume, and freeze what that job loaded (modules, caches)."""
    global _first_job_done
    resume()
    if not _first_job_done:
        _first_job_done = True
        gc.freeze()
