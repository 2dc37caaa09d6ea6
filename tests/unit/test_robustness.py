"""Robustness and calibration (aimass/models/robustness.py): the corruptions, the calibration error, and what the
gate, evaluate and compress make of them."""
import math

import numpy as np
import pytest
import torch

from aimass.config import GateConfig, load_config
from aimass.errors import ConfigError
from aimass.evaluation.metrics import Evaluation
from aimass.gates import GateBaselines, decide_gate
from aimass.models.robustness import (CORRUPTIONS, corrupt, corruption_accuracies, evenly_spaced,
                                      expected_calibration_error)

NO_PRODUCTION = GateBaselines(majority_accuracy=0.1)


@pytest.fixture(scope="module")
def images(tiny_splits_dir):
    from aimass.data.arrays import load_image_sets

    test = load_image_sets(tiny_splits_dir)[0]["test"]
    return torch.from_numpy(np.array(test.images[:64]))


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_each_corruption_keeps_the_images_shape_and_type_and_grows_with_its_severity(images, corruption):
    distances = []
    for severity in (1, 3, 5):
        corrupted = corrupt(images, corruption, severity, torch.Generator().manual_seed(0))
        assert corrupted.shape == images.shape and corrupted.dtype == torch.uint8
        distances.append(float((corrupted.float() - images.float()).abs().mean()))
    assert 0 < distances[0] < distances[1] < distances[2], distances


def test_colour_images_are_corrupted_too():
    colour = torch.randint(0, 256, (4, 3, 20, 24), dtype=torch.uint8)
    for corruption in CORRUPTIONS:
        assert corrupt(colour, corruption, 3, torch.Generator().manual_seed(0)).shape == colour.shape


def test_the_same_seed_gives_every_model_the_same_noisy_images(images):
    first = corrupt(images, "gaussian_noise", 3, torch.Generator().manual_seed(7))
    second = corrupt(images, "gaussian_noise", 3, torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_a_model_that_answers_well_loses_accuracy_as_the_corruption_grows(tiny_teacher, tiny_splits_dir):
    from aimass.data.arrays import load_image_sets
    from aimass.models.architecture import predict_probabilities
    from aimass.models.artifact import load_model

    loaded = load_model(tiny_teacher[0])
    test = load_image_sets(tiny_splits_dir)[0]["test"]
    rows = evenly_spaced(300, len(test.labels))
    accuracies = corruption_accuracies(lambda batch: predict_probabilities(loaded.module, batch,
                                                                           loaded.signature.input_spec),
                                       np.asarray(test.images[rows]), test.labels[rows], ("gaussian_noise",), (1, 5))
    clean = float((predict_probabilities(loaded.module, np.asarray(test.images[rows]), loaded.signature.input_spec)
                   .argmax(1) == test.labels[rows]).mean())
    assert accuracies["gaussian_noise"][5] < accuracies["gaussian_noise"][1] <= clean + 0.02


def test_a_model_whose_confidence_matches_its_accuracy_has_no_calibration_error():
    labels = np.array([0, 0, 1, 1])
    confident_and_right = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(confident_and_right, labels) == pytest.approx(0.0)


def test_an_overconfident_model_has_the_gap_between_its_confidence_and_accuracy_as_its_error():
    labels = np.array([0, 0, 1, 1])
    ninety_percent_sure_half_right = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(ninety_percent_sure_half_right, labels) == pytest.approx(0.4)


def scored(corruption_accuracy=0.7, calibration_error=0.05):
    return Evaluation(accuracy=0.9, macro_f1=0.9, roc_auc_ovr=0.99, per_class=[], confusion=[],
                      corruption_accuracy=corruption_accuracy, calibration_error=calibration_error)


def test_the_gate_rejects_a_model_below_its_corruption_accuracy_minimum_saying_so():
    decision = decide_gate(scored(corruption_accuracy=0.6), GateConfig(min_corruption_accuracy=0.65), NO_PRODUCTION)
    assert not decision.passed
    assert decision.reasons[0] == "accuracy under corruptions (gate): 0.6000 is below the minimum 0.6500"


def test_the_gate_rejects_a_model_above_its_calibration_error_maximum_saying_so():
    decision = decide_gate(scored(calibration_error=0.2), GateConfig(max_calibration_error=0.1), NO_PRODUCTION)
    assert not decision.passed
    assert "calibration error (gate): 0.2000 is above the maximum 0.1000" in decision.reasons


def test_a_threshold_on_a_figure_that_was_not_measured_rejects_rather_than_passing_unseen():
    decision = decide_gate(scored(corruption_accuracy=math.nan), GateConfig(min_corruption_accuracy=0.5),
                           NO_PRODUCTION)
    assert not decision.passed
    assert "accuracy under corruptions (gate): not measured is below the minimum 0.5000" in decision.reasons


def test_without_thresholds_the_figures_are_reported_and_judge_nothing():
    assert decide_gate(scored(corruption_accuracy=0.1, calibration_error=0.9), GateConfig(), NO_PRODUCTION).passed


@pytest.mark.parametrize("setting, message", [
    ("evaluate.severities=[0,3]", "evaluate.severities.0: Input should be greater than or equal to 1"),
    ("evaluate.severities=[6]", "evaluate.severities.0: Input should be less than or equal to 5"),
    ("evaluate.corruptions=[fog]", "evaluate.corruptions.0: Input should be 'gaussian_noise'"),
    ("gate.max_calibration_error=1.5", "gate.max_calibration_error: Input should be less than or equal to 1"),
])
def test_a_severity_or_corruption_outside_its_range_is_refused_when_the_configuration_loads(setting, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [setting])
