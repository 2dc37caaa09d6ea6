import subprocess
import sys

import numpy as np
import pytest
import torch

from aimass.training.curves import training_curves_html

from aimass.training.devices import configure_cpu_threads

from aimass.training.loop import train_classifier
from aimass.config import load_config
from aimass.data.arrays import load_image_sets
from aimass.errors import ArtifactIntegrityError
from aimass.data.preprocess import to_model_input
from aimass.models.artifact import load_model
from conftest import FORBID_UNPICKLING, TEST_LINEAGE



@pytest.fixture(scope="module")
def tiny_splits(tiny_splits_dir):
    splits, _ = load_image_sets(tiny_splits_dir)
    return splits


@pytest.fixture(scope="module")
def trained(tiny_teacher):
    return tiny_teacher


def test_one_tiny_epoch_learns_far_better_than_chance(trained):
    _, result = trained
    assert result.best_validation_accuracy > 0.5  # chance is 0.1


def test_metrics_record_losses_and_throughput(trained):
    _, result = trained
    record = result.history[0]
    assert record.train_loss > 0 and record.validation_loss > 0 and result.images_per_second > 0


def test_model_artifact_is_safetensors_with_card_and_manifest(trained):
    model_dir, _ = trained
    assert {path.name for path in model_dir.iterdir()} == {"model.safetensors", "model.json", "manifest.json"}


def test_model_card_records_lineage_and_resolved_config(trained, tiny_config):
    card = load_model(trained[0]).card
    assert card.lineage == TEST_LINEAGE.to_dict()
    assert card.config["train"]["steps"] == tiny_config.train.steps


def test_model_card_carries_the_data_sets_classes_input_and_training_profile(trained):
    card = load_model(trained[0]).card
    assert card.class_names[:2] == ("T-shirt/top", "Trouser") and len(card.class_names) == 10
    spec = card.input_spec
    assert spec.channels == 1 and (spec.height, spec.width) == (28, 28)
    assert list(spec.mean) == [pytest.approx(0.286, abs=0.01)]
    assert card.dataset.name == "fashion-mnist" and card.data_profile["images"] == 2_700


def test_a_step_budget_cuts_the_last_epoch_short(tiny_splits, tiny_signature):
    subset = tiny_splits["train"].take(np.arange(320))  # 10 steps of 32 per epoch
    config = load_config("tiny", ["train.batch_size=32", "train.steps=25", "train.early_stopping=false"])
    _, result = train_classifier(config, subset, tiny_splits["validation"], tiny_signature)
    assert result.epochs_run == 3
    assert [round(r.images_per_second * r.train_seconds) for r in result.history] == [320, 320, 160]


@pytest.mark.parametrize("setting, precision", [("false", "float32"), ("true", "bfloat16 autocast, channels-last")])
def test_the_fast_path_setting_decides_the_precision_the_model_card_records(tiny_splits, tiny_signature, setting,
                                                                              precision):
    subset = tiny_splits["train"].take(np.arange(64))
    config = load_config("tiny", ["train.batch_size=32", "train.steps=2", f"train.fast_path={setting}"])
    model, result = train_classifier(config, subset, tiny_splits["validation"], tiny_signature)
    assert result.precision == precision
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())  # autocast computes, not stores
    assert model[0].weight.is_contiguous()  # handed back in the default layout, whatever it trained in


def test_model_reloads_in_a_fresh_process_without_pickle(trained, tiny_splits):
    script = (
        "import pickle, sys, numpy as np, torch\n"
        + FORBID_UNPICKLING +
        "from aimass.models.artifact import load_model\n"
        "from aimass.models.architecture import predict_probabilities\n"
        "loaded = load_model(__import__('pathlib').Path(sys.argv[1]))\n"
        "images = np.load(sys.argv[2], allow_pickle=False)[:8]\n"
        "probabilities = predict_probabilities(loaded.module, images, loaded.signature.input_spec)\n"
        "print(' '.join(map(str, probabilities.argmax(1).tolist())))\n"
    )
    test_images = trained[0].parent / "probe-images.npy"
    np.save(test_images, tiny_splits["test"].images[:8])
    output = subprocess.run([sys.executable, "-c", script, str(trained[0]), str(test_images)],
                            capture_output=True, text=True, check=True).stdout.split()
    from aimass.models.architecture import predict_probabilities

    loaded = load_model(trained[0])
    expected = predict_probabilities(loaded.module, tiny_splits["test"].images[:8], loaded.signature.input_spec)
    assert list(map(int, output)) == expected.argmax(1).tolist()


def test_a_corrupted_weights_file_is_refused(trained, tmp_path):
    import shutil

    model_dir = shutil.copytree(trained[0], tmp_path / "model")
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="model.safetensors is corrupted"):
        load_model(model_dir)


def test_same_seed_gives_identical_weights(tiny_config, tiny_splits, tiny_signature):
    subset = tiny_splits["train"].take(np.arange(256))
    config = load_config("tiny", ["train.batch_size=32"])
    first, _ = train_classifier(config, subset, tiny_splits["validation"], tiny_signature)
    second, _ = train_classifier(config, subset, tiny_splits["validation"], tiny_signature)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_early_stopping_ends_the_run_and_keeps_the_best_epoch(tiny_splits, tiny_signature):
    # A learning rate this large diverges after the first epochs, so validation accuracy stops improving.
    config = load_config("tiny", ["train.steps=null", "train.epochs=6", "train.early_stopping_steps=4",
                                  "train.learning_rate=8", "train.batch_size=128"])
    subset = tiny_splits["train"].take(np.arange(512))  # 4 steps an epoch: the patience is one epoch
    _, result = train_classifier(config, subset, tiny_splits["validation"], tiny_signature)
    assert result.stopped_early and result.epochs_run < 6
    assert result.best_validation_accuracy == max(r.validation_accuracy for r in result.history)
    assert result.epochs_run == max(result.best_epoch + 1, 2)  # not before step 5, the end of the warm-up


def test_on_a_data_set_of_one_batch_training_never_stops_inside_the_warm_up(tiny_splits, tiny_signature):
    """An epoch of one step: patience counted in epochs stopped such runs after three steps, the learning rate still
    rising. Counted in steps (by default a quarter of the 40-step budget: 10), the run goes past the warm-up's 8
    steps and stops only 10 steps after its best validation."""
    config = load_config("tiny", ["train.steps=40", "train.batch_size=64", "train.learning_rate=8"])
    subset = tiny_splits["train"].take(np.arange(64))
    _, result = train_classifier(config, subset, tiny_splits["validation"], tiny_signature)
    steps = [record.step for record in result.history]
    assert steps == list(range(1, len(steps) + 1))  # one step an epoch, validated after each
    assert result.stopped_early and steps[-1] > 8
    assert steps[-1] - result.best_step >= 10


def test_a_patience_in_epochs_is_refused_naming_its_replacement():
    from aimass.errors import ConfigError

    with pytest.raises(ConfigError, match="train.early_stopping_patience is gone: it counted epochs.*"
                                          "train.early_stopping_steps"):
        load_config("tiny", ["train.early_stopping_patience=2"])


def test_on_the_fly_augmentation_applies_the_policy_to_each_batch(tiny_splits, tiny_signature):
    from aimass.training.batches import batch_source

    flip_only = ["augment.on_the_fly=true", "augment.policy.horizontal_flip.p=1"] + [
        f"augment.policy.{name}.p=0" for name in ("rotation", "scale", "translate", "gaussian_noise", "random_erasing")]
    spec = tiny_signature.input_spec
    batches = batch_source(load_config("tiny", flip_only), tiny_splits["train"], torch.device("cpu"), spec)
    index = torch.arange(4)
    expected = to_model_input(tiny_splits["train"].images[:4], spec).flip(-1)
    assert torch.allclose(batches(index), expected)


def test_cpu_threads_default_to_the_cpus_this_process_may_use():
    import os

    assert configure_cpu_threads(0) == len(os.sched_getaffinity(0))


def test_training_curves_embed_their_picture(trained):
    html = training_curves_html(trained[1].history)
    assert "data:image/png;base64," in html and "<script" not in html
