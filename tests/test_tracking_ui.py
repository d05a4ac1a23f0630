"""tracking.ui: descentlab's experiments carry the tags MLflow's UI reads (kind, saved runs-table view)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # offline: telemetry once broke a request

from descentlab.data.idx_specs import cache_root
from descentlab.tracking import ui
from descentlab.tracking.settings import SqliteSettings
from descentlab.tracking.store import artifact_root_for, get_or_create_experiment, open_store, resolve_tracking_uri

# The schema template in the data cache, as the entry configures it: a new store in milliseconds.
SQLITE = SqliteSettings(template_dir=str(cache_root()))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    uri = resolve_tracking_uri(None, tmp_path_factory.mktemp("store") / "mlruns")
    return uri, open_store(uri, SQLITE)


class CountingClient:
    """A client that counts (and may refuse) `set_experiment_tag` calls."""

    def __init__(self, client, refuse: bool = False) -> None:
        self.client, self.refuse, self.set_calls = client, refuse, 0

    def set_experiment_tag(self, *args):
        self.set_calls += 1
        if self.refuse:
            raise PermissionError("no EDIT permission")
        return self.client.set_experiment_tag(*args)

    def __getattr__(self, attr):
        return getattr(self.client, attr)


def assert_ui_tags(tags: dict[str, str]) -> None:
    assert tags[ui.EXPERIMENT_KIND_TAG] == "custom_model_development"
    view = json.loads(tags["mlflow.sharedViewState.descentlab"])
    assert view["name"] == "descentlab" and isinstance(view["createdAt"], int)
    assert view["updatedAt"] == view["createdAt"]
    state = json.loads(view["state"])
    assert state["selectedColumns"][:2] == ["metrics.`train/loss`", "metrics.`final/test_acc`"]
    assert {"params.`optimizer.name`", "params.`optimizer.lr`", "params.`seed`"} <= set(state["selectedColumns"])
    assert state["runsHiddenMode"] == "SHOW_ALL"


@pytest.mark.e2e
def test_a_tiny_train_run_tags_the_experiment_of_a_fresh_store(store) -> None:
    result = store.train("-m", "optimizer=sgd,adam", "training.iterations=5", "training.eval_every=5")
    assert result.returncode == 0, result.stderr
    exp = store.client().get_experiment_by_name("optimizer-comparison")
    assert_ui_tags(exp.tags)
    assert len(store.runs()) == 3  # the parent and two jobs, all in the tagged experiment


def test_an_analysis_run_tags_its_new_experiment(prepared, tmp_path: Path) -> None:
    from descentlab.analysis.report import log_analysis_run

    uri, client = prepared
    (tmp_path / "summary.md").write_text("# summary\n")
    log_analysis_run("analysis-only", tmp_path, uri)
    assert_ui_tags(client.get_experiment_by_name("analysis-only").tags)


def test_an_experiment_of_an_earlier_version_is_tagged_once(prepared) -> None:
    uri, client = prepared
    old = client.create_experiment("untagged", artifact_location=f"{artifact_root_for(uri)}/untagged")
    counting = CountingClient(client)
    assert get_or_create_experiment(counting, "untagged", artifact_root_for(uri)) == old
    assert counting.set_calls == 2
    assert_ui_tags(client.get_experiment(old).tags)
    assert get_or_create_experiment(counting, "untagged", artifact_root_for(uri)) == old
    assert counting.set_calls == 2  # a tagged experiment costs no call: the lookup brought its tags


def test_a_kind_or_view_set_in_the_ui_is_kept(prepared) -> None:
    uri, client = prepared
    mine = json.dumps({"name": "mine", "createdAt": 1, "updatedAt": 2, "state": "{}"})
    exp_id = client.create_experiment("chosen", tags={ui.EXPERIMENT_KIND_TAG: "genai_development", ui.VIEW_TAG: mine})
    counting = CountingClient(client)
    assert get_or_create_experiment(counting, "chosen", artifact_root_for(uri)) == exp_id
    tags = client.get_experiment(exp_id).tags
    assert counting.set_calls == 0
    assert tags[ui.EXPERIMENT_KIND_TAG] == "genai_development" and tags[ui.VIEW_TAG] == mine


def test_a_refused_tag_only_warns(prepared, caplog: pytest.LogCaptureFixture) -> None:
    uri, client = prepared
    old = client.create_experiment("read-only", artifact_location=f"{artifact_root_for(uri)}/read-only")
    refusing = CountingClient(client, refuse=True)
    with caplog.at_level(logging.WARNING, logger="descentlab.tracking.store"):
        assert get_or_create_experiment(refusing, "read-only", artifact_root_for(uri)) == old
    assert refusing.set_calls == 1  # the first refusal stops the attempt
    assert f"could not tag experiment {old} with mlflow.experimentKind: no EDIT permission" in caplog.text


def test_missing_tags_adds_only_absent_keys() -> None:
    assert ui.missing_tags(ui.experiment_tags(now_ms=5)) == {}
    assert ui.missing_tags({ui.EXPERIMENT_KIND_TAG: "genai_development"}).keys() == {ui.VIEW_TAG}
    assert ui.missing_tags({}).keys() == {ui.EXPERIMENT_KIND_TAG, ui.VIEW_TAG}
    assert json.loads(ui.saved_view_value(now_ms=7))["createdAt"] == 7


# -- what the installed MLflow's UI reads ---------------------------------------------------------
@pytest.fixture(scope="module")
def ui_bundle() -> str:
    """The JavaScript of the UI `mlflow ui` serves from this installation."""
    import mlflow

    js = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    files = sorted(js.glob("*.js"))
    if not files:
        pytest.skip(f"no MLflow UI bundle in {js} (mlflow-skinny serves none)")
    return "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


def test_the_installed_ui_reads_the_kind_tag(ui_bundle: str) -> None:
    assert f'"{ui.EXPERIMENT_KIND_TAG}"' in ui_bundle
    assert f'CUSTOM_MODEL_DEVELOPMENT="{ui.MODEL_TRAINING}"' in ui_bundle


def test_the_installed_ui_reads_saved_views_from_experiment_tags(ui_bundle: str) -> None:
    assert f'"{ui.SAVED_VIEW_PREFIX}"' in ui_bundle and f'"{ui.VIEW_SHARE_PARAM}"' in ui_bundle
    # the envelope the UI checks before listing a view, and the state keys descentlab writes
    assert "expected an object with a string `name`, number `createdAt`, and string `state`" in ui_bundle
    assert '"selectedColumns"' in ui_bundle and '"runsHiddenMode"' in ui_bundle
    assert f'SHOWALL="{ui.SHOW_ALL_RUNS}"' in ui_bundle
    assert 'METRICS:"metrics"' in ui_bundle and 'PARAMS:"params"' in ui_bundle
    assert '+".`"+' in ui_bundle  # a column key is <type>.`<name>`


def test_the_installed_ui_has_the_switch_the_readme_names(ui_bundle: str) -> None:
    assert f'key:"{ui.WORKFLOW_STORAGE_KEY}",version:1' in ui_bundle
    assert f'.get("{ui.WORKFLOW_PARAM}")' in ui_bundle and f'MACHINE_LEARNING="{ui.MACHINE_LEARNING}"' in ui_bundle
    assert f'defaultMessage:"{ui.MODEL_TRAINING_LABEL}"' in ui_bundle
