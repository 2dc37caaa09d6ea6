"""Per-image statistics: the difference hash that finds near duplicates, computed without torch."""
import numpy as np
import torch
import torch.nn.functional as F

from aimass.data.profile import difference_hashes


def reference_hashes(images: np.ndarray) -> np.ndarray:
    """dHash as torch computes its thumbnail: adaptive average pooling of the grey image to 8x9."""
    grey = torch.from_numpy(images).double().mean(dim=1, keepdim=True)
    thumbnail = F.adaptive_avg_pool2d(grey, (8, 9)).squeeze(1)
    bits = (thumbnail[:, :, 1:] > thumbnail[:, :, :-1]).reshape(len(images), 64).numpy()
    return np.packbits(bits, axis=1, bitorder="little").view(np.uint64).ravel()


def test_the_hash_of_an_image_whose_size_is_a_multiple_of_the_grid_compares_cell_means():
    images = np.random.default_rng(0).integers(0, 256, (4, 1, 16, 18), dtype=np.uint8)
    means = images[:, 0].reshape(4, 8, 2, 9, 2).mean(axis=(2, 4))
    expected = np.packbits((means[:, :, 1:] > means[:, :, :-1]).reshape(4, 64), axis=1,
                           bitorder="little").view(np.uint64).ravel()
    assert np.array_equal(difference_hashes(images), expected)


def test_cells_of_sizes_that_are_not_multiples_overlap_as_adaptive_average_pooling_does():
    images = np.random.default_rng(1).integers(0, 256, (32, 3, 37, 53), dtype=np.uint8)
    assert np.array_equal(difference_hashes(images), reference_hashes(images))


def test_a_grey_image_hashes_the_same_with_one_channel_or_three():
    grey = np.random.default_rng(2).integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
    assert np.array_equal(difference_hashes(grey), difference_hashes(np.repeat(grey, 3, axis=1)))


def test_a_uniform_image_has_no_brighter_cell():
    assert difference_hashes(np.full((2, 1, 28, 28), 128, dtype=np.uint8)).tolist() == [0, 0]
