"""Statistics of a data set, as TensorFlow Data Validation computes them for skew and drift detection.

Per image (`image_statistics`): brightness and contrast (mean and standard deviation of the decoded pixels, 0..1),
the original width, height and channels, an exact hash of the decoded pixels and a 64-bit difference hash (dHash:
whether each cell of a 9x8 grey thumbnail is brighter than its left neighbour), which stays the same under small
changes of scale, compression or brightness and so finds near duplicates. The hashes are computed on whole chunks of
the decoded arrays with numpy (the `imagehash` package hashes one Pillow image at a time: minutes for 100,000), in
integers, so a hash never depends on floating-point rounding.

Per split (`profile_split`): the class counts and a histogram of each numeric statistic over bins cut at the
reference split's deciles, so two profiles compare bin by bin even when stored apart (the production model keeps
its training data's profile in its card). Distances, as TFDV defines them: Jensen-Shannon distance (base 2, 0..1)
between numeric histograms, L-infinity distance between categorical distributions.

A distance measured between finite samples is never 0: two random halves of one data set differ by about
sqrt((bins - 1) / (8 ln 2 n)) in Jensen-Shannon distance, n being the effective sample size. A threshold alone
would either miss real drift in large data sets or flag noise in small ones, so each check allows
`sampling_allowance` times that noise level on top of the configured threshold.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

NUMERIC_STATISTICS = ("brightness", "contrast", "width", "height")
CATEGORICAL_STATISTICS = ("class", "channels")
PROFILE_FILE = "profile.json"  # each split's profile, written by ingest beside the splits
_QUANTILES = np.linspace(0, 1, 11)[1:-1]  # deciles: 10 bins of equal mass in the reference split


def image_statistics(chunks: Iterable[np.ndarray], sources: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics of uint8 images (N, C, H, W), given a chunk of rows at a time, whose originals had
    `sources` (N, 3: width, height, channels)."""
    brightness, contrast, exact, near = [], [], [], []
    for chunk in chunks:
        flat = chunk.reshape(len(chunk), -1).astype(np.float32) / 255.0
        brightness.append(flat.mean(axis=1))
        contrast.append(flat.std(axis=1))
        exact.append(np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
                               for row in chunk], dtype=np.uint64))
        near.append(difference_hashes(chunk))
    empty = np.zeros(0, dtype=np.float32)
    return {
        "brightness": np.concatenate(brightness) if brightness else empty,
        "contrast": np.concatenate(contrast) if contrast else empty,
        "width": sources[:, 0].astype(np.float32), "height": sources[:, 1].astype(np.float32),
        "channels": sources[:, 2].astype(np.int64),
        "exact_hash": np.concatenate(exact) if exact else np.zeros(0, np.uint64),
        "near_hash": np.concatenate(near) if near else np.zeros(0, np.uint64),
    }


def difference_hashes(images: np.ndarray) -> np.ndarray:
    """The 64-bit dHash of each uint8 image (N, C, H, W): bit k is whether cell k of an 8x9 grey thumbnail is
    brighter than its left neighbour. Each cell averages the pixels it covers (cells overlap by a pixel where the
    size is not a multiple, as in adaptive average pooling), and cells are compared by their exact sums: every sum
    is an integer well below 2**53, so float64 holds it exactly and the hash never depends on rounding."""
    rows, columns = _cell_membership(images.shape[2], 8), _cell_membership(images.shape[3], 9)
    grey = images.sum(axis=1, dtype=np.float64)  # channels summed: the same scale for every cell
    sums = rows @ grey @ columns.T  # (n, 8, 9), a matrix product per image: fast where cumulative sums are not
    widths = columns.sum(axis=1)
    # sum_right / width_right > sum_left / width_left, cross-multiplied: cells of a row share their height
    brighter = sums[:, :, 1:] * widths[:-1] > sums[:, :, :-1] * widths[1:]
    return np.packbits(brighter.reshape(len(images), 64), axis=1, bitorder="little").view(np.uint64).ravel()


def _cell_membership(size: int, cells: int) -> np.ndarray:
    """(cells, size): 1 where pixel j lies in cell i of `cells` equal spans (each from floor to ceiling)."""
    index = np.arange(cells)[:, None]
    pixel = np.arange(size)
    return ((pixel >= index * size // cells) & (pixel < -(-(index + 1) * size // cells))).astype(np.float64)


def decile_edges(values: np.ndarray) -> list[float]:
    """Interior bin edges at the deciles of `values` (duplicates merged: a constant statistic has one edge)."""
    if len(values) == 0:
        return []
    return sorted({float(edge) for edge in np.quantile(values, _QUANTILES)})


def histogram(values: np.ndarray, edges: list[float]) -> list[int]:
    """Counts in the bins (-inf, e1], (e1, e2], ..., (ek, inf)."""
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), values.astype(np.float64), side="left")
    return np.bincount(bins, minlength=len(edges) + 1).astype(int).tolist()


def profile_split(statistics: dict[str, np.ndarray], labels: np.ndarray, class_names: tuple[str, ...],
                  reference: dict | None = None) -> dict:
    """A split's profile; numeric bins from `reference` (a profile), or from this split's deciles when None."""
    numeric = {}
    for name in NUMERIC_STATISTICS:
        edges = reference["numeric"][name]["edges"] if reference else decile_edges(statistics[name])
        numeric[name] = {"edges": edges, "counts": histogram(statistics[name], edges)}
    class_counts = np.bincount(labels.astype(np.int64), minlength=len(class_names))
    channels = {str(value): int(count) for value, count in zip(*np.unique(statistics["channels"], return_counts=True))}
    return {"images": int(len(labels)), "numeric": numeric,
            "categorical": {"class": dict(zip(class_names, class_counts.astype(int).tolist())), "channels": channels}}


@dataclass(frozen=True)
class DistanceCheck:
    statistic: str  # brightness, class, ...
    compared: str  # "test vs train", "train vs the production model's training data (v3)"
    kind: str  # "Jensen-Shannon" or "L-infinity"
    distance: float
    threshold: float  # configured threshold + sampling allowance

    @property
    def passed(self) -> bool:
        return self.distance <= self.threshold

    def sentence(self) -> str:
        verdict = "within" if self.passed else "exceeds"
        return (f"{self.statistic}: {self.kind} distance {self.distance:.4f} ({self.compared}) {verdict} the "
                f"threshold {self.threshold:.4f}")


def js_distance(counts_a: list[int], counts_b: list[int]) -> float:
    from scipy.spatial.distance import jensenshannon

    if sum(counts_a) == 0 or sum(counts_b) == 0:
        return 0.0
    return float(jensenshannon(np.asarray(counts_a, float), np.asarray(counts_b, float), base=2))


def linf_distance(counts_a: dict[str, int], counts_b: dict[str, int]) -> float:
    total_a, total_b = max(sum(counts_a.values()), 1), max(sum(counts_b.values()), 1)
    keys = set(counts_a) | set(counts_b)
    return max((abs(counts_a.get(k, 0) / total_a - counts_b.get(k, 0) / total_b) for k in keys), default=0.0)


def effective_size(images_a: int, images_b: int) -> float:
    return 1.0 / (1.0 / max(images_a, 1) + 1.0 / max(images_b, 1))


def js_noise(bins: int, images_a: int, images_b: int) -> float:
    """The Jensen-Shannon distance two samples of one distribution show by chance (see the module's docstring)."""
    return math.sqrt(max(bins - 1, 0) / (8 * math.log(2) * effective_size(images_a, images_b)))


def linf_noise(images_a: int, images_b: int, share: float = 0.5) -> float:
    """How far two samples' shares of a category of this `share` differ by chance (share 1/2: the worst case)."""
    return math.sqrt(share * (1 - share) / effective_size(images_a, images_b))


def compare_profiles(profile: dict, reference: dict, compared: str, max_js: float, max_linf: float,
                     allowance: float, statistics: tuple[str, ...] | None = None) -> list[DistanceCheck]:
    """Every statistic of `profile` against `reference` (whose bins it was cut with)."""
    checks = []
    n, n_ref = profile["images"], reference["images"]
    for name in NUMERIC_STATISTICS:
        if statistics is not None and name not in statistics:
            continue
        counts, reference_counts = profile["numeric"][name]["counts"], reference["numeric"][name]["counts"]
        threshold = max_js + allowance * js_noise(len(counts), n, n_ref)
        checks.append(DistanceCheck(name, compared, "Jensen-Shannon", js_distance(counts, reference_counts),
                                    threshold))
    for name in CATEGORICAL_STATISTICS:
        if statistics is not None and name not in statistics:
            continue
        threshold = max_linf + allowance * linf_noise(n, n_ref)
        checks.append(DistanceCheck(name, compared, "L-infinity",
                                    linf_distance(profile["categorical"][name], reference["categorical"][name]),
                                    threshold))
    return checks
