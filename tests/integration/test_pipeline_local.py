"""The whole DAG through kfp.local (SubprocessRunner, this environment) on the tiny profile."""
import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from aimass.config import load_config
from aimass.data.fashion_mnist import CLASS_NAMES as FASHION_CLASSES
from aimass.data.importing import import_dataset
from aimass.data.versions import pinned_data_md5, track_data
from aimass.models.artifact import load_model
from aimass.pipelines.local_run import run_pipeline_locally
from aimass.serving.client import encoded_request, tensor_request
from conftest import init_dvc_repo, save_tiny_resnet, save_tiny_timm_checkpoint, save_tiny_torchvision_state_dict

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
    assert load_model(Path(blessed["uri"])).card.weights_format == expected_format


def test_blessed_model_loads_and_records_data_code_and_run(successful_run, data_repo):
    blessed = successful_run.artifact("bless-model", "blessed")
    card = load_model(Path(blessed["uri"])).card
    assert card.lineage["data_md5"] == pinned_data_md5(data_repo)
    assert card.lineage["git_commit"] == "abc123"
    assert card.lineage["run_name"].startswith("aimass-training-")


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
    assert "aimass_data_set" in docs and "Skew and drift: histograms side by side" in docs
    assert "data:image/png;base64" in curves
    assert "Augmentation preview" in preview and "data:image/png;base64" in preview
    assert report.startswith("# Evaluation gate PASSED")
    assert "## Compression choice" in report


def test_the_run_ends_with_a_deployed_answering_model(successful_run, tiny_config):
    import httpx

    from aimass.registry import open_registry
    from aimass.releases import open_release_backend
    from aimass.serving import ReleaseSource, running_server

    registry = open_registry(tiny_config, "fashion-mnist")
    revision = open_release_backend(tiny_config, registry).status()
    smoke = successful_run.artifact("deploy", "smoke_metrics")["metadata"]
    assert smoke["model_version"] == revision.model_version and smoke["smoke_test_accuracy"] >= 0.5
    assert revision.lineage["git_commit"] == "abc123"
    assert revision.triggered_by.startswith("pipeline run aimass-training-")
    source = ReleaseSource(tiny_config, "fashion-mnist")
    with running_server(registry.model_name, source, tiny_config) as server:
        blank = tensor_request(np.zeros((1, 1, 28, 28), dtype=np.uint8))
        answer = httpx.post(f"{server.url}/v2/models/{registry.model_name}/infer", json=blank).json()
    assert answer["model_version"] == revision.model_version
    assert answer["outputs"][0]["name"] == "label" and answer["outputs"][0]["data"][0] in FASHION_CLASSES


def darkened_fashion_mnist(source, target, splits=("test",)):
    """A copy of the Fashion-MNIST IDX files whose `splits` have every pixel at half its brightness."""
    target.mkdir(parents=True)
    for name in os.listdir(source):
        shutil.copyfile(source / name, target / name)
    for split in splits:
        path = target / f"{'t10k' if split == 'test' else 'train'}-images-idx3-ubyte.gz"
        raw = gzip.open(path).read()
        pixels = np.frombuffer(raw[16:], dtype=np.uint8) // 2
        with gzip.open(path, "wb") as stream:
            stream.write(raw[:16] + pixels.tobytes())
    return target


def repository_with(source, tmp_path):
    repo = init_dvc_repo(tmp_path / "repo")
    import_dataset(source, repo / "data")
    track_data(repo)
    return repo


def validation_summary(result) -> str:
    """The failed validate step's summary, as the step wrote it (kfp.local records no outputs of a failed step)."""
    return (result.run_dir / "validate-data-component" / "summary").read_text()


def data_stage_only(repo):
    return load_config("tiny", [f"data.repo_dir={repo}", "hpo.enabled=false"])


def test_a_test_split_at_half_brightness_stops_the_dag_before_training_naming_the_statistic(
        fashion_mnist_source, tmp_path, capsys):
    from aimass.cli import main

    repo = repository_with(darkened_fashion_mnist(fashion_mnist_source, tmp_path / "dark"), tmp_path)
    assert main(["run", "--profile", "tiny", "--set", "hpo.enabled=false", "--repo", str(repo),
                 "--pipeline-root", str(tmp_path / "runs")]) == 1
    output = capsys.readouterr()
    shown = output.out.splitlines()
    assert [line.split()[:2] for line in shown[:2]] == [["ingest", "SUCCESS"], ["validate-data", "FAILURE"]]
    assert len(shown) <= 60 and "executor_input" not in output.out  # kfp.local's dumps are in the logs only
    last = output.err.strip().splitlines()[-1]
    assert last.startswith("aimass: error: step validate-data failed: ") and "DataValidationError" in last
    assert "brightness: Jensen-Shannon distance, test vs train" in last and "logs/validate-data.log)" in last
    (run_dir,) = (tmp_path / "runs").glob("aimass-training-*")
    assert "| **FAIL** | brightness: Jensen-Shannon distance, test vs train, at most" in \
        (run_dir / "validate-data-component" / "summary").read_text()


def test_every_steps_whole_output_is_in_its_own_log(successful_run):
    train = next(step for step in successful_run.steps if step.name == "train")
    assert train.log == successful_run.run_dir / "logs" / "train.log"
    assert "epoch 1/" in train.log.read_text() and "executor_input" in train.log.read_text()


def test_train_and_compress_report_their_progress_for_the_live_view(successful_run):
    logs = {step.name: step.log.read_text() for step in successful_run.steps if step.log}
    assert "aimass-progress: epoch 1/" in logs["train"] and "images/s" in logs["train"]
    assert "aimass-progress: candidate 1/" in logs["compress"]


def test_the_kfp_local_internals_aimass_relies_on_are_still_there():
    import inspect

    from kfp.local import docker_task_handler, logging_utils, subprocess_task_handler

    assert list(inspect.signature(subprocess_task_handler.run_local_subprocess).parameters) == ["full_command",
                                                                                                "env_vars"]
    assert list(inspect.signature(docker_task_handler.run_docker_container).parameters) == [
        "client", "image", "command", "volumes", "container_run_args"]
    assert callable(logging_utils.print_horizontal_line)
    assert list(inspect.signature(logging_utils.indented_print).parameters) == ["num_spaces"]


def test_a_new_version_drifted_from_the_production_models_data_stops_the_dag(fashion_mnist_source, tiny_teacher,
                                                                              tmp_path):
    from aimass.registry import open_registry

    everything_darker = darkened_fashion_mnist(fashion_mnist_source, tmp_path / "dark", splits=("train", "test"))
    repo = repository_with(everything_darker, tmp_path)
    config = data_stage_only(repo)
    registry = open_registry(config, "fashion-mnist")
    registry.push(tiny_teacher[0])  # trained on the original data: its card holds that data's profile
    registry.promote("v1", "production")
    result = run_pipeline_locally(config, tmp_path / "runs", git_commit="abc123")
    assert result.failed_step == "validate-data"
    summary = validation_summary(result)
    assert "| **FAIL** | brightness: Jensen-Shannon distance, train of data " in summary
    assert "vs the training data of production v1, at most" in summary
    assert "| pass | brightness: Jensen-Shannon distance, test vs train" in summary  # the splits agree


def test_a_folder_of_images_becomes_a_deployed_model_that_answers_with_its_class_names(digits_folder, tmp_path):
    import httpx

    from aimass.registry import open_registry
    from aimass.serving import ReleaseSource, running_server

    repo = repository_with(digits_folder, tmp_path)
    config = load_config("tiny", [f"data.repo_dir={repo}", "hpo.enabled=false", "compress.methods=[quantize_int8]",
                                  "gate.min_accuracy=null", "gate.min_macro_f1=null", "gate.max_latency_ratio=100"])
    result = run_pipeline_locally(config, tmp_path / "runs", git_commit="abc123")
    assert result.succeeded, result.failed_step
    card = load_model(Path(result.artifact("bless-model", "blessed")["uri"])).card
    assert card.class_names == tuple(str(k) for k in range(10)) and card.dataset.name == "digits"
    assert card.input_spec.channels == 3 and card.input_spec.height == 16
    registry = open_registry(config, "digits")
    with running_server("digits", ReleaseSource(config, "digits"), config) as server:
        blank = tensor_request(np.zeros((1, 3, 16, 16), dtype=np.uint8))
        answer = httpx.post(f"{server.url}/v2/models/digits/infer", json=blank).json()
    assert answer["model_version"] == registry.resolve("production")
    assert answer["outputs"][0]["data"][0] in card.class_names


def test_a_hugging_face_checkpoint_becomes_a_deployed_model_that_names_the_class_of_an_uploaded_image(
        digits_folder, tmp_path):
    import httpx

    from aimass.serving import ReleaseSource, running_server

    checkpoint = save_tiny_resnet(tmp_path / "checkpoint", size=24)
    repo = repository_with(digits_folder, tmp_path)
    config = load_config("tiny", [f"data.repo_dir={repo}", f"model.architecture=hf:{checkpoint}", "hpo.enabled=false",
                                  "train.batch_size=32",
                                  "compress.methods=[prune_channels,quantize_int8]", "gate.max_latency_ratio=100"])
    result = run_pipeline_locally(config, tmp_path / "runs", git_commit="abc123")
    assert result.succeeded, result.failed_step
    card = load_model(Path(result.artifact("bless-model", "blessed")["uri"])).card
    assert card.lineage["base_checkpoint"]["source"] == f"hf:{checkpoint}"
    assert (card.input_spec.height, list(card.input_spec.mean)) == (24, [0.5, 0.4, 0.3])
    upload = next((repo / "data" / "images").rglob("*.jpg")).read_bytes()
    with running_server("digits", ReleaseSource(config, "digits"), config) as server:
        answer = httpx.post(f"{server.url}/v2/models/digits/infer", json=encoded_request([upload])).json()
    assert answer["outputs"][0]["data"][0] in card.class_names


def served_answer_to_a_jpeg(config, repo):
    """The production model's answer to one of the data set's own JPEG files, over HTTP, and its card."""
    import httpx

    from aimass.registry import open_registry
    from aimass.serving import ReleaseSource, running_server

    upload = next((repo / "data" / "images").rglob("*.jpg")).read_bytes()
    with running_server("digits", ReleaseSource(config, "digits"), config) as server:
        answer = httpx.post(f"{server.url}/v2/models/digits/infer", json=encoded_request([upload])).json()
    return answer, open_registry(config, "digits").resolve("production")


@pytest.mark.parametrize("architecture, checkpoint_writer", [
    ("timm:test_resnet", lambda folder: save_tiny_timm_checkpoint(folder / "timm-checkpoint", size=20)),
    ("torchvision:squeezenet1_1", lambda folder: save_tiny_torchvision_state_dict(
        folder / "squeezenet.safetensors", "squeezenet1_1")),
])
def test_a_timm_or_torchvision_checkpoint_becomes_a_deployed_model_that_names_the_class_of_a_jpeg(
        architecture, checkpoint_writer, digits_folder, tmp_path):
    checkpoint = checkpoint_writer(tmp_path)
    repo = repository_with(digits_folder, tmp_path)
    overrides = [f"data.repo_dir={repo}", f"model.architecture={architecture}", f"model.checkpoint={checkpoint}",
                 "hpo.enabled=false", "train.batch_size=32", "train.backbone_learning_rate_factor=0.1",
                 "compress.methods=[quantize_int8]", "gate.min_accuracy=null", "gate.min_macro_f1=null",
                 "gate.max_latency_ratio=100", "evaluate.robustness_images=50"]
    if architecture.startswith("torchvision:"):  # its weights' transforms take 224x224 crops: a short run, judged
        overrides += ["train.steps=4", "evaluate.corruptions=[gaussian_noise]", "gate.min_error_reduction=0"]
    config = load_config("tiny", overrides)
    result = run_pipeline_locally(config, tmp_path / "runs", git_commit="abc123")
    assert result.succeeded, result.failed_step
    blessed = load_model(Path(result.artifact("bless-model", "blessed")["uri"])).card
    assert blessed.architecture.architecture == architecture
    assert blessed.lineage["base_checkpoint"]["source"] == f"{architecture} from {checkpoint}"
    expected_side = 20 if architecture.startswith("timm:") else 224
    assert (blessed.input_spec.height, blessed.input_spec.crop_fraction) == (
        expected_side, 0.875 if architecture.startswith("timm:") else 224 / 256)
    answer, production = served_answer_to_a_jpeg(config, repo)
    assert answer["model_version"] == production
    assert answer["outputs"][0]["data"][0] in blessed.class_names


def test_a_model_below_the_gate_is_rejected_and_not_blessed(tiny_config, tmp_path):
    # the search is not what this checks (the successful run covers it): off, to keep the suite short
    config = load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}", "gate.min_accuracy=0.999",
                                  "hpo.enabled=false"])
    result = run_pipeline_locally(config, tmp_path / "runs", git_commit="abc123")
    assert statuses(result)["reject-model"] == "FAILURE"
    assert statuses(result)["bless-model"] == "not run"
    assert json.loads(result.parameter("evaluate", "reasons"))[0].startswith("accuracy")


def test_the_markdown_summary_ci_posts_has_every_step_and_the_metrics(successful_run):
    from aimass.cli.run_summary import markdown_run_summary

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
    assert json.loads(card.lineage["hyperparameters"]) == chosen
    assert card.config["train"]["learning_rate"] == chosen["train.learning_rate"]
    assert card.config["model"]["dropout"] == chosen["model.dropout"]


def test_a_run_leaves_print_as_it_found_it(successful_run, capsys):
    # kfp.local's indenting print can stay installed after overlapping ParallelFor tasks (the search's trials)
    print("plain")
    assert capsys.readouterr().out == "plain\n"
