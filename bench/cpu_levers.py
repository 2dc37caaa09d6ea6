"""Do channels-last memory layout and bf16 autocast speed up training on this CPU? One optimisation step (forward,
backward, SGD) of the built-in CNN on random batches, each variant timed in alternating rounds in one run; the GPU
path of the train stage uses both, the CPU path neither unless this says so.

    python bench/cpu_levers.py [--channels 16,32,64] [--hidden 128] [--batch-size 128] [--rounds 3]
"""
import argparse
import json
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from aimass.training.devices import configure_cpu_threads
from aimass.config import ModelConfig
from aimass.data.preprocess import InputSpec
from aimass.models.architecture import Signature, build_classifier

VARIANTS = {"fp32": (False, False), "channels_last": (True, False), "bf16_autocast": (False, True),
            "channels_last_bf16": (True, True)}


def images_per_second(model, batch: torch.Tensor, labels: torch.Tensor, channels_last: bool, bf16: bool,
                      steps: int) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if channels_last:
        model, batch = model.to(memory_format=torch.channels_last), batch.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    for number in range(steps + 3):  # three warm-up steps
        if number == 3:
            started = time.perf_counter()
        with autocast:
            loss = F.cross_entropy(model(batch).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * len(batch) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", default="16,32,64")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_cpu_threads(0)
    shape = ModelConfig(channels=tuple(int(c) for c in args.channels.split(",")), hidden_units=args.hidden)
    signature = Signature(InputSpec(1, 28, 28, mean=(0.5,), std=(0.5,)), tuple("abcdefghij"))
    batch, labels = torch.randn(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,))
    measured: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_number in range(args.rounds):
        order = list(VARIANTS) if round_number % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            torch.manual_seed(0)
            measured[name].append(images_per_second(build_classifier(shape, signature), batch, labels,
                                                    *VARIANTS[name], args.steps))
    baseline = statistics.median(measured["fp32"])
    summary = {name: {"images_per_second": round(statistics.median(values)),
                      "vs_fp32": round(statistics.median(values) / baseline, 2)} for name, values in measured.items()}
    print(json.dumps({"model": f"{args.channels}:{args.hidden}", "batch": args.batch_size, **summary}))


if __name__ == "__main__":
    main()
