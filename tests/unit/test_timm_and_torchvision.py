"""Bring the architectures vision teams train from: timm models and torchvision's builders, from random weights or a
local safetensors checkpoint (nothing downloads here), trained, saved, served and compressed by the same stages as
the built-in CNN, with the checkpoint's own preprocessing as the run's."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from aimass.compression.profiles import read_failures, read_profiles
from aimass.compression.stage import compress
from aimass.config import load_config
from aimass.data.card import SplitsCard
from aimass.data.importing import import_dataset
from aimass.data.preprocess import InputSpec, preprocess_image
from aimass.data.versions import track_data
from aimass.errors import ConfigError
from aimass.ingestion.stage import ingest
from aimass.integrity import sha256_file
from aimass.models.architecture import Signature, build_model, split_parameters
from aimass.models.artifact import load_model
from aimass.models.checkpoint import model_preprocessing
from aimass.training.stage import train
from conftest import (TEST_LINEAGE, init_dvc_repo, save_tiny_timm_checkpoint, save_tiny_torchvision_state_dict,
                      write_digits_folder)

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
DIGITS = tuple(str(digit) for digit in range(10))


@pytest.fixture(scope="module")
def digits_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    repo = init_dvc_repo(root / "repo")
    import_dataset(write_digits_folder(root / "source", count=300, layout="uniform"), repo / "data")
    track_data(repo)
    return repo


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    return save_tiny_timm_checkpoint(tmp_path_factory.mktemp("timm") / "test-resnet")


@pytest.fixture(scope="module")
def timm_config(digits_repo, timm_checkpoint):
    return load_config("tiny", [f"data.repo_dir={digits_repo}", "model.architecture=timm:test_resnet",
                                f"model.checkpoint={timm_checkpoint}"])


@pytest.fixture(scope="module")
def timm_splits(timm_config, tmp_path_factory):
    output = tmp_path_factory.mktemp("timm-splits")
    ingest(timm_config, output)
    return output


@pytest.fixture(scope="module")
def timm_model(timm_config, timm_splits, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("timm-model") / "model"
    train(timm_config, timm_splits, model_dir, TEST_LINEAGE)
    return model_dir


def config_with(*overrides):
    return load_config("tiny", list(overrides))


# Names are checked when the configuration loads.

@pytest.mark.parametrize("architecture, suggestion", [
    ("timm:resnet1", "timm:resnet18"), ("torchvision:mobilenetv3_small", "torchvision:mobilenet_v3_small")])
def test_an_unknown_model_name_is_refused_at_load_with_close_names_suggested(architecture, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean .*{suggestion}"):
        config_with(f"model.architecture={architecture}")


def test_a_torchvision_detection_model_is_not_an_image_classifier():
    with pytest.raises(ConfigError, match="no image classifier named 'fasterrcnn_resnet50_fpn'"):
        config_with("model.architecture=torchvision:fasterrcnn_resnet50_fpn")


def test_an_unknown_distillation_student_is_refused_at_load():
    with pytest.raises(ConfigError, match="compress.student.*did you mean timm:resnet10t"):
        config_with("compress.student=timm:resnet10")


def test_a_checkpoint_for_the_built_in_cnn_is_refused():
    with pytest.raises(ConfigError, match="model.checkpoint applies to timm: and torchvision:"):
        config_with("model.checkpoint=/somewhere")


# Checkpoints: local, safetensors only.

def test_a_missing_checkpoint_is_a_clear_error_naming_the_path(tmp_path):
    config = config_with("model.architecture=timm:test_resnet", f"model.checkpoint={tmp_path / 'absent'}")
    with pytest.raises(ConfigError, match=f"model.checkpoint={tmp_path / 'absent'}: no such file or folder"):
        model_preprocessing(config.model)


def test_a_pickled_timm_checkpoint_is_refused(tmp_path):
    folder = save_tiny_timm_checkpoint(tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    torch.save({"weights": torch.zeros(1)}, folder / "pytorch_model.bin")
    config = config_with("model.architecture=timm:test_resnet", f"model.checkpoint={folder}")
    with pytest.raises(ConfigError,
                       match="no model.safetensors .*pytorch_model.bin: pickles, which aimass never loads"):
        model_preprocessing(config.model)


def test_a_pickled_torchvision_file_is_refused_with_the_conversion_to_run(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "r18.pth")
    config = config_with("model.architecture=torchvision:resnet18", f"model.checkpoint={tmp_path / 'r18.pth'}")
    conversion = r"save_file\(torch.load\('r18.pth', weights_only=True\), 'r18.safetensors'\)"
    with pytest.raises(ConfigError, match=r"r18.pth is a pickle, which aimass never loads; convert it .*" + conversion):
        model_preprocessing(config.model)


def test_a_pickle_named_safetensors_is_refused(tmp_path):
    fake = tmp_path / "weights.safetensors"
    torch.save({"fc.weight": torch.zeros(2, 2)}, fake)  # a pickle in a zip, whatever its name says
    config = config_with("model.architecture=torchvision:resnet18", f"model.checkpoint={fake}")
    with pytest.raises(ConfigError, match="weights.safetensors is not a safetensors file"):
        build_model(config.model, Signature(InputSpec(3, 32, 32, mean=(0.5,) * 3, std=(0.2,) * 3), DIGITS))


def test_a_timm_checkpoint_of_another_network_is_refused(timm_checkpoint):
    config = config_with("model.architecture=timm:resnet18", f"model.checkpoint={timm_checkpoint}")
    with pytest.raises(ConfigError, match="holds a timm test_resnet.*set model.architecture=timm:test_resnet"):
        model_preprocessing(config.model)


# timm: preprocessing, re-heading, fine-tuning, lineage, saving.

def test_the_timm_checkpoints_pretrained_cfg_is_the_runs_preprocessing(timm_splits):
    spec = InputSpec.from_dict(SplitsCard.read(timm_splits).input_spec)
    assert (spec.height, spec.width, spec.resize, spec.resample) == (24, 24, "center-crop", "bicubic")
    assert (spec.mean, spec.std, spec.crop_fraction) == ((0.5, 0.4, 0.3), (0.5, 0.6, 0.7), 0.875)
    assert spec.channels == 1 and spec.model_shape == (3, 24, 24)  # grey digits, repeated for an RGB network


def test_the_crop_is_timms_own_eval_transform(timm_checkpoint, timm_splits):
    """The same photo through aimass's preprocessing and through timm's eval transform gives the same pixels."""
    from timm.data import create_transform, resolve_data_config

    network = timm.create_model(f"local-dir:{timm_checkpoint}", pretrained=False)
    timm_transform = create_transform(**resolve_data_config(model=network), is_training=False)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (61, 90, 3), dtype=np.uint8))
    spec = InputSpec.from_dict(SplitsCard.read(timm_splits).input_spec)
    ours = preprocess_image(photo, InputSpec(3, spec.height, spec.width, spec.resize, spec.mean, spec.std,
                                             spec.resample, spec.crop_fraction)).astype(np.float32) / 255
    theirs = timm_transform(photo).numpy() * np.array(spec.std)[:, None, None] + np.array(spec.mean)[:, None, None]
    assert ours.shape == theirs.shape == (3, 24, 24)
    assert np.abs(ours - theirs).max() <= 1.5 / 255  # Pillow both ways; the rest is float rounding


def test_a_timm_checkpoint_with_other_classes_gets_a_new_head(timm_model):
    loaded = load_model(timm_model)
    assert loaded.card.class_names == DIGITS
    assert loaded.module.head.out_features == 10 and loaded.module.network.num_classes == 10


def test_a_timm_checkpoint_with_exactly_these_classes_keeps_its_head(tmp_path):
    folder = save_tiny_timm_checkpoint(tmp_path / "digits-resnet", classes=DIGITS)
    config = config_with("model.architecture=timm:test_resnet", f"model.checkpoint={folder}")
    model, _ = build_model(config.model, Signature(InputSpec(3, 24, 24, mean=(0.5,) * 3, std=(0.5,) * 3), DIGITS))
    saved = timm.create_model(f"local-dir:{folder}", pretrained=False)
    from safetensors.torch import load_file
    assert torch.equal(model.head.weight, load_file(str(folder / "model.safetensors"))["fc.weight"])
    assert model.head.weight.shape == saved.get_classifier().weight.shape


def test_the_model_card_names_the_timm_checkpoints_files_by_sha256(timm_model, timm_checkpoint):
    lineage = load_model(timm_model).card.lineage["base_checkpoint"]
    assert lineage["source"] == f"timm:test_resnet from {timm_checkpoint}" and lineage["pretrained"] is True
    assert lineage["files"] == {name: sha256_file(timm_checkpoint / name) for name in ("config.json",
                                                                                      "model.safetensors")}


def test_a_trained_timm_model_is_itself_a_timm_checkpoint(timm_model):
    config = json.loads((timm_model / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and config["label_names"] == list(DIGITS)
    assert config["pretrained_cfg"]["input_size"] == [3, 24, 24] and config["pretrained_cfg"]["crop_pct"] == 0.875
    again = load_config("tiny", ["model.architecture=timm:test_resnet", f"model.checkpoint={timm_model}"])
    recorded, spec = model_preprocessing(again.model), load_model(timm_model).card.input_spec
    assert (recorded.height, recorded.width, recorded.resize, recorded.resample, recorded.crop_fraction) == (
        spec.height, spec.width, spec.resize, spec.resample, spec.crop_fraction)
    assert (recorded.mean, recorded.std) == (spec.mean, spec.std)


def test_a_timm_model_from_random_weights_takes_the_datas_own_preprocessing(digits_repo, tmp_path):
    config = load_config("tiny", [f"data.repo_dir={digits_repo}", "model.architecture=timm:test_efficientnet"])
    assert model_preprocessing(config.model) is None
    ingest(config, tmp_path / "splits")
    spec = InputSpec.from_dict(SplitsCard.read(tmp_path / "splits").input_spec)
    model, lineage = build_model(config.model, Signature(spec, DIGITS))
    assert lineage is None and spec.model_shape == (1, 8, 8)
    assert model(torch.zeros(2, *spec.model_shape)).shape == (2, 10)


def test_the_timm_backbone_learns_at_its_own_rate_and_can_start_frozen(timm_model):
    model = load_model(timm_model).module
    backbone, head = split_parameters(model)
    assert {id(p) for p in head} == {id(p) for p in model.network.get_classifier().parameters()}
    assert len(backbone) > len(head) > 0


# torchvision: a plain state dict, re-headed; preprocessing from its weights' transforms.

@pytest.fixture(scope="module")
def torchvision_checkpoint(tmp_path_factory):
    return save_tiny_torchvision_state_dict(tmp_path_factory.mktemp("torchvision") / "mobilenet.safetensors")


def test_a_torchvision_checkpoint_takes_its_default_weights_transforms(torchvision_checkpoint):
    config = config_with("model.architecture=torchvision:mobilenet_v3_small",
                         f"model.checkpoint={torchvision_checkpoint}")
    preprocessing = model_preprocessing(config.model)
    transforms = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.transforms()
    assert (preprocessing.height, preprocessing.resize, preprocessing.crop_fraction) == (224, "center-crop", 224 / 256)
    assert preprocessing.mean == tuple(transforms.mean) and preprocessing.channels == 3


def test_a_torchvision_state_dict_is_loaded_and_re_headed(torchvision_checkpoint):
    config = config_with("model.architecture=torchvision:mobilenet_v3_small",
                         f"model.checkpoint={torchvision_checkpoint}")
    model, lineage = build_model(config.model, Signature(InputSpec(1, 32, 32, mean=(0.5,) * 3, std=(0.2,) * 3),
                                                         DIGITS))
    from safetensors.torch import load_file
    saved = load_file(str(torchvision_checkpoint))
    assert torch.equal(model.network.features[0][0].weight, saved["features.0.0.weight"])
    assert model.head.out_features == 10 and saved["classifier.3.weight"].shape[0] == 1000
    assert lineage["files"] == {torchvision_checkpoint.name: sha256_file(torchvision_checkpoint)}


def test_a_state_dict_of_another_builder_is_refused(torchvision_checkpoint):
    config = config_with("model.architecture=torchvision:resnet18", f"model.checkpoint={torchvision_checkpoint}")
    with pytest.raises(ConfigError, match="is not a state dict of torchvision's resnet18"):
        build_model(config.model, Signature(InputSpec(3, 32, 32, mean=(0.5,) * 3, std=(0.2,) * 3), DIGITS))


def test_a_builder_that_fixes_its_input_size_says_so_at_build_time():
    config = config_with("model.architecture=torchvision:vit_b_16")
    with pytest.raises(ConfigError, match="torchvision:vit_b_16 cannot take 32x32 images.*data.image_size"):
        build_model(config.model, Signature(InputSpec(3, 32, 32, mean=(0.5,) * 3, std=(0.2,) * 3), DIGITS))


def test_a_torchvision_model_from_random_weights_feeds_grey_images_to_its_three_channels(digits_repo, tmp_path):
    config = load_config("tiny", [f"data.repo_dir={digits_repo}", "model.architecture=torchvision:resnet18",
                                  "data.image_size=16"])
    ingest(config, tmp_path / "splits")
    spec = InputSpec.from_dict(SplitsCard.read(tmp_path / "splits").input_spec)
    assert spec.channels == 1 and spec.model_shape == (3, 16, 16) and len(set(spec.mean)) == 1


def test_a_trained_torchvision_model_records_its_classes_and_preprocessing(digits_repo, tmp_path):
    config = load_config("tiny", [f"data.repo_dir={digits_repo}", "model.architecture=torchvision:squeezenet1_1",
                                  "data.image_size=32", "train.steps=2"])
    ingest(config, tmp_path / "splits")
    train(config, tmp_path / "splits", tmp_path / "model", TEST_LINEAGE)
    loaded = load_model(tmp_path / "model")
    assert loaded.module.head.out_channels == 10  # squeezenet's classifier is a 1x1 convolution
    again = load_config("tiny", ["model.architecture=torchvision:squeezenet1_1",
                                 f"model.checkpoint={tmp_path / 'model'}"])
    recorded = model_preprocessing(again.model)
    assert (recorded.height, recorded.mean) == (32, loaded.card.input_spec.mean)
    rebuilt, _ = build_model(again.model, loaded.signature)
    assert torch.equal(rebuilt.head.weight, loaded.module.head.weight)  # the same classes: the head is kept


# Compression through the generic path.

@pytest.fixture(scope="module")
def timm_candidates(timm_config, timm_model, timm_splits, tmp_path_factory):
    config = timm_config.model_copy(update={"compress": timm_config.compress.model_copy(update={
        "methods": ("prune_unstructured", "prune_channels", "quantize_int8", "distill"),
        "student": "timm:test_efficientnet"})})
    output = tmp_path_factory.mktemp("timm-candidates")
    compress(config, timm_model, timm_splits, output)
    return output


def test_every_compression_technique_works_on_a_timm_model(timm_candidates):
    assert read_failures(timm_candidates) == {}
    names = {profile.name for profile in read_profiles(timm_candidates)}
    assert names == {"teacher", "prune_unstructured", "prune_channels", "quantize_int8", "distill"}


def test_channel_pruning_shrinks_a_timm_model(timm_candidates, timm_model):
    profiles = {profile.name: profile for profile in read_profiles(timm_candidates)}
    assert profiles["prune_channels"].parameters < 0.6 * profiles["teacher"].parameters


def test_the_distillation_student_is_a_smaller_timm_model(timm_candidates):
    student = load_model(timm_candidates / "distill")
    assert student.card.architecture.architecture == "timm:test_efficientnet"
    assert student.card.architecture.checkpoint is None
    profiles = {profile.name: profile for profile in read_profiles(timm_candidates)}
    assert profiles["distill"].parameters < profiles["teacher"].parameters
