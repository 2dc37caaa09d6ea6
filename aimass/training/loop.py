"""The fit loop: SGD with a one-cycle schedule and per-group learning rates (head and backbone, the backbone frozen
for the first `train.frozen_backbone_epochs` as fine-tuning a pretrained checkpoint wants), early stopping on the
validation split with the best epoch's weights restored, under the device's fast path and, with several ranks,
DistributedDataParallel over disjoint shards with losses and accuracies summed across ranks."""
from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aimass.config import AimassConfig, TrainConfig
from aimass.data.arrays import ImageSet
from aimass.data.preprocess import InputSpec, normalize
from aimass.models.architecture import Signature, build_model, split_parameters
from aimass.progress import report as report_progress
from aimass.training.batches import batch_source
from aimass.training.devices import FastPath, configure_cpu_threads, select_device
from aimass.training.ranks import Ranks, check_shards, rank_shard, summed_over_ranks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    step: int  # optimisation steps done by the end of this epoch
    train_loss: float
    train_accuracy: float
    validation_loss: float
    validation_accuracy: float
    learning_rate: float  # at the end of the epoch
    train_seconds: float  # optimisation steps only, validation excluded
    images_per_second: float


@dataclass
class TrainResult:
    device: str
    cpu_threads: int
    best_epoch: int
    best_validation_accuracy: float
    stopped_early: bool
    best_step: int = 0  # optimisation steps done when the best validation was measured
    history: list[EpochRecord] = field(default_factory=list)
    # With several processes: world size, backend, images each rank trained on in the first epoch, and whether the
    # ranks' shards were disjoint (checked on the indices themselves).
    distributed: dict | None = None
    # Trained from a Hugging Face checkpoint: its source, whether its weights were loaded, and each file's sha256.
    base_checkpoint: dict | None = None
    precision: str = "float32"  # or "bfloat16 autocast, channels-last" (train.fast_path)

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def images_per_second(self) -> float:
        seen = sum(record.images_per_second * record.train_seconds for record in self.history)
        return seen / max(sum(record.train_seconds for record in self.history), 1e-9)

    def to_dict(self) -> dict:
        return {**asdict(self), "epochs_run": self.epochs_run, "images_per_second": self.images_per_second}


# Called after every epoch; returning False stops training there (a hyper-parameter search pruning a trial).
EpochCallback = Callable[["EpochRecord"], bool]

# (logits, labels, batch indices into the training set) -> scalar loss. The indices let a loss look up per-image
# targets computed beforehand, such as a teacher's logits for distillation.
LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def smoothed_cross_entropy(label_smoothing: float) -> LossFunction:
    return lambda logits, labels, _batch: F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """The head at `learning_rate`, the backbone at `backbone_learning_rate_factor` of it (a model without a named
    head, such as a pruned export, is one group)."""
    if not hasattr(model, "head") or config.backbone_learning_rate_factor == 1.0:
        return [{"params": list(model.parameters()), "lr": config.learning_rate}]
    backbone, head = split_parameters(model)
    return [{"params": head, "lr": config.learning_rate},
            {"params": backbone, "lr": config.learning_rate * config.backbone_learning_rate_factor}]


def freeze_backbone(model: nn.Module, frozen: bool) -> None:
    for parameter in split_parameters(model)[0]:
        parameter.requires_grad_(not frozen)


class _StepRunner:
    """One optimisation step, set up once for the device: autocast, memory layout, optional torch.compile, and
    DistributedDataParallel when several processes train the model together."""

    def __init__(self, model: nn.Module, config: TrainConfig, device: torch.device, total_steps: int,
                 loss: LossFunction, ranks: Ranks | None = None):
        self.on_cuda = device.type == "cuda"
        self.fast_path = FastPath.for_device(config.fast_path, device)
        self.model = model.to(memory_format=self.fast_path.memory_format)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.train_forward = self.forward
        if ranks is not None:
            from torch.nn.parallel import DistributedDataParallel

            # Gradients are averaged across ranks during backward; evaluation uses the plain module (rank 0 only).
            self.train_forward = DistributedDataParallel(self.forward, device_ids=[device.index] if self.on_cuda
                                                         else None)
        groups = parameter_groups(model, config)
        self.optimizer = torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum,
                                         nesterov=config.momentum > 0, weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=[group["lr"] for group in groups], total_steps=total_steps,
            pct_start=config.warmup_fraction, cycle_momentum=False)
        self.loss = loss

    def step(self, inputs: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (summed loss, correct predictions) as tensors, so the hot loop never waits on the device."""
        with self.fast_path.autocast():
            logits = self.train_forward(self.fast_path.layout(inputs))
            loss = self.loss(logits, labels, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return loss.detach() * len(labels), (logits.argmax(1) == labels).sum()

    @torch.inference_mode()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, spec: InputSpec,
                 batch_size: int = 2048) -> tuple[float, float]:
        """(mean loss, accuracy) on held-out uint8 images (N, C, H, W)."""
        self.model.eval()
        loss_sum, correct = torch.zeros((), device=images.device), torch.zeros((), device=images.device)
        for start in range(0, len(labels), batch_size):
            batch, batch_labels = images[start:start + batch_size], labels[start:start + batch_size]
            with self.fast_path.autocast():
                logits = self.forward(self.fast_path.layout(normalize(batch.float().div_(255.0), spec))).float()
            loss_sum += F.cross_entropy(logits, batch_labels, reduction="sum")
            correct += (logits.argmax(1) == batch_labels).sum()
        self.model.train()
        return loss_sum.item() / len(labels), correct.item() / len(labels)


def train_classifier(config: AimassConfig, train_set: ImageSet, validation_set: ImageSet, signature: Signature,
                     progress: bool = False, ranks: Ranks | None = None,
                     on_epoch: EpochCallback | None = None) -> tuple[nn.Module, TrainResult]:
    """Train a fresh classifier and return it with the weights of its best validation epoch."""
    torch.manual_seed(config.train.seed)
    device = select_device(config.train.device)
    if ranks is not None and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ranks.rank)))  # one GPU per process
        torch.cuda.set_device(device)
    model, base_checkpoint = build_model(config.model, signature)  # the same initial weights on every rank
    model = model.to(device)
    if ranks is not None:
        torch.manual_seed(config.train.seed + ranks.rank)  # but each rank its own augmentation draws
    spec = signature.input_spec
    trained, result = fit(model, config.train, batch_source(config, train_set, device, spec), train_set.labels,
                          validation_set, smoothed_cross_entropy(config.train.label_smoothing), spec, progress, ranks,
                          on_epoch)
    result.base_checkpoint = base_checkpoint
    return trained, result


def fit(model: nn.Module, settings: TrainConfig, train_inputs: Callable[[torch.Tensor], torch.Tensor],
        train_labels: np.ndarray, validation_set: ImageSet, loss: LossFunction, spec: InputSpec,
        progress: bool = False, ranks: Ranks | None = None,
        on_epoch: EpochCallback | None = None) -> tuple[nn.Module, TrainResult]:
    """Optimise `model` (already on its device) with early stopping; returns it on the CPU with its best weights.

    `train_inputs` maps a tensor of training-set indices to a normalised input batch (possibly augmented). With
    `ranks`, this process is one of several: `settings.batch_size` is the global batch, split across the ranks.
    The budget is `settings.steps` optimisation steps (the last epoch cut short to fit), else `settings.epochs`
    whole epochs; the validation split is scored after every epoch. Early stopping counts optimisation steps since
    the best validation (`early_stopping_steps`, else a quarter of the budget) and never stops inside the warm-up:
    on a data set of a few batches an epoch is a step or two, and counting epochs there ended runs while the
    learning rate was still rising.
    """
    device = next(model.parameters()).device
    world = ranks.world_size if ranks else 1
    threads = configure_cpu_threads(settings.cpu_threads, world)
    train_y = torch.from_numpy(train_labels).long().to(device)
    val_x = torch.from_numpy(np.array(validation_set.images)).to(device)  # uint8: a quarter of float32's memory
    val_y = torch.from_numpy(validation_set.labels).long().to(device)
    batch_size = min(settings.batch_size, len(train_y))
    rank_batch = max(batch_size // world, 1)
    steps_per_epoch = len(train_y) // batch_size  # drop the ragged tail: a batch of one breaks BatchNorm
    total_steps = settings.steps or settings.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    runner = _StepRunner(model, settings, device, total_steps, loss, ranks)
    patience = settings.early_stopping_steps or max(total_steps // 4, 1)
    warmup_steps = math.ceil(settings.warmup_fraction * total_steps)
    steps_done = 0
    shuffle = torch.Generator(device=device).manual_seed(settings.seed)  # the same permutation on every rank
    result = TrainResult(device=str(device), cpu_threads=threads, best_epoch=0,
                         best_validation_accuracy=-1.0, stopped_early=False,
                         precision=runner.fast_path.precision)
    best_state = copy.deepcopy(model.state_dict())
    leader = ranks is None or ranks.is_first
    with _progress_bar(progress and leader, total_steps, quiet=not leader, images_per_step=batch_size) as advance:
        for epoch in range(1, epochs + 1):
            epoch_steps = min(steps_per_epoch, total_steps - (epoch - 1) * steps_per_epoch)
            if settings.frozen_backbone_epochs:
                freeze_backbone(model, frozen=epoch <= settings.frozen_backbone_epochs)
            model.train()
            order = rank_shard(torch.randperm(len(train_y), device=device, generator=shuffle), ranks)
            loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
            started = time.perf_counter()
            for step in range(epoch_steps):
                batch = order[step * rank_batch:(step + 1) * rank_batch]
                step_loss, step_correct = runner.step(train_inputs(batch), train_y[batch], batch)
                loss_sum += step_loss
                correct += step_correct
                advance()
            if ranks is not None and epoch == 1:
                result.distributed = check_shards(order[:epoch_steps * rank_batch], ranks, device)
            seen = epoch_steps * rank_batch * world
            loss_sum, correct = summed_over_ranks(loss_sum, ranks), summed_over_ranks(correct, ranks)
            train_loss, train_accuracy = loss_sum.item() / seen, correct.item() / seen  # .item() syncs the device
            seconds = time.perf_counter() - started
            val_loss, val_accuracy = _validated_by_first_rank(runner, val_x, val_y, spec, ranks, device)
            steps_done += epoch_steps
            record = EpochRecord(epoch, steps_done, train_loss, train_accuracy, val_loss, val_accuracy,
                                 runner.schedule.get_last_lr()[0], seconds, seen / seconds)
            result.history.append(record)
            if leader:
                log.info("epoch %d/%d: train loss %.4f acc %.4f | validation loss %.4f acc %.4f | %.0f images/s",
                         epoch, epochs, train_loss, train_accuracy, val_loss, val_accuracy,
                         record.images_per_second)
                report_progress(f"epoch {epoch}/{epochs} done, validation accuracy {val_accuracy:.4f}, "
                                f"{record.images_per_second:.0f} images/s")
            if val_accuracy > result.best_validation_accuracy:
                result.best_epoch, result.best_validation_accuracy = epoch, val_accuracy
                result.best_step = steps_done
                best_state = copy.deepcopy(model.state_dict())
            elif (settings.early_stopping and steps_done - result.best_step >= patience
                  and steps_done > warmup_steps):
                result.stopped_early = epoch < epochs
                log.info("early stop: no validation gain for %d steps (patience %d, warm-up %d)",
                         steps_done - result.best_step, patience, warmup_steps)
                break
            if on_epoch is not None and not on_epoch(record):
                result.stopped_early = epoch < epochs
                break
    model.load_state_dict(best_state)
    return model.to(memory_format=torch.contiguous_format).cpu().eval(), result


def _validated_by_first_rank(runner: _StepRunner, val_x: torch.Tensor, val_y: torch.Tensor, spec: InputSpec,
                             ranks: Ranks | None, device: torch.device) -> tuple[float, float]:
    """(validation loss, accuracy): measured by rank 0 and sent to every rank, so all take the same early-stopping
    decision on the same numbers (BatchNorm statistics differ slightly between ranks)."""
    if ranks is None:
        return runner.evaluate(val_x, val_y, spec)
    import torch.distributed as dist

    measured = torch.tensor(runner.evaluate(val_x, val_y, spec) if ranks.is_first else (0.0, 0.0), device=device)
    dist.broadcast(measured, src=0)
    return float(measured[0]), float(measured[1])


class _progress_bar:
    """Progress over optimisation steps: a rich bar on a terminal; elsewhere (KFP logs, kfp.local's piped output,
    where a bar would arrive only at the end) a log line at every tenth of the run; nothing on ranks other than 0."""

    def __init__(self, enabled: bool, total_steps: int, quiet: bool = False, images_per_step: int = 0):
        self.enabled, self.total_steps, self.quiet = enabled, total_steps, quiet
        self.images_per_step = images_per_step

    def __enter__(self):
        if self.quiet:
            return lambda: None
        if not self.enabled:
            return self._log_every_tenth()
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.start()
        task = self.bar.add_task("training", total=self.total_steps)
        return lambda: self.bar.advance(task)

    def _log_every_tenth(self):
        interval, done, started = max(self.total_steps // 10, 1), 0, time.perf_counter()

        def advance() -> None:
            nonlocal done
            done += 1
            if done % interval == 0 or done == self.total_steps:
                seconds = time.perf_counter() - started
                log.info("step %d/%d (%.0f%%), %.0f s", done, self.total_steps, 100 * done / self.total_steps, seconds)
                report_progress(f"step {done}/{self.total_steps}, "
                                f"{done * self.images_per_step / max(seconds, 1e-9):.0f} images/s")

        return advance

    def __exit__(self, *exc_info) -> None:
        if self.enabled:
            self.bar.stop()
