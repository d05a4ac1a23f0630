"""Every use of a library's private API, in one place (issue 16).

Each function here reaches into an internal of hydra, joblib/loky, mlflow or CPython that has no public
equivalent, says why, and has a test in tests/test_compat.py that fails when the library changes under it.
Nothing outside this module may touch a private attribute of those libraries.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------------------------- hydra

# ------------------------------------------------------------------------------------------ joblib/loky

# ---------------------------------------------------------------------------------------------- mlflow

# --------------------------------------------------------------------------------------------- CPython
