"""Distillation: a smaller student (`compress.student`) trained on the teacher's temperature-softened outputs."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aimass.compression.fine_tuning import WHOLE_NETWORK
from aimass.config import AimassConfig, ModelConfig
from aimass.data.arrays import ImageSet
from aimass.data.preprocess import InputSpec, to_model_input
from aimass.models.architecture import Signature, build_model
from aimass.training.batches import plain_batches
from aimass.training.devices import FastPath, select_device
from aimass.training.loop import LossFunction, fit


def distillation_loss(teacher_logits: torch.Tensor, temperature: float, soft_weight: float) -> LossFunction:
    """Hinton et al.: T^2-scaled KL to the teacher's softened outputs, mixed with cross-entropy on the labels."""
    def loss(logits: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        soft = F.kl_div(F.log_softmax(logits.float() / temperature, dim=1),
                        F.softmax(teacher_logits[batch] / temperature, dim=1), reduction="batchmean")
        return soft_weight * temperature ** 2 * soft + (1 - soft_weight) * F.cross_entropy(logits.float(), labels)

    return loss


def teacher_logits(teacher: nn.Module, images: np.ndarray, spec: InputSpec, fast_path: FastPath,
                   batch_size: int = 256) -> torch.Tensor:
    """The teacher's logits for every image, computed once (one pass instead of one per step), on the teacher's
    device, the way training computes (`fast_path`: 4x faster on a CPU with native bfloat16, and soft targets need
    no more precision). Batches of 256 stay in cache (2.8k vs 2.3k images/s at 1,024 in float32, 11.4k vs 6.8k on
    the fast path)."""
    device = next(teacher.parameters()).device
    teacher = teacher.to(memory_format=fast_path.memory_format).eval()
    with torch.inference_mode(), fast_path.autocast():
        logits = torch.cat([teacher(fast_path.layout(to_model_input(images[start:start + batch_size], spec, device)))
                            .float() for start in range(0, len(images), batch_size)])
    teacher.to(memory_format=torch.contiguous_format)
    return logits


def distill(teacher: nn.Module, config: AimassConfig, train_set: ImageSet, validation_set: ImageSet,
            signature: Signature) -> tuple[nn.Module, ModelConfig]:
    settings = config.compress
    shape = ModelConfig(architecture=settings.student, channels=settings.student_channels,
                        hidden_units=settings.student_hidden_units, dropout=config.model.dropout)
    device = select_device(config.train.device)
    torch.manual_seed(config.train.seed)
    student, _ = build_model(shape, signature, pretrained=False)
    student = student.to(device)
    spec = signature.input_spec
    soft_targets = teacher_logits(teacher.to(device), train_set.images, spec,
                                  FastPath.for_device(config.train.fast_path, device))
    run = config.train.model_copy(update={"steps": None, "epochs": settings.distill_epochs, "compile": False,
                                          **WHOLE_NETWORK})
    loss = distillation_loss(soft_targets, settings.distill_temperature, settings.distill_weight)
    trained, _ = fit(student, run, plain_batches(train_set, device, spec), train_set.labels, validation_set, loss,
                     spec)
    teacher.cpu()
    return trained, shape
