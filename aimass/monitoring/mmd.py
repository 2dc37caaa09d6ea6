"""Maximum mean discrepancy (MMD) between two samples with a Gaussian kernel and a permutation test: the test
alibi-detect's `MMDDrift` runs (unbiased MMD², bandwidth from the median pairwise distance, p-value from
permutations), in a few lines of torch. alibi-detect itself cannot be installed beside this project's pins (0.13
needs numpy<2, transformers<5 and pillow<11); docs/PERFORMANCE.md has the two measured side by side.

Applied to the served model's class probabilities ("black-box shift detection", Lipton et al. 2018; alibi-detect's
recommended preprocessing for classifiers), it sees a change of content that leaves brightness and size alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MmdResult:
    mmd2: float  # the unbiased MMD² between the two samples
    threshold: float  # the permuted statistics' (1 - p_value) quantile: above it is drift at that level
    p_value: float


def mmd_permutation_test(reference: np.ndarray, sample: np.ndarray, significance: float, permutations: int,
                         seed: int = 0) -> MmdResult:
    """Whether `sample` (m, d) and `reference` (n, d) come from one distribution.

    Every permutation's statistic comes from the same kernel matrix through one matrix product, so 2,000
    permutations of 1,000 + 500 points take about a tenth of a second on one core."""
    x = torch.as_tensor(np.asarray(reference, dtype=np.float32))
    y = torch.as_tensor(np.asarray(sample, dtype=np.float32))
    pooled = torch.cat([x, y])
    squared = torch.cdist(pooled, pooled).square_()
    off_diagonal = squared[~torch.eye(len(pooled), dtype=torch.bool)]
    bandwidth = max(float(off_diagonal.median()), 1e-12)  # median heuristic on squared distances
    kernel = torch.exp(-squared / bandwidth)
    kernel.fill_diagonal_(0)  # the unbiased estimate leaves out each point's kernel with itself
    generator = torch.Generator().manual_seed(seed)
    memberships = torch.zeros(permutations + 1, len(pooled))
    memberships[0, :len(x)] = 1  # row 0: the observed split
    for row in range(1, permutations + 1):
        memberships[row, torch.randperm(len(pooled), generator=generator)[:len(x)]] = 1
    statistics = _unbiased_mmd2(kernel, memberships, len(x), len(y))
    observed, permuted = float(statistics[0]), statistics[1:].numpy()
    p_value = (1 + int((permuted >= observed).sum())) / (1 + permutations)
    threshold = float(np.quantile(permuted, 1 - significance, method="higher"))
    return MmdResult(observed, threshold, p_value)


def _unbiased_mmd2(kernel: torch.Tensor, x_members: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """MMD² of each split (a row of 0/1 memberships of x) of the pooled points, whose kernel has a zero diagonal."""
    y_members = 1 - x_members
    weighted = x_members @ kernel  # (splits, points)
    within_x = (weighted * x_members).sum(dim=1)
    between = (weighted * y_members).sum(dim=1)
    within_y = kernel.sum() - within_x - 2 * between
    return within_x / (n * (n - 1)) + within_y / (m * (m - 1)) - 2 * between / (n * m)
