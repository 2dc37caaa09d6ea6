"""How the near-duplicate check's radius and pixel threshold were chosen (validation.near_duplicate_*): on
Fashion-MNIST's 10,000 test images against its 60,000 training images, the share each radius pairs with some training
image by dHash alone and once the pixel check agrees, the search time, and how many of 300 training images
re-encoded into the test set (as photos: enlarged, saved as JPEG at another size and quality, preprocessed back) each
setting finds. Distinct images should not match; copies should.

    python bench/near_duplicates.py
"""
import gzip
import io
import time

import numpy as np
from PIL import Image

from aimass.data.fashion_mnist import DEFAULT_SOURCE_DIR
from aimass.data.near_duplicates import nearest_within
from aimass.data.profile import difference_hashes
from aimass.validation.leaks import pixel_difference

PLANTED = 300
THRESHOLD = 2.0  # validation.near_duplicate_max_pixel_difference


def idx_images(name: str) -> np.ndarray:
    raw = gzip.open(DEFAULT_SOURCE_DIR / name).read()
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(-1, 1, 28, 28)


def photo_pairs(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(each image as its 112-pixel photo preprocessed to 28, a JPEG re-encoding of that photo preprocessed to 28)."""
    rng = np.random.default_rng(seed)
    originals, copies = [], []
    for image in images[:, 0]:
        photo = Image.fromarray(image).resize((112, 112), Image.BICUBIC)
        encoded = io.BytesIO()
        photo.resize((int(rng.choice([84, 96, 128])),) * 2, Image.BICUBIC).save(
            encoded, format="JPEG", quality=int(rng.choice([40, 60, 80])))
        originals.append(np.asarray(photo.resize((28, 28), Image.BILINEAR)))
        copies.append(np.asarray(Image.open(encoded).convert("L").resize((28, 28), Image.BILINEAR)))
    return np.stack(originals)[:, None], np.stack(copies)[:, None]


def confirmed(queries: np.ndarray, reference: np.ndarray, match: np.ndarray) -> np.ndarray:
    return np.array([row >= 0 and pixel_difference(query, reference[row]) <= THRESHOLD
                     for query, row in zip(queries, match)])


def main() -> None:
    train, test = idx_images("train-images-idx3-ubyte.gz"), idx_images("t10k-images-idx3-ubyte.gz")
    train_hashes, test_hashes = difference_hashes(train), difference_hashes(test)
    originals, copies = photo_pairs(train[:PLANTED])
    planted_train = np.concatenate([originals, train[PLANTED:]])
    planted_hashes = np.concatenate([difference_hashes(originals), train_hashes[PLANTED:]])
    copy_hashes = difference_hashes(copies)
    print("| radius (bits) | test images matched by hash | ... and by pixels | search | planted copies found by "
          "hash | ... and by pixels |")
    print("|---|---|---|---|---|---|")
    for radius in range(0, 7):
        started = time.perf_counter()
        match, _ = nearest_within(test_hashes, train_hashes, radius)
        seconds = time.perf_counter() - started
        by_pixels = confirmed(test, train, match)
        planted_match, _ = nearest_within(copy_hashes, planted_hashes, radius)
        own = planted_match == np.arange(PLANTED)
        planted_pixels = confirmed(copies, planted_train, planted_match) & own
        print(f"| {radius} | {np.mean(match >= 0):.2%} | {by_pixels.sum()} ({by_pixels.mean():.2%}) | {seconds:.2f} s "
              f"| {own.sum()}/{PLANTED} | {planted_pixels.sum()}/{PLANTED} |", flush=True)


if __name__ == "__main__":
    main()
