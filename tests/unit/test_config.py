import pytest

from aimass.config import PROFILES, AimassConfig, load_config, valid_keys
from aimass.errors import ConfigError


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_loads_and_names_itself(profile):
    assert load_config(profile).profile == profile


def test_profiles_budget_training_in_steps_and_tiny_limits_the_data():
    tiny, quick, full = (load_config(profile) for profile in ("tiny", "quick", "full"))
    assert tiny.split.train_limit <= 5_000 and tiny.train.steps < quick.train.steps < full.train.steps


def test_override_values_are_parsed_to_the_field_type():
    config = load_config("quick", ["train.epochs=7", "train.compile=true", "model.channels=[64,128,256]"])
    assert (config.train.epochs, config.train.compile, config.model.channels) == (7, True, (64, 128, 256))


def test_unknown_key_is_rejected_with_the_list_of_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown configuration key 'train.epoch'.*train\.epochs"):
        load_config("quick", ["train.epoch=3"])


def test_out_of_range_value_is_rejected_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.batch_size: .*greater than or equal to 1"):
        load_config("quick", ["train.batch_size=0"])


def test_override_without_equals_sign_is_rejected_with_an_example():
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        load_config("quick", ["train.epochs"])


def test_unknown_profile_lists_the_profiles():
    with pytest.raises(ConfigError, match="tiny, quick, full"):
        load_config("huge")


def test_profile_cannot_be_changed_through_an_override():
    assert "profile" not in valid_keys()


def test_gpu_node_selector_must_be_key_equals_value():
    with pytest.raises(ConfigError, match="gpu_node_selector"):
        load_config("full", ["kubernetes.gpu_node_selector=no-equals-sign"])


def test_config_survives_the_json_round_trip_through_the_pipeline():
    config = load_config("tiny", ["train.epochs=2"])
    assert AimassConfig.from_json(config.to_json()) == config


def test_config_json_with_an_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="unknown key 'train.typo'"):
        AimassConfig.from_json('{"train": {"typo": 1}}')


def test_an_architecture_is_the_built_in_cnn_or_a_hugging_face_checkpoint():
    with pytest.raises(ConfigError, match="model.architecture"):
        load_config("tiny", ["model.architecture=resnet50"])


def test_a_checkpoint_folder_given_relative_to_the_working_directory_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "my-checkpoint").mkdir()
    monkeypatch.chdir(tmp_path)
    config = load_config("tiny", ["model.architecture=hf:my-checkpoint"])
    assert config.model.architecture == f"hf:{tmp_path / 'my-checkpoint'}"


def test_a_frozen_backbone_is_refused_with_several_training_processes():
    with pytest.raises(ConfigError, match="frozen_backbone_epochs needs train.nproc=1"):
        load_config("tiny", ["train.frozen_backbone_epochs=1", "train.nproc=2"])


def test_the_student_size_is_checked_only_when_a_student_is_distilled():
    lean = ["model.channels=[16,32,64]", "model.hidden_units=128"]
    with pytest.raises(ConfigError, match="must be smaller than the teacher"):
        load_config("tiny", lean)
    assert load_config("tiny", [*lean, "compress.methods=[quantize_int8]"]).model.channels == (16, 32, 64)
