"""`aimass lineage`: which data, code and run made a version, or the model a release revision served, including
after a rollback."""
import json
import shutil

import pytest

from aimass.cli import main
from aimass.integrity import write_manifest
from aimass.object_store import LocalStore
from aimass.registry import ModelRegistry


def model_from_run(source, target, run: str, data_md5: str, commit: str, **more_lineage):
    """A copy of a model directory whose card says another run made it (its manifest rewritten to match)."""
    shutil.copytree(source, target)
    card = json.loads((target / "model.json").read_text())
    card["lineage"] = {"data_md5": data_md5, "git_commit": commit, "run_id": f"id-{run}", "run_name": run,
                       **more_lineage}
    (target / "model.json").write_text(json.dumps(card))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.pop("sha256")
    write_manifest(target, manifest)
    return target


@pytest.fixture
def repo(tmp_path, tiny_teacher):
    registry = ModelRegistry(LocalStore(tmp_path / "model-registry"), "fashion-mnist-classifier")
    first = model_from_run(tiny_teacher[0], tmp_path / "m1", "run-one", "a" * 32 + ".dir", "1" * 40)
    second = model_from_run(tiny_teacher[0], tmp_path / "m2", "run-two", "b" * 32 + ".dir", "2" * 40)
    registry.push(first, metrics={"accuracy": 0.81})
    registry.push(second, metrics={"accuracy": 0.83}, parent_version="v1")
    return ["--repo", str(tmp_path), "--set", "registry.model_name=fashion-mnist-classifier"]


def test_lineage_of_a_version_names_its_data_code_run_parent_and_metrics(repo, capsys):
    assert main(["lineage", "v2", *repo]) == 0
    output = capsys.readouterr().out
    for expected in ("fashion-mnist-classifier v2", "b" * 32 + ".dir", "2" * 40, "run-two (id id-run-two)",
                     "parent version         v1", "accuracy 0.8300"):
        assert expected in output


def test_lineage_names_the_pretrained_checkpoint_a_model_started_from(repo, tiny_teacher, tmp_path, capsys):
    checkpoint = {"source": "hf:/models/resnet", "pretrained": True, "files": {"model.safetensors": "e" * 64}}
    fine_tuned = model_from_run(tiny_teacher[0], tmp_path / "m3", "run-three", "c" * 32 + ".dir", "3" * 40,
                                base_checkpoint=checkpoint)
    ModelRegistry(LocalStore(tmp_path / "model-registry"), "fashion-mnist-classifier").push(fine_tuned)
    assert main(["lineage", "v3", *repo]) == 0
    assert f"hf:/models/resnet (pretrained weights); model.safetensors sha256 {'e' * 64}" in capsys.readouterr().out


def test_after_a_rollback_the_serving_revision_traces_back_to_the_first_models_data_and_code(repo, capsys):
    for command in (["release", "deploy", "v1"], ["release", "deploy", "v2"], ["release", "rollback"]):
        assert main([*command, *repo, "--triggered-by", "ci"]) == 0
    capsys.readouterr()
    assert main(["release", "status", *repo]) == 0
    status = capsys.readouterr().out
    assert "Rollback to 1" in status and "a" * 32 + ".dir" in status and "1" * 40 in status
    assert main(["lineage", "--release", "3", *repo, "--json"]) == 0
    traced = json.loads(capsys.readouterr().out)
    assert traced["revision"]["description"] == "Rollback to 1"
    assert traced["model"]["lineage"]["run_name"] == "run-one" and traced["model"]["version"] == "v1"


def test_lineage_of_an_unknown_revision_lists_the_known_ones(repo, capsys):
    main(["release", "deploy", "v1", *repo])
    assert main(["lineage", "--release", "9", *repo]) == 1
    assert "no release revision 9; revisions: 1" in capsys.readouterr().err


def test_a_revision_records_the_parent_version_and_gate_metrics_besides_data_code_and_run(repo, capsys):
    main(["release", "deploy", "v2", *repo])
    capsys.readouterr()
    main(["release", "status", *repo])
    status = capsys.readouterr().out
    for expected in ("parent_version v1", "gate_accuracy 0.8300", "run_name run-two", "git_commit " + "2" * 40):
        assert expected in status
