"""Bring your own architecture: a Hugging Face image-classification checkpoint, saved with save_pretrained into a
folder (the Hub is not reachable here), trained, saved, served and compressed by the same stages as the CNN."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from aimass.compression.profiles import read_failures, read_profiles
from aimass.compression.stage import compress
from aimass.ingestion.stage import ingest
from aimass.training.loop import train_classifier
from aimass.training.stage import train
from aimass.config import load_config
from aimass.data.arrays import load_image_sets
from aimass.data.card import SplitsCard, read_index
from aimass.data.decoding import decode_data_version
from aimass.data.importing import import_dataset
from aimass.data.preprocess import decode_uploads, normalize, to_model_input
from aimass.data.versions import track_data
from aimass.errors import ConfigError
from aimass.integrity import sha256_file
from aimass.models.architecture import Signature, split_parameters
from aimass.models.artifact import load_model
from aimass.data.image_processor import read_preprocessing
from aimass.models.checkpoint import checkpoint_folder
from aimass.models.huggingface import HuggingFaceClassifier, from_checkpoint
from conftest import TEST_LINEAGE, init_dvc_repo, save_tiny_resnet, write_digits_folder

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_resnet(tmp_path_factory.mktemp("hf") / "tiny-resnet")


@pytest.fixture(scope="module")
def grey_digits_repo(tmp_path_factory):
    """scikit-learn's digits as 8x8 grey PNG files, imported and pinned with DVC."""
    root = tmp_path_factory.mktemp("grey-digits")
    repo = init_dvc_repo(root / "repo")
    import_dataset(write_digits_folder(root / "source", count=400, layout="uniform"), repo / "data")
    track_data(repo)
    return repo


@pytest.fixture(scope="module")
def hf_config(grey_digits_repo, checkpoint):
    return load_config("tiny", [f"data.repo_dir={grey_digits_repo}", f"model.architecture=hf:{checkpoint}"])


@pytest.fixture(scope="module")
def hf_splits(hf_config, tmp_path_factory):
    output = tmp_path_factory.mktemp("hf-splits")
    ingest(hf_config, output)
    return output


@pytest.fixture(scope="module")
def hf_model(hf_config, hf_splits, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("hf-model") / "model"
    train(hf_config, hf_splits, model_dir, TEST_LINEAGE)
    return model_dir


def test_the_checkpoints_image_processor_sets_the_input_size_filter_and_scaling(hf_splits):
    spec = SplitsCard.read(hf_splits).input_spec
    assert (spec["height"], spec["width"], spec["resample"]) == (32, 32, "bicubic")
    assert spec["mean"] == [0.5, 0.4, 0.3] and spec["std"] == [0.5, 0.6, 0.7]
    assert spec["channels"] == 1  # grey images are stored as such and repeated for the three-channel network


def test_one_image_gives_the_same_tensor_at_training_and_at_serving_time(hf_config, hf_splits, grey_digits_repo):
    data_dir = grey_digits_repo / "data"
    decoded = decode_data_version(data_dir, "a" * 32 + ".dir", hf_config.data, grey_digits_repo / "scratch",
                                  read_preprocessing(checkpoint_folder(hf_config.model.architecture)))
    spec = Signature.of_splits(SplitsCard.read(hf_splits)).input_spec
    train_rows = [row for row in read_index(data_dir) if row["split"] == "train"]
    row = 7
    stored = np.load(decoded / "train-images.npy", mmap_mode="r")[row:row + 1]
    at_training = normalize(torch.from_numpy(np.array(stored)).float().div_(255.0), spec)  # as train's batches
    upload = (data_dir / train_rows[row]["file"]).read_bytes()
    at_serving = to_model_input(decode_uploads((upload,), spec), spec)  # as the server's
    assert at_training.shape == (1, 3, 32, 32)
    assert torch.equal(at_training, at_serving)


def test_the_shared_preprocessing_matches_the_checkpoints_own_image_processor(checkpoint, hf_splits, grey_digits_repo):
    spec = Signature.of_splits(SplitsCard.read(hf_splits)).input_spec
    image_file = grey_digits_repo / "data" / read_index(grey_digits_repo / "data")[0]["file"]
    processor = transformers.AutoImageProcessor.from_pretrained(checkpoint)
    theirs = processor(Image.open(image_file).convert("RGB"), return_tensors="pt")["pixel_values"]
    ours = to_model_input(decode_uploads((image_file.read_bytes(),), spec), spec)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_the_head_is_replaced_for_the_data_sets_classes(hf_model):
    loaded = load_model(hf_model)
    network = loaded.module.network
    assert network.config.num_labels == 10
    assert [network.config.id2label[index] for index in range(10)] == list(loaded.signature.class_names)
    assert loaded.module(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_the_model_card_names_the_exact_pretrained_files_by_sha256(hf_model, checkpoint):
    base = load_model(hf_model).card.lineage["base_checkpoint"]
    assert base["source"] == f"hf:{checkpoint}" and base["pretrained"] is True
    assert base["files"]["model.safetensors"] == sha256_file(checkpoint / "model.safetensors")
    assert set(base["files"]) == {"config.json", "model.safetensors", "preprocessor_config.json"}


def test_a_trained_model_is_itself_a_checkpoint_to_fine_tune_from(hf_model):
    loaded = load_model(hf_model)
    again, lineage = from_checkpoint(f"hf:{hf_model}", loaded.signature.class_names, 3)
    inputs = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():  # same classes: the trained head is kept, not reset
        assert torch.allclose(again.eval()(inputs), loaded.module(inputs), atol=1e-5)
    assert lineage["pretrained"] is True


def test_weights_are_read_from_safetensors_only(hf_model):
    assert {path.suffix for path in hf_model.iterdir()} == {".json", ".safetensors"}


def test_a_folder_with_only_a_config_starts_from_random_weights(checkpoint, tmp_path):
    (tmp_path / "config.json").write_bytes((checkpoint / "config.json").read_bytes())
    model, lineage = from_checkpoint(f"hf:{tmp_path}", tuple("ab"), 3)
    assert lineage["pretrained"] is False and set(lineage["files"]) == {"config.json"}
    assert isinstance(model, HuggingFaceClassifier)


def test_a_missing_checkpoint_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        checkpoint_folder(f"hf:{tmp_path}/nothing-here")


def test_an_image_processor_scale_aimass_cannot_reproduce_is_refused(checkpoint, tmp_path):
    for name in ("config.json", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((checkpoint / name).read_bytes())
    settings = json.loads((tmp_path / "preprocessor_config.json").read_text())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**settings, "rescale_factor": 1 / 127.5}))
    with pytest.raises(ConfigError, match="rescale_factor"):
        read_preprocessing(tmp_path)


@pytest.fixture(scope="module")
def hf_data(hf_splits):
    splits, _ = load_image_sets(hf_splits)
    return splits, Signature.of_splits(SplitsCard.read(hf_splits))


def test_frozen_backbone_epochs_train_the_head_alone(hf_config, hf_data):
    (splits, signature) = hf_data
    settings = hf_config.model_copy(update={"train": hf_config.train.model_copy(
        update={"steps": 2, "batch_size": 32, "frozen_backbone_epochs": 1})})
    before, _ = from_checkpoint(hf_config.model.architecture, signature.class_names, 3)
    model, _ = train_classifier(settings, splits["train"], splits["validation"], signature)
    backbone_before, head_before = split_parameters(before)
    backbone_after, head_after = split_parameters(model)
    assert all(torch.equal(a, b) for a, b in zip(backbone_before, backbone_after))
    assert not all(torch.equal(a, b) for a, b in zip(head_before, head_after))


def test_the_backbone_learns_at_its_own_rate(hf_config, hf_data):
    (splits, signature) = hf_data
    settings = hf_config.model_copy(update={"train": hf_config.train.model_copy(
        update={"steps": 2, "batch_size": 32, "backbone_learning_rate_factor": 0.0, "weight_decay": 0.0})})
    before, _ = from_checkpoint(hf_config.model.architecture, signature.class_names, 3)
    model, _ = train_classifier(settings, splits["train"], splits["validation"], signature)
    weights_before, weights_after = split_parameters(before)[0], split_parameters(model)[0]
    assert all(torch.equal(a, b) for a, b in zip(weights_before, weights_after))


@pytest.fixture(scope="module")
def hf_candidates(hf_config, hf_model, hf_splits, tmp_path_factory):
    config = hf_config.model_copy(update={"compress": hf_config.compress.model_copy(update={
        "methods": ("prune_channels", "quantize_int8", "distill")})})
    output = tmp_path_factory.mktemp("hf-candidates") / "candidates"
    compress(config, hf_model, hf_splits, output)
    return output


def test_every_compression_technique_works_on_a_checkpoint_architecture(hf_candidates):
    assert read_failures(hf_candidates) == {}
    assert [profile.name for profile in read_profiles(hf_candidates)] == ["teacher", "prune_channels",
                                                                           "quantize_int8", "distill"]


def test_channel_pruning_follows_the_residual_connections_of_a_checkpoint(hf_candidates, hf_model):
    profiles = {profile.name: profile for profile in read_profiles(hf_candidates)}
    assert profiles["prune_channels"].parameters < 0.5 * profiles["teacher"].parameters
    pruned = load_model(hf_candidates / "prune_channels")
    assert pruned.module(torch.zeros(3, 3, 32, 32)).shape == (3, 10)


def test_the_distillation_student_can_be_a_hugging_face_config(hf_config, hf_model, hf_splits, tmp_path, checkpoint):
    student = tmp_path / "student"
    student.mkdir()
    config = json.loads((checkpoint / "config.json").read_text())
    (student / "config.json").write_text(json.dumps({**config, "hidden_sizes": [8, 16, 32], "embedding_size": 8}))
    settings = hf_config.model_copy(update={"compress": hf_config.compress.model_copy(update={
        "methods": ("distill",), "student": f"hf:{student}"})})
    compress(settings, hf_model, hf_splits, tmp_path / "candidates")
    distilled = load_model(tmp_path / "candidates" / "distill")
    assert isinstance(distilled.module, HuggingFaceClassifier)
    assert distilled.module.network.config.hidden_sizes == [8, 16, 32]


def test_channel_pruning_removes_whole_attention_heads_of_a_vision_transformer():
    from aimass.compression.pruning import prune_channels
    from aimass.data.preprocess import InputSpec

    config = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, num_labels=3)
    vit = HuggingFaceClassifier(transformers.ViTForImageClassification(config)).eval()
    signature = Signature(InputSpec(3, 16, 16, mean=(0.5,) * 3, std=(0.5,) * 3), ("a", "b", "c"))
    pruned, shape = prune_channels(vit, 0.5, signature)
    attention = [module for module in pruned.modules() if hasattr(module, "q_proj")]
    assert shape is None and [module.num_attention_heads for module in attention] == [2, 2]
    assert all(module.q_proj.out_features == 2 * module.head_dim for module in attention)
    assert pruned(torch.randn(2, 3, 16, 16)).shape == (2, 3)


def test_a_convnext_processors_crop_pct_is_reproduced(tmp_path):
    """ConvNeXT's processor resizes the shorter side to shortest_edge / crop_pct, then crops: the same pixels here.
    (Where a margin is odd it puts the extra pixel at the other edge than timm and torchvision, whose rounding aimass
    follows: a one-pixel shift; this photo's margins are even.)"""
    from aimass.data.image_processor import apply_preprocessing
    from aimass.data.preprocess import InputSpec

    folder = save_tiny_resnet(tmp_path / "convnext-style")
    (folder / "preprocessor_config.json").unlink()
    processor = transformers.ConvNextImageProcessorPil(size={"shortest_edge": 28}, crop_pct=0.875, resample=3,
                                                       image_mean=[0.5, 0.4, 0.3], image_std=[0.5, 0.6, 0.7])
    processor.save_pretrained(folder)
    spec = apply_preprocessing(InputSpec(3, 8, 8), read_preprocessing(folder))
    assert (spec.height, spec.resize, spec.crop_fraction) == (28, "center-crop", 0.875)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    ours = to_model_input(decode_uploads((buffer.getvalue(),), spec), spec)
    theirs = processor(photo, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-5)
