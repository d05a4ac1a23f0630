"""The bad-input catalogue: every case runs the real `train.py` (its `main` through `guarded_main`, in this process)
and must end with exit code 2, exactly one `error: …` line naming the bad value and what is allowed, no traceback,
no run left RUNNING and the store's earlier FINISHED run intact. docs/errors.md is this catalogue's table, checked
here row by row. The e2e tier runs a few cases as processes of their own: the same line and code from a real exit.

Regenerate the table after changing a message:  PYTHONPATH=src python tests/test_errors_catalogue.py --write
"""

from __future__ import annotations

import gzip
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from descentlab.data import write_idx

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "errors.md"
if __name__ == "__main__":  # `python tests/test_errors_catalogue.py --write` needs the conftest's Store
    sys.path.insert(0, str(Path(__file__).parent))
from conftest import Store  # noqa: E402

IDX_NAMES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
             "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
IDX = ("dataset=mnist", "dataset.download=false", "training.batch_size=8")


@dataclass
class Case:
    id: str
    kind: str  # config | data | environment
    args: tuple[str, ...]  # train.py arguments; {tmp} is the case's own temporary folder
    fragments: tuple[str, ...]  # must all appear in the error line: the bad value and what is allowed
    setup: Callable[[Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    via: str = "train.py"  # or "load_dataset": the same error, raised in-process (the IDX reader's defects)


def idx_set(tmp: Path, change: Callable[[dict[str, np.ndarray]], None] | None = None,
            corrupt: Callable[[Path], None] | None = None) -> None:
    """A small well-formed MNIST-shaped set in tmp/idx (20 train, 10 test), then one defect."""
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "train_labels": (np.arange(20) % 10).astype(np.uint8),
              "test_images": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "test_labels": (np.arange(10) % 10).astype(np.uint8)}
    if change:
        change(arrays)
    folder = tmp / "idx"
    folder.mkdir(parents=True)
    for role, array in arrays.items():
        write_idx(folder / IDX_NAMES[role], array)
    if corrupt:
        corrupt(folder)


def _nan_pixels(a: dict[str, np.ndarray]) -> None:
    images = a["train_images"].astype(np.float32)
    images[3, 5, :4] = np.nan
    a["train_images"] = images


def _cut(name: str, keep: int) -> Callable[[Path], None]:
    def cut(folder: Path) -> None:
        path = folder / name
        path.write_bytes(path.read_bytes()[:keep])
    return cut


def _truncate_inside_gzip(folder: Path) -> None:
    path = folder / IDX_NAMES["train_images"]
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100], mtime=0))


def _touch_file(tmp: Path) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "a-file").write_text("not a folder\n")


CASES: list[Case] = [
    # -- config: composition (Hydra/OmegaConf) ------------------------------------------------------
    Case("unknown-key", "config", ("optimizer.lrr=0.1",), ("'lrr'", "SGDConf")),
    Case("unknown-top-level-key", "config", ("trainng.iterations=5",), ("'trainng'",)),
    Case("unknown-optimizer", "config", ("optimizer=sgdd",), ("'optimizer/sgdd'", "adam", "momentum")),
    Case("unknown-model", "config", ("model=mlp_3x7",), ("'model/mlp_3x7'", "mlp_5x100")),
    Case("unknown-launcher", "config", ("-m", "hydra/launcher=nonexistent"),
         ("'hydra/launcher/nonexistent'", "basic joblib parallel")),
    Case("unknown-key-appended", "config", ("+foo=1",), ("'foo'", "added with + or ++", "'Config'", "optimizer")),
    Case("unknown-key-force-appended", "config", ("++model.extra=3",),
         ("'model.extra'", "'ModelConf'", "hidden_sizes")),
    Case("sweep-unknown-key", "config", ("-m", "+foo=1", "optimizer=sgd,adam"), ("'foo'", "added with + or ++")),
    Case("wrong-type-float", "config", ("optimizer.lr=fast",), ("'fast'", "Float")),
    Case("wrong-type-int", "config", ("training.iterations=1.5",), ("'1.5'", "Integer")),
    Case("wrong-type-list", "config", ("model.hidden_sizes=100",), ("hidden_sizes", "100")),
    # -- config: values (descentlab.config.validate) ------------------------------------------------
    Case("lr-zero", "config", ("optimizer.lr=0",), ("lr must be a finite number > 0, got 0.0",)),
    Case("lr-negative", "config", ("optimizer=adam", "optimizer.lr=-0.001"), ("lr must be", "> 0", "-0.001")),
    Case("momentum-one", "config", ("optimizer=momentum", "optimizer.momentum=1"),
         ("momentum must be a number in [0, 1), got 1.0",)),
    Case("adam-beta2-one", "config", ("optimizer=adam", "optimizer.beta2=1.0"), ("beta2", "[0, 1)", "1.0")),
    Case("batch-size-zero", "config", ("training.batch_size=0",),
         ("training.batch_size must be an integer >= 1, got 0",)),
    Case("batch-size-larger-than-data", "config", ("training.batch_size=5000",),
         ("training.batch_size must be at most the 4000 training examples of mnist_5k, got 5000",)),
    Case("iterations-zero", "config", ("training.iterations=0",),
         ("training.iterations must be an integer >= 1, got 0",)),
    Case("eval-every-zero", "config", ("training.eval_every=0",),
         ("training.eval_every must be an integer >= 1, got 0",)),
    Case("hidden-size-zero", "config", ("model.hidden_sizes=[100,0]",),
         ("model.hidden_sizes[1] must be an integer >= 1, got 0",)),
    Case("model-name-contradicts-sizes", "config", ("model.name=mlp_5x100", "model.hidden_sizes=[]"),
         ("model.name='mlp_5x100'", "model.hidden_sizes=[]", "'linear'")),
    Case("optimizer-name-mismatch", "config", ("optimizer=adam", "optimizer.name=sgd"),
         ("optimizer.name='sgd'", "'adam'", "optimizer=sgd")),
    Case("unknown-activation", "config", ("model.activation=gelu",), ("relu, sigmoid, tanh", "'gelu'")),
    Case("unknown-init", "config", ("model.weight_init=glorot",), ("'xavier' or 'he'", "'glorot'")),
    Case("dropout-one", "config", ("model.dropout=1.0",), ("model.dropout must be in [0, 1), got 1.0",)),
    Case("dropout-negative", "config", ("model.dropout=-0.1",), ("model.dropout must be in [0, 1), got -0.1",)),
    Case("unknown-sampling", "config", ("training.sampling=shuffle",), ("replacement, epoch", "'shuffle'")),
    Case("seed-negative", "config", ("seed=-1",), ("seed must be an integer >= 0, got -1",)),
    Case("unknown-objective", "config", ("task=function2d", "task.objective=himmelblau"),
         ("book, rosenbrock, beale", "'himmelblau'")),
    Case("path-for-embedded-set", "config", ("dataset.path={tmp}",), ("dataset.path", "mnist and fashion_mnist",
                                                                      "'mnist_5k'")),
    Case("heartbeat-zero", "config", ("tracking.heartbeat_s=0",),
         ("tracking.heartbeat_s must be a finite number > 0, got 0.0",)),
    Case("sqlite-synchronous-unknown", "config", ("tracking.sqlite.synchronous=off",), ("normal, full", "'off'")),
    Case("sweep-parent-unknown", "config", ("tracking.sweep_parent=server",),
         ("auto, launcher, first_job", "'server'")),
    Case("weights-unknown", "config", ("tracking.weights=some",), ("all, best, none", "'some'")),
    Case("validation-one", "config", ("dataset.validation=1.0",),
         ("dataset.validation must be a fraction in [0, 1)", "got 1.0")),
    Case("train-subset-zero", "config", ("dataset.train_subset=0",), ("dataset.train_subset must be an integer >= 1",
                                                                      "got 0")),
    Case("validation-too-small", "data", ("dataset=digits", "dataset.train_subset=30", "dataset.validation=0.01"),
         ("cannot hold out validation=0.01 of 30 training examples", "class 0 has 5")),
    Case("numerics-backend-unknown", "config", ("numerics.backend=cuda",), ("auto, numpy, numba", "'cuda'")),
    # -- config: safety -----------------------------------------------------------------------------
    Case("target-in-job-config", "config", ("+_target_=os.system",), ("_target_ is not allowed", "'os.system'")),
    Case("target-in-callback", "config", ("+hydra.callbacks.evil._target_=subprocess.getoutput",),
         ("hydra.callbacks.evil._target_", "descentlab", "'subprocess.getoutput'")),
    # -- data ---------------------------------------------------------------------------------------
    Case("data-missing-path", "data", (*IDX, "dataset.path={tmp}/nowhere"),
         ("mnist: IDX files not found", "{tmp}/nowhere (no such folder)", "To fix")),
    Case("data-corrupt-gzip", "data", (*IDX, "dataset.path={tmp}/idx"), ("corrupt gzip data",),
         lambda t: idx_set(t, corrupt=_cut(IDX_NAMES["train_images"], 200)), via="load_dataset"),
    Case("data-truncated-idx", "data", (*IDX, "dataset.path={tmp}/idx"),
         ("train-images-idx3-ubyte.gz: truncated data", "promises 15680 bytes"),
         lambda t: idx_set(t, corrupt=_truncate_inside_gzip), via="load_dataset"),
    Case("data-count-mismatch", "data", (*IDX, "dataset.path={tmp}/idx"), ("label count 19", "!= image count 20"),
         lambda t: idx_set(t, change=lambda a: a.update(train_labels=a["train_labels"][:19]))),
    Case("data-nan-pixels", "data", (*IDX, "dataset.path={tmp}/idx"),
         ("images must be unsigned bytes 0..255", "got float32 with 4 NaN values"),
         lambda t: idx_set(t, change=_nan_pixels)),
    Case("data-label-out-of-range", "data", (*IDX, "dataset.path={tmp}/idx"), ("labels outside 0..9", "12"),
         lambda t: idx_set(t, change=lambda a: a["test_labels"].__setitem__(4, 12)), via="load_dataset"),
    Case("data-wrong-image-size", "data", (*IDX, "dataset.path={tmp}/idx"), ("images are 8x8", "expects 28x28"),
         lambda t: idx_set(t, change=lambda a: a.update(test_images=np.zeros((10, 8, 8), np.uint8))),
         via="load_dataset"),
    # -- environment --------------------------------------------------------------------------------
    Case("store-folder-unwritable", "environment", ("tracking.uri=sqlite:///{tmp}/a-file/mlruns/mlflow.db",),
         ("store folder {tmp}/a-file/mlruns is not writable", "is a file, not a folder"), _touch_file),
    Case("tracking-uri-unknown-scheme", "environment", ("tracking.uri=foo://x",),
         ("tracking.uri", "'foo://x'", "allowed schemes: sqlite")),
    Case("tracking-uri-malformed-sqlite", "environment", ("tracking.uri=sqlite:/bad",),
         ("'sqlite:/bad'", "sqlite:////absolute/path.db")),
    Case("tracking-uri-malformed-env", "environment", (), ("MLFLOW_TRACKING_URI", "'sqlite:/bad'"),
         env={"MLFLOW_TRACKING_URI": "sqlite:/bad"}),
    Case("tracking-uri-postgresql-no-driver", "environment", ("tracking.uri=postgresql://u@127.0.0.1:9/mlflow",),
         ("'postgresql://u@127.0.0.1:9/mlflow' names no driver", "postgresql+psycopg2://u@127.0.0.1:9/mlflow")),
    Case("tracking-server-unreachable", "environment", ("tracking.uri=http://127.0.0.1:9",),
         ("tracking server http://127.0.0.1:9 is unreachable",)),
    Case("disk-full", "environment", ("tracking.min_free_mb=1e12",),
         ("MB free, at least tracking.min_free_mb=1e+12 MB is needed",)),
]


# The cases also run as a process of their own in the e2e tier: one for each stage that can refuse.
E2E_CASES = ("unknown-key", "lr-zero", "sweep-unknown-key", "tracking-uri-malformed-env", "data-missing-path")

# ---------------------------------------------------------------- running a case


def normalize(line: str, tmp: Path, store_root: Path) -> str:
    """The error line with run-specific parts replaced: the case's folder, the store's, free megabytes."""
    line = line.replace(str(tmp), "{tmp}").replace(str(store_root), "{store}")
    return re.sub(r"has \d+ MB free", "has <N> MB free", line)


def run_case(store: Store, case: Case) -> tuple[object, str]:
    """Run the case's train.py; returns (the CliResult, the normalized error line)."""
    tmp = store.root / "cases" / case.id
    tmp.mkdir(parents=True)
    if case.setup:
        case.setup(tmp)
    if case.via == "load_dataset":
        return None, _load_in_process(case, tmp)
    args = [a.replace("{tmp}", str(tmp)) for a in case.args]
    env = store.env(DESCENTLAB_CACHE_DIR=str(tmp / "cache"), **case.env)  # never the user's data cache
    flags = [a for a in args if a.startswith("-")]  # -m; the case's overrides come after the quick defaults
    result = store.train_in_process(*flags, "training.iterations=5", "training.progress=false",
                                    *[a for a in args if a not in flags], env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result, normalize(errors[0], tmp, store.root) if len(errors) == 1 else ""


def _load_in_process(case: Case, tmp: Path) -> str:
    """What train.py would print for a data case, without a process: the same loader and the same one_line."""
    import os

    from descentlab.data import load_dataset
    from descentlab.errors import input_errors, one_line

    overrides = dict(a.replace("{tmp}", str(tmp)).split("=", 1) for a in case.args)
    old = os.environ.get("DESCENTLAB_CACHE_DIR")
    os.environ["DESCENTLAB_CACHE_DIR"] = str(tmp / "cache")
    try:
        load_dataset(overrides["dataset"], path=overrides["dataset.path"], download=False)
    except input_errors() as exc:
        return normalize(f"error: {one_line(exc)}", tmp, tmp)
    finally:
        if old is None:
            del os.environ["DESCENTLAB_CACHE_DIR"]
        else:
            os.environ["DESCENTLAB_CACHE_DIR"] = old
    raise AssertionError(f"{case.id}: load_dataset raised nothing")


def doc_rows() -> dict[str, tuple[str, str, str]]:
    """docs/errors.md's table: case id -> (kind, command-line arguments, message)."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| `") and len(cells) == 5:
            rows[cells[0].strip("`")] = (cells[1], cells[3].strip("`"), _unescape(cells[4].strip("`")))
    return rows


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _unescape(text: str) -> str:
    return text.replace("\\|", "|")


def _row(case: Case, message: str) -> str:
    args = " ".join(case.args) or f"(env {' '.join(f'{k}={v}' for k, v in case.env.items())})"
    return f"| `{case.id}` | {case.kind} | {case.via} | `{_escape(args)}` | `{_escape(message)}` |"


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str, int]:
    """One store for every case, holding one FINISHED run that no failing case may lose or change."""
    store = Store(tmp_path_factory.mktemp("catalogue"))
    result = store.train_in_process("model=mlp_2x50", "training.iterations=5", "training.progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = store.runs()
    n_points = len(store.client().get_metric_history(run.info.run_id, "train/loss"))
    return store, run.info.run_id, n_points


def test_catalogue_has_at_least_25_cases_with_unique_ids() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.kind for c in CASES} == {"config", "data", "environment"}


def test_docs_table_lists_every_case_in_order() -> None:
    rows = doc_rows()
    assert list(rows) == [c.id for c in CASES], "docs/errors.md is out of date: run this file with --write"
    for case in CASES:
        kind, _, message = rows[case.id]
        assert kind == case.kind
        assert _row(case, message) == next(line for line in DOC.read_text().splitlines()
                                           if line.startswith(f"| `{case.id}` |"))
        for fragment in case.fragments:
            assert fragment in message, (case.id, fragment)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_exit_2_and_leaves_no_run(shared: tuple[Store, str, int], case: Case) -> None:
    store, finished_id, n_points = shared
    result, line = run_case(store, case)
    if result is None:  # in-process (load_dataset): the message is all there is to check
        for fragment in case.fragments:
            assert fragment in line, (fragment, line)
        assert line == doc_rows()[case.id][2], "docs/errors.md is out of date: run this file with --write"
        return
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == errors[0]  # the last word, after any context line
    for fragment in case.fragments:
        assert fragment in line, (fragment, line)
    assert line == doc_rows()[case.id][2], "docs/errors.md is out of date: run this file with --write"
    runs = store.runs()
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    assert [r.info.run_id for r in runs] == [finished_id]  # nothing created, nothing lost
    assert store.client().get_run(finished_id).info.status == "FINISHED"
    assert len(store.client().get_metric_history(finished_id, "train/loss")) == n_points


@pytest.mark.e2e
@pytest.mark.parametrize("case", [c for c in CASES if c.id in E2E_CASES], ids=lambda c: c.id)
def test_a_real_process_prints_the_same_line_and_exits_2(shared: tuple[Store, str, int], case: Case) -> None:
    """One case per stage that can refuse (composition, a job's validation, a sweep's launch, the store, the
    environment), through `train.py` as a process: the in-process runs above stand for what a user sees."""
    store, finished_id, _ = shared
    tmp = store.root / "cases-e2e" / case.id
    tmp.mkdir(parents=True)
    if case.setup:
        case.setup(tmp)
    args = [a.replace("{tmp}", str(tmp)) for a in case.args]
    flags = [a for a in args if a.startswith("-")]
    env = store.env(DESCENTLAB_CACHE_DIR=str(tmp / "cache"), **case.env)
    result = store.train(*flags, "training.iterations=5", "training.progress=false",
                         *[a for a in args if a not in flags], env=env, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr[-3000:]
    assert normalize(errors[0], tmp, store.root) == doc_rows()[case.id][2]
    assert [r.info.run_id for r in store.runs()] == [finished_id]


def test_hydra_full_error_shows_the_traceback(shared: tuple[Store, str, int]) -> None:
    store, finished_id, _ = shared
    result = store.train_in_process("optimizer.lr=0", "training.progress=false", env=store.env(HYDRA_FULL_ERROR="1"))
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError: optimizer: SGD: lr must be a finite number > 0, got 0.0" in result.stderr
    assert not any(ln.startswith("error:") for ln in result.stderr.splitlines())
    assert [r.info.run_id for r in store.runs()] == [finished_id]


@pytest.mark.e2e
def test_disk_full_mid_run_is_one_line_and_the_run_ends_failed(shared: tuple[Store, str, int]) -> None:
    """A real write failure after the run exists: RLIMIT_FSIZE (384 KiB) on the process makes writing the
    ~440 KB weights file fail with EFBIG, as a full disk fails with ENOSPC. The store's writes fit under the
    limit (SQLite appends to its WAL file: ~190 KB here under synchronous=FULL, which pads WAL frames, less under
    the default NORMAL), so the run can still be closed."""
    import resource
    import subprocess

    store, finished_id, _ = shared
    limit = 384 * 1024

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "training.iterations=5", "training.progress=false", "seed=11",
         f"hydra.run.dir={store.root}/outputs/fsize"],
        cwd=store.root, env=store.env(), capture_output=True, text=True, timeout=300, preexec_fn=cap)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: out of disk space or over the file-size limit: [Errno 27] File too large; free space "
                      "and run the command again (FINISHED runs are skipped)"], proc.stderr[-3000:]
    runs = {r.info.run_id: r for r in store.runs()}
    assert runs[finished_id].info.status == "FINISHED"
    (failed,) = [r for r in runs.values() if r.info.run_id != finished_id]
    assert failed.info.status == "FAILED" and "File too large" in failed.data.tags["error"]
    store.client().delete_run(failed.info.run_id)  # leave the shared store as the other cases expect it


def write_docs() -> None:
    """Run every case and write docs/errors.md from the messages they print."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        rows = []
        for case in CASES:
            result, line = run_case(store, case)
            if result is not None and (result.returncode != 2 or not line):
                raise SystemExit(f"{case.id}: exit {result.returncode}, stderr:\n{result.stderr[-2000:]}")
            rows.append(_row(case, line))
            print(f"{case.id}: {line}", file=sys.stderr)
    head, sep, _ = DOC.read_text().partition("<!-- catalogue -->")
    table = ["| case | kind | run through | `train.py` arguments | message (`{tmp}`: the case's temp folder, "
             "`{store}`: the store's) |", "|---|---|---|---|---|", *rows]
    DOC.write_text(head + sep + "\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: PYTHONPATH=src python tests/test_errors_catalogue.py --write")
    write_docs()
