"""The served model: a verified model directory loaded, moved to its device, compiled when int8, and proven to
answer by a warm-up before anyone is sent to it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aimass.data.preprocess import InputSpec, to_model_input
from aimass.errors import ArtifactIntegrityError
from aimass.models.artifact import compile_for_inference, load_model
from aimass.monitoring.reference import read_reference_outputs
from aimass.serving.errors import ServingError


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str  # registry version ("v3"), or "local" for a directory served as is
    revision: int | None  # the release revision that asked for it
    module: torch.nn.Module
    class_names: list[str]
    input_spec: InputSpec
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    about: dict = dataclasses.field(default_factory=dict)  # from the model card: data set, lineage, training
    data_profile: dict | None = None  # the training split's profile, from the model card (drift's reference)
    reference_outputs: np.ndarray | None = None  # probabilities on validation images, kept at registration

    @torch.inference_mode()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) -> class probabilities (N, classes), float32."""
        logits = self.module(to_model_input(images, self.input_spec, self.device))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


def inference_device(wanted: str, int8: bool) -> torch.device:
    """`serving.device` for this model: int8 exports run x86 kernels, so only float models go to a GPU."""
    if wanted == "cuda":
        if int8:
            raise ServingError("serving.device=cuda, but this is an int8 model, whose kernels run on the CPU only; "
                               "use serving.device=auto or cpu")
        if not torch.cuda.is_available():
            raise ServingError("serving.device=cuda, but torch sees no CUDA device here; use auto or cpu")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() and not int8 else "cpu"
    return torch.device(wanted)


def load_served_model(name: str, version: str, revision: int | None, model_dir: Path,
                      compile_quantized: bool = True, device: str = "cpu") -> ServedModel:
    """Load a model directory (every sha256 checked) and prove it answers before anyone is sent to it.

    int8 models are compiled, as the compress stage measured them: eager execution of a quantised export runs
    the reference (de)quantise ops and is about 10x slower at batch 1 than the compiled int8 kernels
    (docs/PERFORMANCE.md). Compiling takes seconds, all of it here, in the warm-up, before the swap."""
    loaded = load_model(model_dir)
    int8 = loaded.card.is_quantized
    target = inference_device(device, int8)
    module = loaded.module if target.type == "cpu" else loaded.module.to(target)
    if compile_quantized and int8:
        module = compile_for_inference(module)
    signature = loaded.signature
    card = loaded.card
    # A compressed model's card carries its teacher's training record, not a validation score of its own.
    about = {"dataset": card.dataset.name, "lineage": card.lineage, "validation_accuracy": card.validation_accuracy,
             "validation_accuracy_of": card.validation_accuracy_of,
             "compression": card.compression.method if card.compression else None,
             "evaluation": card.evaluation or {}}
    served = ServedModel(name, version, revision, module, list(signature.class_names), signature.input_spec, target,
                         about, card.data_profile, read_reference_outputs(model_dir))
    # The compiler specialises batch size 1 and guards int8 graphs to 2..15 and 16 and up: one warm-up per range,
    # or the first request of a new range stalls every request behind it for a recompilation (seconds).
    for batch in (1, 2, 16):
        warm_up = served.predict(np.zeros((batch, *signature.input_spec.shape), dtype=np.uint8))
        if warm_up.shape != (batch, len(served.class_names)) or not np.isfinite(warm_up).all():
            raise ArtifactIntegrityError(f"{name} {version} failed its warm-up prediction: got {warm_up.shape}")
    return served
