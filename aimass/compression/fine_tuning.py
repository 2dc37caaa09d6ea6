"""The short, unaugmented training a pruned network gets before it is measured; distillation trains the same way."""
from __future__ import annotations

from torch import nn

from aimass.config import AimassConfig
from aimass.data.arrays import ImageSet
from aimass.data.preprocess import InputSpec
from aimass.training.batches import plain_batches
from aimass.training.devices import select_device
from aimass.training.loop import fit, smoothed_cross_entropy

# Fine-tuning and distillation train every layer at one rate, whatever the teacher's own training did.
WHOLE_NETWORK = {"frozen_backbone_epochs": 0, "backbone_learning_rate_factor": 1.0}


def fine_tune(model: nn.Module, config: AimassConfig, train_set: ImageSet, validation_set: ImageSet,
              spec: InputSpec, epochs: int) -> nn.Module:
    """A short, unaugmented training run of `model` at the compression learning rate."""
    if epochs == 0:
        return model.eval()
    settings = config.train.model_copy(update={
        "steps": None, "epochs": epochs, "learning_rate": config.compress.finetune_learning_rate,
        "early_stopping": False, "compile": False, **WHOLE_NETWORK})
    device = select_device(settings.device)
    tuned, _ = fit(model.to(device), settings, plain_batches(train_set, device, spec), train_set.labels,
                   validation_set, smoothed_cross_entropy(settings.label_smoothing), spec)
    return tuned
