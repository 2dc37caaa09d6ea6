"""What a model directory holds and its model card, read without torch: steps that only check, copy or describe a
model (bless, the registry) need not pay torch's import (about 1.5 s a process) to do it. Loading the network
itself is aimass/models/artifact.py's job.

The card is typed (`ModelCard`): one reader (`read_model_card`, after the sha256 manifest is verified, or
`ModelCard.parse` for a card fetched from a registry) and one writer (`ModelCard.to_json`, used by artifact.py's
save functions). Its JSON is the format 2 every earlier aimass wrote, so cards already in a registry load as they
are (tests/fixtures/model_cards/ holds two written before the card was typed).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from aimass.config import ModelConfig
from aimass.data.preprocess import InputSpec
from aimass.errors import ArtifactIntegrityError
from aimass.integrity import read_verified_manifest

WEIGHTS_FILE = "model.safetensors"
PROGRAM_FILE = "model.pt2"
CARD_FILE = "model.json"
MONITOR_REFERENCE_FILE = "monitor-reference.npz"  # outputs on validation images, added at registration
CARD_FORMAT_VERSION = 2
SAFETENSORS_FORMAT = "safetensors"
TRANSFORMERS_FORMAT = "transformers-safetensors"
EXPORT_FORMAT = "torch-export"
TIMM_FORMAT = "timm-safetensors"
TORCHVISION_FORMAT = "torchvision-safetensors"
FLOAT_BACKEND = "float32"
TEACHER = "teacher"  # the trained model, beside compress's candidates (each named by its method)


class _Record(BaseModel):
    # A misspelt field is an error, not a silently dropped record.
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetRecord(_Record):
    """The data version the model learnt from."""

    name: str
    data_md5: str
    counts: dict[str, int] = {}  # images per split
    recommended_gate: dict[str, float] = {}  # the data card's own minimums (min_accuracy, min_macro_f1)


class CompressionRecord(_Record):
    method: str  # compress.methods' name: prune_channels, quantize_int8, distill, ...
    backend: str  # float32, or which int8 flow produced the weights


class ModelProvenance(_Record):
    """What a stage knows of a model beyond its network: the data behind it, how it came to be, its settings."""

    dataset: DatasetRecord
    data_profile: dict[str, Any] | None = None  # the training split's profile: drift's reference
    lineage: dict[str, Any] = {}  # data hash, git commit, run, trigger, base checkpoint (aimass/lineage.py)
    training: dict[str, Any] | None = None  # a trained model's own record (TrainResult.to_dict)
    teacher_training: dict[str, Any] | None = None  # a compressed candidate: its teacher's record
    compression: CompressionRecord | None = None  # a compressed candidate: how it was made
    config: dict[str, Any] = {}  # the resolved AimassConfig of the run
    # Added at registration: the test figures the gate judged (accuracy, macro-F1, ROC-AUC, accuracy under
    # corruptions, calibration error), so whoever serves the model sees them.
    evaluation: dict[str, float] | None = None

    def for_candidate(self, method: str, backend: str) -> ModelProvenance:
        """The provenance of a candidate compressed from this (the teacher's) model: the same data and lineage,
        the teacher's training record as its teacher's."""
        return ModelProvenance(dataset=self.dataset, data_profile=self.data_profile, lineage=dict(self.lineage),
                               teacher_training=self.training or {}, config=self.config,
                               compression=CompressionRecord(method=method, backend=backend))


class ModelCard(ModelProvenance):
    """Everything a model directory says about its model: the network, its input and classes, and its provenance."""

    format_version: int = CARD_FORMAT_VERSION
    # safetensors, transformers-safetensors, timm-safetensors, torchvision-safetensors or torch-export
    weights_format: str
    architecture: ModelConfig  # the network as trained, whatever a later config says
    input: dict[str, Any]  # InputSpec.to_dict(): what a request's image becomes before the network sees it
    class_names: tuple[str, ...]

    @classmethod
    def parse(cls, text: str | bytes, where: str) -> ModelCard:
        """A card from its JSON; `where` names it in errors.

        Raises:
            ArtifactIntegrityError: not JSON, of another card format, or missing or misspelling a field.
        """
        try:
            values = json.loads(text)
        except ValueError as error:
            raise ArtifactIntegrityError(f"{where} is not a JSON model card: {error}") from error
        found = values.get("format_version") if isinstance(values, dict) else None
        if found != CARD_FORMAT_VERSION:
            raise ArtifactIntegrityError(f"{where} has card format {found}, this aimass reads "
                                         f"{CARD_FORMAT_VERSION}: train the model again")
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise ArtifactIntegrityError(f"{where} is not a valid model card: {error}") from error

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True) + "\n"

    @property
    def provenance(self) -> ModelProvenance:
        """The card less what the network itself says: what a re-saved copy of the model carries over."""
        return ModelProvenance(**{name: getattr(self, name) for name in ModelProvenance.model_fields})

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.input)

    @property
    def backend(self) -> str:
        return self.compression.backend if self.compression else FLOAT_BACKEND

    @property
    def is_quantized(self) -> bool:
        """Whether the model's weights are int8 (a compression backend other than float32)."""
        return self.backend != FLOAT_BACKEND

    @property
    def validation_accuracy(self) -> float | None:
        """The best validation accuracy of this model's training, or of its teacher's for a compressed candidate
        (which has no training record of its own; validation_accuracy_of says which)."""
        return (self.training or self.teacher_training or {}).get("best_validation_accuracy")

    @property
    def validation_accuracy_of(self) -> str:
        return "this model" if self.training is not None else "its teacher"


def read_model_card(directory: Path) -> ModelCard:
    """The model card of the model in `directory`, after verifying every file's sha256.

    Raises:
        ArtifactIntegrityError: a file is missing or differs from the manifest, or the card is of a format this
            aimass does not read.
    """
    read_verified_manifest(directory)
    return ModelCard.parse((directory / CARD_FILE).read_text(), str(directory / CARD_FILE))


def chosen_model_dir(teacher_dir: Path, candidates_dir: Path, chosen: str) -> Path:
    """Where the model the gate chose lives: the teacher's directory or its candidate's."""
    return teacher_dir if chosen == TEACHER else candidates_dir / chosen
