"""How every candidate and the teacher are measured, side by side in one process: parameters, bytes on disk,
validation accuracy of the saved model as a server would load it, CPU latency and throughput."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aimass.compression.profiles import ModelProfile
from aimass.config import CompressConfig, EvaluateConfig
from aimass.data.arrays import ImageSet
from aimass.data.preprocess import to_model_input
from aimass.models.artifact import compile_for_inference, load_model
from aimass.models.robustness import measure_robustness


def count_parameters(model: nn.Module) -> tuple[int, int]:
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters), sum(int(torch.count_nonzero(p)) for p in parameters)


def directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


@torch.inference_mode()
def time_model(model, inputs: torch.Tensor, latency_runs: int, throughput_runs: int) -> tuple[float, float, float]:
    """(batch-1 p50 ms, batch-1 p99 ms, batch-64 images/s) on the CPU, after warm-up calls."""
    single, batch = inputs[:1], inputs[:64]
    for _ in range(5):
        model(single)
        model(batch)
    latencies = []
    for index in range(latency_runs):
        sample = inputs[index % len(inputs):index % len(inputs) + 1]
        started = time.perf_counter()
        model(sample)
        latencies.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    for _ in range(throughput_runs):
        model(batch)
    throughput = throughput_runs * len(batch) / (time.perf_counter() - started)
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), throughput


def profile_model(name: str, model_dir: Path, counts: tuple[int, int], validation: ImageSet,
                  settings: CompressConfig, timed: bool = True, evaluate: EvaluateConfig | None = None) -> ModelProfile:
    """Load the saved model back (what a server would run) and measure it on the validation split; its latency,
    throughput, accuracy under corruptions and calibration error only when `timed` (`evaluate` says which
    corruptions; none: not measured)."""
    loaded = load_model(model_dir)
    backend = loaded.card.backend
    spec = loaded.signature.input_spec
    module = loaded.module
    runtime = "eager"
    if loaded.card.is_quantized and settings.int8_runtime == "inductor" and timed:
        # int8 kernels exist only in inductor's lowering; dynamic: one compilation serves every batch size
        module, runtime = compile_for_inference(module), "inductor"
    with torch.inference_mode():
        probabilities = np.concatenate([
            torch.softmax(module(to_model_input(validation.images[start:start + 512], spec)).float(), dim=1).numpy()
            for start in range(0, len(validation), 512)])
    accuracy = float((probabilities.argmax(axis=1) == validation.labels).mean())
    if not timed:
        return ModelProfile(name, backend, counts[0], counts[1], directory_bytes(model_dir), accuracy, None, None,
                            None, "not timed")
    inputs = to_model_input(validation.images[:256], spec)
    p50, p99, throughput = time_model(module, inputs, settings.latency_runs, settings.throughput_runs)
    robustness = None if evaluate is None else measure_robustness(module, spec, validation.images, validation.labels,
                                                                  evaluate, probabilities)
    return ModelProfile(name, backend, counts[0], counts[1], directory_bytes(model_dir), accuracy, p50, p99,
                        throughput, runtime,
                        None if robustness is None or not robustness.corruptions else robustness.corruption_accuracy,
                        None if robustness is None else robustness.calibration_error)
