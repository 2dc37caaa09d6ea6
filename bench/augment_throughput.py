"""Augmentation throughput: the aimass policy (kornia, batched) against a hand-written torch reference, in one run.

The reference is the augmentation of ../shared/bench/bare_torch_loop.py (one random affine warp via affine_grid and
grid_sample, plus Gaussian noise). It does less work than the full policy (flip, rotation, scale, translation, noise,
erasing: three warps), so the same work is also run through kornia to compare like with like.

    python bench/augment_throughput.py                  # CPU
    python bench/augment_throughput.py --device cuda
"""
import argparse
import json
import statistics
import time

import kornia.augmentation as K
import torch
import torch.nn.functional as F

from aimass.augmentation.policy import PolicyAugmenter
from aimass.config import load_config


def reference_augment(x: torch.Tensor) -> torch.Tensor:
    """The bare reference loop's augmentation: one random affine (rotation/scale/translation) and noise."""
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device) - 0.5) * 0.5
    scale = 1 + (torch.rand(n, device=x.device) - 0.5) * 0.2
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, (torch.rand(n, device=x.device) - .5) * .2], 1),
                         torch.stack([sin, cos, (torch.rand(n, device=x.device) - .5) * .2], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), x.shape, align_corners=False)
    return F.grid_sample(x, grid, align_corners=False) + 0.05 * torch.randn_like(x)


def images_per_second(augment, images: torch.Tensor, rounds: int) -> list[float]:
    augment(images)  # warm-up
    figures = []
    for _ in range(rounds):
        if images.is_cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        augment(images)
        if images.is_cuda:
            torch.cuda.synchronize()
        figures.append(len(images) / (time.perf_counter() - started))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    images = torch.rand(args.batch, 1, 28, 28, device=device)
    policy = PolicyAugmenter(load_config("quick").augment.policy).to(device)
    # The reference's work done with kornia: one affine warp of every image, then noise on every image.
    same_work = torch.nn.Sequential(
        K.RandomAffine(degrees=14.3, translate=(0.05, 0.05), scale=(0.9, 1.1), p=1.0),
        K.RandomGaussianNoise(std=0.05, p=1.0)).to(device)
    with torch.no_grad():
        kornia_figures = images_per_second(policy, images, args.rounds)
        kornia_same_work = images_per_second(same_work, images, args.rounds)
        reference_figures = images_per_second(reference_augment, images, args.rounds)
    summary = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "batch": args.batch,
        "kornia_policy_images_per_s": round(statistics.median(kornia_figures)),
        "kornia_affine_noise_images_per_s": round(statistics.median(kornia_same_work)),
        "reference_affine_noise_images_per_s": round(statistics.median(reference_figures)),
    }
    summary["kornia_over_reference_same_work"] = round(summary["kornia_affine_noise_images_per_s"]
                                                       / summary["reference_affine_noise_images_per_s"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
