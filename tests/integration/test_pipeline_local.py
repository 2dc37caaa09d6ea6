"""The whole DAG through kfp.local (SubprocessRunner, this environment) on the tiny profile."""
import json
from pathlib import Path

import pytest

from aimass.config import load_config
from aimass.data.versions import pinned_data_md5
from aimass.model_artifact import load_model
from aimass.pipelines.local_run import run_pipeline_locally

pytestmark = pytest.mark.slow


def statuses(result):
    return {step.name: step.status for step in result.steps}


def test_every_step_succeeds_and_the_rejection_branch_is_skipped(successful_run):
    assert statuses(successful_run) == {
        "ingest": "SUCCESS", "validate-data": "SUCCESS", "augment": "SUCCESS", "hpo-select": "SUCCESS",
        "train": "SUCCESS",
        "compress": "SUCCESS", "evaluate": "SUCCESS", "bless-model": "SUCCESS", "deploy": "SUCCESS",
        "reject-model": "not run"}
    assert successful_run.succeeded


def test_every_executed_step_is_timed(successful_run):
    assert all(step.seconds > 0 for step in successful_run.steps if step.status == "SUCCESS")


def test_the_blessed_model_is_the_one_evaluate_chose(successful_run):
    chosen = successful_run.parameter("evaluate", "chosen")
    blessed = successful_run.artifact("bless-model", "blessed")
    assert blessed["metadata"]["chosen"] == chosen
    expected_format = "safetensors" if chosen in ("teacher", "prune_unstructured", "prune_channels", "distill") \
        else "torch-export"
    assert load_model(Path(blessed["uri"])).card["weights_format"] == expected_format


def test_blessed_model_loads_and_records_data_code_and_run(successful_run, data_repo):
    blessed = successful_run.artifact("bless-model", "blessed")
    card = load_model(Path(blessed["uri"])).card
    assert card["lineage"]["data_md5"] == pinned_data_md5(data_repo)
    assert card["lineage"]["git_commit"] == "abc123"
    assert card["lineage"]["run_name"].startswith("aimass-training-")


def test_evaluation_metrics_and_confusion_matrix_are_logged(successful_run):
    metrics = successful_run.artifact("evaluate", "metrics")["metadata"]
    assert 0.5 < metrics["accuracy"] <= 1 and 0 < metrics["macro_f1"] <= 1
    matrix = successful_run.artifact("evaluate", "classification")["metadata"]["confusionMatrix"]
    assert len(matrix["annotationSpecs"]) == 10


def test_ui_artifacts_are_written(successful_run):
    docs = Path(successful_run.artifact("validate-data", "data_docs")["uri"]).read_text()
    curves = Path(successful_run.artifact("train", "curves")["uri"]).read_text()
    report = Path(successful_run.artifact("evaluate", "report")["uri"]).read_text()
    preview = Path(successful_run.artifact("augment", "preview")["uri"]).read_text()
    assert "fashion_mnist_images" in docs and "data:image/png;base64" in curves
    assert "Augmentation preview" in preview and "data:image/png;base64" in preview
    assert report.startswith("# Evaluation gate PASSED")
    assert "## Compression choice" in report


def test_the_run_ends_with_a_deployed_answering_model(successful_run, tiny_config):
    import httpx

    from aimass.registry import open_registry
    from aimass.releases import open_release_backend
    from aimass.serving import ReleaseSource, running_server

    revision = open_release_backend(tiny_config, open_registry(tiny_config)).status()
    smoke = successful_run.artifact("deploy", "smoke_metrics")["metadata"]
    assert smoke["model_version"] == revision.model_version and smoke["smoke_test_accuracy"] >= 0.5
    assert revision.lineage["git_commit"] == "abc123"
    assert revision.triggered_by.startswith("pipeline run aimass-training-")
    with running_server(tiny_config.registry.model_name, ReleaseSource(tiny_config), tiny_config.serving) as server:
        image = {"name": "images", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}
        answer = httpx.post(f"{server.url}/v2/models/{tiny_config.registry.model_name}/infer",
                            json={"inputs": [image]}).json()
    assert answer["model_version"] == revision.model_version and len(answer["outputs"][0]["data"]) == 1


def test_bad_data_stops_the_dag_before_training(make_data_repo, tmp_path):
    def shift_labels(image_sets):
        labels = image_sets["train"].labels
        labels[labels == 3] = 4

    repo = make_data_repo(shift_labels)
    config = load_config("tiny", [f"data.repo_dir={repo}"])
    result = run_pipeline_locally(config, tmp_path / "runs", git_commit="abc123")
    assert statuses(result)["validate-data"] == "FAILURE"
    assert statuses(result)["train"] == "not run" and not result.succeeded
    assert result.failed_step == "validate-data"


def test_a_model_below_the_gate_is_rejected_and_not_blessed(tiny_config, tmp_path):
    # the search is not what this checks (the successful run covers it): off, to keep the suite short
    config = load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}", "gate.min_accuracy=0.999",
                                  "hpo.enabled=false"])
    result = run_pipeline_locally(config, tmp_path / "runs", git_commit="abc123")
    assert statuses(result)["reject-model"] == "FAILURE"
    assert statuses(result)["bless-model"] == "not run"
    assert json.loads(result.parameter("evaluate", "reasons"))[0].startswith("accuracy")


def test_the_markdown_summary_ci_posts_has_every_step_and_the_metrics(successful_run):
    from aimass.run_summary import markdown_run_summary

    summary = markdown_run_summary(successful_run, "tiny")
    assert summary.startswith("### aimass run (`tiny` profile): succeeded")
    assert "| deploy | SUCCESS |" in summary and "| reject-model | not run |" in summary
    accuracy = successful_run.artifact("evaluate", "metrics")["metadata"]["accuracy"]
    assert f"test accuracy **{accuracy:.4f}**" in summary


def test_the_search_ran_every_grid_trial_and_the_model_trained_on_its_choice(successful_run):
    chosen = json.loads(successful_run.parameter("hpo-select", "Output"))
    assert set(chosen) == {"train.learning_rate", "model.dropout"}
    assert successful_run.artifact("hpo-select", "metrics")["metadata"]["trials"] == 4
    trials = Path(successful_run.artifact("hpo-select", "trials")["uri"]).read_text()
    assert trials.startswith("# Hyper-parameter search (grid, 4 trials)") and "**best**" in trials
    card = load_model(Path(successful_run.artifact("train", "model")["uri"])).card
    assert json.loads(card["lineage"]["hyperparameters"]) == chosen
    assert card["config"]["train"]["learning_rate"] == chosen["train.learning_rate"]
    assert card["config"]["model"]["dropout"] == chosen["model.dropout"]


def test_a_run_leaves_print_as_it_found_it(successful_run, capsys):
    # kfp.local's indenting print can stay installed after overlapping ParallelFor tasks (the search's trials)
    print("plain")
    assert capsys.readouterr().out == "plain\n"
