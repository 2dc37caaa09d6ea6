"""Training throughput of the train component versus a bare PyTorch loop, side by side in one run.

Both train the same model (aimass.models.architecture.build_classifier) on the same Fashion-MNIST images with the same
batch size, optimiser and loss, on the same device. The bare loop is the "no pipeline at all" reference (after
../shared/bench/bare_torch_loop.py); the component is `train_classifier`, the function the KFP train step runs.
Runs alternate in ABBA order (bare, component, component, bare, ...) so drift in a shared machine's speed hits both alike, and the
median of each is reported with their ratio.

    python bench/train_throughput.py                    # CPU, 8192 images, batch 128, 4 rounds
    python bench/train_throughput.py --device cuda --images 60000 --batch-size 1024
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench_data import ingested_splits

from aimass.models.architecture import Signature, build_classifier
from aimass.training.devices import configure_cpu_threads, FastPath
from aimass.training.loop import train_classifier
from aimass.config import load_config
from aimass.data.arrays import ImageSet, load_image_sets
from aimass.data.card import SplitsCard
from aimass.data.preprocess import to_model_input


def bare_loop_images_per_second(config, images: np.ndarray, labels: np.ndarray, signature: Signature,
                                device: torch.device) -> float:
    """One epoch of the plainest loop that trains the same model the same way."""
    settings = config.train
    torch.manual_seed(settings.seed)
    x, y = to_model_input(images, signature.input_spec, device), torch.from_numpy(labels).long().to(device)
    model = build_classifier(config.model, signature).to(device)
    on_cuda = device.type == "cuda"
    fast_path = FastPath.for_device(settings.fast_path, device)  # the precision and layout the component uses
    model = model.to(memory_format=fast_path.memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.learning_rate, momentum=settings.momentum,
                                nesterov=True, weight_decay=settings.weight_decay)
    steps = len(y) // settings.batch_size
    order = torch.randperm(len(y), device=device)
    if on_cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for step in range(steps):
        batch = order[step * settings.batch_size:(step + 1) * settings.batch_size]
        inputs = fast_path.layout(x[batch])
        with fast_path.autocast():
            loss = F.cross_entropy(model(inputs), y[batch], label_smoothing=settings.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if on_cuda:
        torch.cuda.synchronize()
    return steps * settings.batch_size / (time.perf_counter() - started)


def component_images_per_second(config, train_set: ImageSet, validation_set: ImageSet, signature: Signature) -> float:
    _, result = train_classifier(config, train_set, validation_set, signature)
    return result.images_per_second  # optimisation steps only, like the bare loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--splits", type=Path, default=None,
                        help="ingested splits (default: the pinned data version, ingested into build/)")
    args = parser.parse_args()

    config = load_config("quick", [f"train.batch_size={args.batch_size}", "train.steps=null", "train.epochs=1",
                                   "augment.on_the_fly=false", f"train.device={args.device}"])
    threads = configure_cpu_threads(config.train.cpu_threads)
    splits_dir = args.splits or ingested_splits()
    signature = Signature.of_splits(SplitsCard.read(splits_dir))
    splits, _ = load_image_sets(splits_dir)
    train_set = splits["train"].take(np.arange(args.images))
    validation_set = splits["test"].take(np.arange(1024))
    device = torch.device(args.device)

    bare_loop_images_per_second(config, train_set.images[:1024], train_set.labels[:1024], signature, device)  # warm-up
    bare, component = [], []
    for round_index in range(args.rounds):
        # Alternate which goes first (ABBA) so a warming or throttling machine favours neither.
        measurements = [
            lambda: bare.append(bare_loop_images_per_second(config, train_set.images, train_set.labels, signature,
                                                            device)),
            lambda: component.append(component_images_per_second(config, train_set, validation_set, signature)),
        ]
        for measure in measurements if round_index % 2 == 0 else reversed(measurements):
            measure()
    figures = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({threads} threads)",
        "torch": torch.__version__, "images": args.images, "batch_size": args.batch_size, "rounds": args.rounds,
        "bare_loop_images_per_s": [round(v) for v in bare],
        "component_images_per_s": [round(v) for v in component],
        "bare_median": round(statistics.median(bare)),
        "component_median": round(statistics.median(component)),
    }
    figures["component_over_bare"] = round(figures["component_median"] / figures["bare_median"], 3)
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
