"""Where and how a training step computes: the device, the CPU threads, and the bfloat16/channels-last fast path."""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch


def select_device(preference: str) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def configure_cpu_threads(requested: int, processes: int = 1) -> int:
    """Use `requested` intra-op threads, or this process's share of the CPUs in its affinity mask (containers often
    have fewer CPUs than `os.cpu_count()` reports, and oversubscribed threads slow convolutions down)."""
    threads = requested or max(1, len(os.sched_getaffinity(0)) // processes)
    torch.set_num_threads(threads)
    return threads


@dataclass(frozen=True)
class FastPath:
    """bfloat16 autocast + channels-last layout (`train.fast_path`), or neither: how training, and distillation's
    teacher pass, compute on `device_type`. Weights stay float32 either way."""

    enabled: bool
    device_type: str

    @classmethod
    def for_device(cls, setting: str | bool, device: torch.device) -> "FastPath":
        """As set; when "auto", always on a GPU, and on a CPU only where oneDNN has native bfloat16 kernels
        (elsewhere it would emulate them, slower than float32)."""
        enabled = bool(setting) if setting != "auto" else \
            device.type == "cuda" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return cls(enabled, device.type)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.enabled else torch.contiguous_format

    @property
    def precision(self) -> str:
        return "bfloat16 autocast, channels-last" if self.enabled else "float32"

    def autocast(self):
        return torch.autocast(self.device_type, dtype=torch.bfloat16) if self.enabled else nullcontext()

    def layout(self, inputs: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return inputs.contiguous(memory_format=self.memory_format)
