import numpy as np
import pytest
import torch

from aimass.augmentation.policy import augment_images
from aimass.augmentation.stage import augment, expand_training_set
from aimass.config import AugmentPolicy, load_config
from aimass.data.arrays import ImageSet, load_image_sets
from aimass.errors import ConfigError

CPU = torch.device("cpu")
ALL_OFF = {name: {"p": 0.0} for name in AugmentPolicy.model_fields}


def only(transform: str, **settings) -> AugmentPolicy:
    return AugmentPolicy.model_validate({**ALL_OFF, transform: {"p": 1.0, **settings}})


@pytest.fixture(scope="module")
def images(tiny_splits_dir):
    return load_image_sets(tiny_splits_dir)[0]["train"].images[:64]


def test_horizontal_flip_mirrors_every_image(images):
    assert np.array_equal(augment_images(images, only("horizontal_flip"), 0, CPU), images[..., ::-1])


def test_random_erasing_zeroes_one_rectangle_inside_the_area_bounds(images):
    erased = augment_images(images, only("random_erasing", min_area=0.05, max_area=0.1), 0, CPU)
    for before, after in zip(images[:, 0], erased[:, 0]):
        rows, columns = np.nonzero(before != after)
        assert np.all(after[rows, columns] == 0)
        if len(rows):
            box_area = (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1)
            assert box_area <= 0.1 * 28 * 28 + 28  # +one row/column of rounding


def test_rotation_moves_pixels_but_keeps_the_background_black(images):
    rotated = augment_images(images, only("rotation", degrees=30), 0, CPU)
    assert not np.array_equal(rotated, images) and rotated[:, 0, 0, 0].max() <= int(images[:, 0, 0, 0].max()) + 1


def test_gaussian_noise_stays_within_a_few_standard_deviations(images):
    noisy = augment_images(images, only("gaussian_noise", std=0.02), 0, CPU).astype(int)
    difference = np.abs(noisy - images.astype(int))
    assert difference.max() > 0 and difference.max() <= 0.02 * 255 * 6


def test_disabled_policy_returns_the_images_unchanged(images):
    assert np.array_equal(augment_images(images, AugmentPolicy.model_validate(ALL_OFF), 0, CPU), images)


def test_same_seed_same_output_other_seed_other_output(images):
    policy = load_config("tiny").augment.policy
    first, again = augment_images(images, policy, 7, CPU), augment_images(images, policy, 7, CPU)
    assert np.array_equal(first, again) and not np.array_equal(first, augment_images(images, policy, 8, CPU))


def test_augmentation_leaves_the_callers_random_state_alone(images):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    augment_images(images, load_config("tiny").augment.policy, 0, CPU)
    assert torch.equal(torch.rand(3), expected)


def test_expansion_appends_augmented_copies_with_their_labels():
    train = ImageSet(np.full((10, 1, 28, 28), 100, np.uint8), np.arange(10, dtype=np.uint8))
    expanded, _ = expand_training_set(train, load_config("tiny").augment.policy, 2, 0, CPU, 4)
    assert len(expanded) == 30 and np.array_equal(expanded.labels, np.tile(np.arange(10), 3))
    assert np.array_equal(expanded.images[:10], train.images)


def test_augment_stage_writes_the_training_set_and_a_preview(tiny_config, tiny_splits_dir, tmp_path):
    config = load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}", "augment.expansion=1"])
    result, preview = augment(config, tiny_splits_dir, tmp_path / "out")
    written, manifest = load_image_sets(tmp_path / "out")
    assert len(written["train"]) == 2 * result.original_images and manifest["data_md5"]
    assert preview.count("data:image/png;base64,") == 1


def test_an_unknown_transform_is_rejected_naming_the_key():
    with pytest.raises(ConfigError, match="unknown configuration key 'augment.policy.shear.p'"):
        load_config("tiny", ["augment.policy.shear.p=0.5"])


@pytest.mark.parametrize("override, key", [
    ("augment.policy.rotation.degrees=90", "augment.policy.rotation.degrees"),
    ("augment.policy.gaussian_noise.p=1.5", "augment.policy.gaussian_noise.p"),
    ("augment.policy.scale.min_factor=0.1", "augment.policy.scale.min_factor"),
])
def test_out_of_range_magnitudes_are_rejected_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("tiny", [override])


def test_with_no_copies_and_no_on_the_fly_policy_the_stage_says_augmentation_is_off(tiny_config, tiny_splits_dir,
                                                                                   tmp_path):
    config = load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}", "augment.expansion=0",
                                  "augment.on_the_fly=false"])
    result, page = augment(config, tiny_splits_dir, tmp_path / "out")
    written, _ = load_image_sets(tmp_path / "out")
    assert written == {} and result.added_images == 0
    assert "Augmentation off" in page and "data:image/png" not in page


def test_with_an_on_the_fly_policy_the_stage_previews_it_without_adding_images(tiny_config, tiny_splits_dir,
                                                                             tmp_path):
    config = load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}", "augment.expansion=0",
                                  "augment.on_the_fly=true"])
    result, page = augment(config, tiny_splits_dir, tmp_path / "out")
    assert load_image_sets(tmp_path / "out")[0] == {} and result.added_images == 0
    assert page.count("data:image/png;base64,") == 1
