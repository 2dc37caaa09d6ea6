import json

import pytest
import yaml

from aimass.cli import main
from conftest import init_dvc_repo

# The model's name when no data set is imported in the repository (it defaults to the data set's name).
NAMED = ["--set", "registry.model_name=fashion-mnist-classifier"]

COMMANDS = [[], ["data"], ["data", "import"], ["run"], ["compile"], ["config"], ["config", "show"], ["models"],
            ["models", "list"], ["models", "show"], ["models", "promote"], ["release"], ["release", "deploy"],
            ["release", "rollback"], ["release", "history"], ["release", "status"], ["serve"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "aimass")
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0 and "usage: aimass" in capsys.readouterr().out


def test_unknown_override_key_exits_non_zero_with_one_line_listing_valid_keys(capsys):
    assert main(["run", "--set", "train.epoch=1"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("aimass: error: unknown configuration key 'train.epoch'") and error.count("\n") == 1
    assert "train.epochs" in error


def test_data_import_pins_the_data_in_data_dvc(tmp_path, fashion_mnist_source, capsys):
    repo = init_dvc_repo(tmp_path / "repo")
    assert main(["data", "import", "--source", str(fashion_mnist_source), "--repo", str(repo)]) == 0
    md5 = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
    assert f"data.dvc pins {md5}" in capsys.readouterr().out


def test_data_import_from_a_missing_folder_names_it_and_writes_nothing(tmp_path, capsys):
    repo = init_dvc_repo(tmp_path / "repo")
    assert main(["data", "import", "--source", str(tmp_path / "nowhere"), "--repo", str(repo)]) == 1
    assert f"{tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert not (repo / "data").exists() and not (repo / "data.dvc").exists()


def test_data_import_takes_the_source_from_the_environment(tmp_path, fashion_mnist_source, monkeypatch, capsys):
    monkeypatch.setenv("AIMASS_FASHION_MNIST_DIR", str(tmp_path / "elsewhere"))
    repo = init_dvc_repo(tmp_path / "repo")
    assert main(["data", "import", "--repo", str(repo)]) == 1
    assert str(tmp_path / "elsewhere") in capsys.readouterr().err


def test_config_show_prints_the_resolved_profile(capsys):
    assert main(["config", "show", "--profile", "tiny", "--set", "train.epochs=2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["profile"] == "tiny" and shown["train"]["epochs"] == 2


def test_compile_writes_the_pipeline_to_the_given_path(tmp_path, capsys):
    assert main(["compile", "-o", str(tmp_path / "p.yaml")]) == 0
    pipeline, *platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    assert pipeline["pipelineInfo"]["name"] == "aimass-training" and platform


def test_models_commands_list_show_and_promote_versions(tmp_path, tiny_teacher, capsys):
    from aimass.object_store import LocalStore
    from aimass.registry import ModelRegistry

    ModelRegistry(LocalStore(tmp_path / "model-registry"), "fashion-mnist-classifier").push(
        tiny_teacher[0], metrics={"accuracy": 0.7512})
    repo = ["--repo", str(tmp_path), *NAMED]
    assert main(["models", "promote", "v1", "--alias", "production", *repo]) == 0
    assert main(["models", "list", *repo]) == 0
    listing = capsys.readouterr().out
    assert "v1" in listing and "0.7512" in listing and "production" in listing
    assert main(["models", "show", "production", *repo]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v1"


def test_models_push_publishes_a_model_directory_and_show_prints_what_pins_it(tmp_path, tiny_teacher, capsys):
    repo = ["--repo", str(tmp_path), *NAMED]
    assert main(["models", "push", str(tiny_teacher[0]), *repo]) == 0
    assert "as fashion-mnist-classifier v1" in capsys.readouterr().out
    assert main(["models", "show", "v1", *repo]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["storage_uri"] == f"file://{tmp_path}/model-registry/models/fashion-mnist-classifier/versions/v1"
    assert shown["manifest_sha256"] == shown["files"]["manifest.json"]


def test_models_show_of_an_unknown_version_is_one_clear_line(tmp_path, capsys):
    assert main(["models", "show", "v9", "--repo", str(tmp_path), *NAMED]) == 1
    assert "has no version v9" in capsys.readouterr().err


def test_release_commands_deploy_roll_back_and_show_lineage(tmp_path, tiny_teacher, capsys):
    from aimass.object_store import LocalStore
    from aimass.registry import ModelRegistry

    registry = ModelRegistry(LocalStore(tmp_path / "model-registry"), "fashion-mnist-classifier")
    registry.push(tiny_teacher[0])
    registry.push(tiny_teacher[0])
    repo = ["--repo", str(tmp_path), "--triggered-by", "ci", *NAMED]
    assert main(["release", "deploy", "v1", *repo]) == 0
    assert main(["release", "deploy", "v2", *repo]) == 0
    assert main(["release", "rollback", *repo]) == 0
    capsys.readouterr()
    assert main(["release", "status", *repo]) == 0
    status = capsys.readouterr().out
    assert status.startswith("revision 3: fashion-mnist-classifier v1 (deployed, Rollback to 1, by ci")
    assert "data_md5 " + "d" * 32 + ".dir" in status
    assert main(["release", "history", *repo]) == 0
    assert "Rollback to 1" in capsys.readouterr().out


def test_model_commands_take_the_imported_data_sets_name(data_repo, capsys):
    assert main(["models", "list", "--repo", str(data_repo)]) == 0
    assert "fashion-mnist in " in capsys.readouterr().out


def test_model_commands_without_a_data_set_or_a_name_say_how_to_get_one(tmp_path, capsys):
    assert main(["models", "list", "--repo", str(tmp_path)]) == 1
    assert "no model name: import a data set (`aimass data import`)" in capsys.readouterr().err


def test_run_without_an_imported_data_set_says_to_import_one_before_starting(tmp_path, capsys):
    repo = init_dvc_repo(tmp_path / "repo")
    assert main(["run", "--profile", "tiny", "--repo", str(repo)]) == 1
    assert "run `aimass data import` to create and pin the data set" in capsys.readouterr().err
    assert not (repo / "runs").exists()


def test_serve_with_a_malformed_model_version_exits_at_start(tmp_path, capsys):
    assert main(["serve", "--model-version", "../../v1", "--repo", str(tmp_path), *NAMED]) == 1
    assert "'../../v1' is neither a version (v1, v2, ...) nor an alias" in capsys.readouterr().err


def test_models_push_records_the_validation_accuracy_the_models_card_measured(tmp_path, tiny_teacher, capsys):
    repo = ["--repo", str(tmp_path), *NAMED]
    assert main(["models", "push", str(tiny_teacher[0]), *repo]) == 0
    assert main(["models", "list", *repo]) == 0
    expected = tiny_teacher[1].best_validation_accuracy
    assert f"{expected:.4f} (val.)" in capsys.readouterr().out
