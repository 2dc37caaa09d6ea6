"""The train stage's work: fit the model (the built-in CNN or a Hugging Face checkpoint) on the train split,
early-stopping on the validation split, and write it with its model card. With `train.nproc > 1` the same loop runs in
that many processes under torchrun (aimass/training/distributed.py); with `train.nodes > 1` as a PyTorchJob
(aimass/training/operator_job.py). Weights go out as safetensors with a JSON model card, never as a pickle."""
from __future__ import annotations

import json
from pathlib import Path

from aimass.config import AimassConfig
from aimass.data.arrays import ImageSet, load_image_sets
from aimass.data.card import SplitsCard
from aimass.data.profile import PROFILE_FILE
from aimass.lineage import Lineage
from aimass.models.architecture import Signature
from aimass.models.artifact import save_model
from aimass.models.card import DatasetRecord, ModelProvenance
from aimass.training.loop import TrainResult, train_classifier
from aimass.training.ranks import Ranks


def training_split(splits: dict[str, ImageSet], training_set_dir: Path | None) -> ImageSet:
    """The augment stage's training set when it added images, else the ingest output's train split."""
    augmented = load_image_sets(training_set_dir)[0] if training_set_dir else {}
    return augmented.get("train", splits["train"])


def train(config: AimassConfig, splits_dir: Path, model_dir: Path, lineage: Lineage,
          training_set_dir: Path | None = None, progress: bool = False, ranks: Ranks | None = None) -> TrainResult:
    """Train and write the model artifact (weights, card, manifest) to `model_dir`.

    Trains on `training_set_dir`'s train split (the augment stage's output) when given, else on `splits_dir`'s;
    validates on `splits_dir`'s validation split. With `train.nproc > 1` it starts that many processes under
    torchrun (`ranks` is what each of them passes back in).
    """
    if config.train.nodes > 1 and ranks is None:
        from aimass.training.operator_job import train_on_nodes

        job_name = f"aimass-train-{lineage.run_id}"[:63].rstrip("-").lower()
        return train_on_nodes(config, splits_dir, model_dir, lineage, training_set_dir, job_name)
    if config.train.nproc > 1 and ranks is None:
        from aimass.training.distributed import train_in_processes

        return train_in_processes(config, splits_dir, model_dir, lineage, training_set_dir)
    splits, _ = load_image_sets(splits_dir)
    train_set = training_split(splits, training_set_dir)
    data = SplitsCard.read(splits_dir)
    signature = Signature.of_splits(data)
    model, result = train_classifier(config, train_set, splits["validation"], signature, progress=progress,
                                     ranks=ranks)
    if ranks is not None and not ranks.is_first:
        return result  # only rank 0 writes the model
    save_model(model_dir, model, config.model, signature, ModelProvenance(
        dataset=DatasetRecord(name=data.name, data_md5=data.data_md5, counts=data.counts,
                              recommended_gate=data.recommended_gate),
        # The training split's statistics: the next data version's drift is measured against them.
        data_profile=json.loads((splits_dir / PROFILE_FILE).read_text())["train"],
        lineage={**lineage.to_dict(),
                 **({"base_checkpoint": result.base_checkpoint} if result.base_checkpoint else {})},
        training=result.to_dict(),
        config=config.model_dump(mode="json"),
    ))
    return result
