"""Bad input, told in one line: which exceptions mean bad input, and how one becomes a line.

`train.py` prints such an error as one `error: ...` line and exits 2 (`cli`); a sweep's job refused for one
is recorded as a FAILED run with the same line as its `error` tag (`app`). Shared by both so the two say the same.
"""

from __future__ import annotations

import re


def one_line(exc: BaseException) -> str:
    """The exception's message and its direct cause's first line, folded onto one line."""
    text = str(exc).strip() or type(exc).__name__
    text = text.split("Config search path:")[0]  # Hydra's list of search paths says nothing about the error
    text = re.sub(r"\s*To append to your config use \S+", "", text)  # a typo is likelier than a wish to append
    text = text.split("\n    full_key:")[0]  # OmegaConf's key/type footer repeats what the message says
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        text = f"{text.rstrip('.')}: {str(cause).strip().splitlines()[0]}"
    return re.sub(r"\s+", " ", text).strip()


def input_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input (config, data, the store), not a bug: no traceback for these."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from descentlab.config import ConfigError
    from descentlab.data import DatasetNotFoundError, IdxFormatError
    from descentlab.tracking.store import TrackingUnavailableError

    return (HydraException, OmegaConfBaseException, ConfigError, DatasetNotFoundError, IdxFormatError,
            TrackingUnavailableError)


class LaunchRefused(BaseException):
    """Bad input found in the launching process by a Hydra callback, before any job starts.

    Hydra turns an `Exception` raised in a callback into a warning and launches the jobs anyway; this
    `BaseException` gets through, and `cli.guarded_main` reports `error` like any bad input.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error
