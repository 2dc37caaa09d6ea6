"""Model artifacts: weights in safetensors (or a torch.export program for int8 models), a JSON model card, and a
sha256 manifest. Never pickle.

Layout of a model directory:
    model.safetensors  float models: the state dict (tensors only: loading cannot execute code)
    config.json        Hugging Face models: beside model.safetensors (save_pretrained) and preprocessor_config.json,
                       so the directory is itself a checkpoint for `model.architecture=hf:DIRECTORY`; timm models:
                       timm's own config.json, so the directory is a `model.checkpoint` for timm:NAME (a
                       torchvision model's model.safetensors records its classes and preprocessing in its metadata)
    model.pt2          int8 models: a torch.export archive (graph as JSON, weights as raw tensor bytes); loading
                       refuses any archive entry that would need unpickling
    model.json         architecture, input normalisation, class names, lineage, metrics, resolved config
    manifest.json      sha256 of the files above, checked on every load
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from aimass.models.architecture import Signature, build_classifier
from aimass.config import ModelConfig
from aimass.errors import ArtifactIntegrityError
from aimass.integrity import write_manifest
from aimass.models.card import (CARD_FILE, EXPORT_FORMAT, PROGRAM_FILE, SAFETENSORS_FORMAT, TIMM_FORMAT,
                                TORCHVISION_FORMAT, TRANSFORMERS_FORMAT, WEIGHTS_FILE, ModelCard, ModelProvenance,
                                read_model_card)


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    card: ModelCard

    @property
    def signature(self) -> Signature:
        return Signature.of_model_card(self.card)


def save_model(directory: Path, module: nn.Module, model_config: ModelConfig, signature: Signature,
               provenance: ModelProvenance) -> dict:
    """Write a float model's weights, card and manifest into `directory`; returns the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    if model_config.library == "hf":
        from aimass.models.huggingface import save_network

        save_network(module, directory, signature.input_spec)
        return _write_card_and_manifest(directory, TRANSFORMERS_FORMAT, model_config, signature, provenance)
    if model_config.library == "timm":
        from aimass.models.timm_models import save_timm

        save_timm(module, directory, signature.input_spec, signature.class_names)
        return _write_card_and_manifest(directory, TIMM_FORMAT, model_config, signature, provenance)
    if model_config.library == "torchvision":
        from aimass.models.torchvision_models import save_torchvision

        save_torchvision(module, directory, signature.input_spec, signature.class_names)
        return _write_card_and_manifest(directory, TORCHVISION_FORMAT, model_config, signature, provenance)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    return _write_card_and_manifest(directory, SAFETENSORS_FORMAT, model_config, signature, provenance)


def save_exported_model(directory: Path, program: torch.export.ExportedProgram, model_config: ModelConfig,
                        signature: Signature, provenance: ModelProvenance) -> dict:
    """Write an exported (e.g. int8-quantised) program, card and manifest into `directory`; returns the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    # The archive would otherwise embed the example inputs as a pickle, which torch.export.load unpickles without
    # weights_only if a safe load fails; with none stored, every byte of the archive is JSON or raw tensor data.
    program._example_inputs = None
    torch.export.save(program, str(directory / PROGRAM_FILE))
    _refuse_pickled_entries(directory / PROGRAM_FILE)  # fail at write time, not when a server loads it
    return _write_card_and_manifest(directory, EXPORT_FORMAT, model_config, signature, provenance)


def _write_card_and_manifest(directory: Path, weights_format: str, model_config: ModelConfig,
                             signature: Signature, provenance: ModelProvenance) -> dict:
    card = ModelCard(**dict(provenance), weights_format=weights_format, architecture=model_config,
                     input=signature.input_spec.to_dict(), class_names=signature.class_names)
    (directory / CARD_FILE).write_text(card.to_json())
    return write_manifest(directory, {"kind": "aimass-model"})


def load_model(directory: Path) -> LoadedModel:
    """Rebuild the model from `directory` after verifying every file's sha256.

    Raises:
        ArtifactIntegrityError: a file is missing or differs from the manifest, or an export archive holds
            entries that would need unpickling.
    """
    card = read_model_card(directory)
    if card.weights_format == EXPORT_FORMAT:
        _refuse_pickled_entries(directory / PROGRAM_FILE)
        import torchao.quantization.pt2e  # noqa: F401  registers the quantized_decomposed ops int8 graphs call

        return LoadedModel(_InferenceProgram(torch.export.load(str(directory / PROGRAM_FILE)).module()), card)
    if card.weights_format == TRANSFORMERS_FORMAT:
        from aimass.models.huggingface import load_network

        return LoadedModel(load_network(directory), card)
    if card.weights_format == TIMM_FORMAT:
        from aimass.models.timm_models import load_timm

        return LoadedModel(load_timm(directory), card)
    if card.weights_format == TORCHVISION_FORMAT:
        from aimass.models.torchvision_models import load_torchvision

        return LoadedModel(load_torchvision(directory, card.architecture.library_name, len(card.class_names)), card)
    module = build_classifier(card.architecture, Signature.of_model_card(card))
    module.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    module.eval()
    return LoadedModel(module, card)


class _InferenceProgram(nn.Module):
    """An exported program behind the ordinary module interface. Exported graphs are already fixed in inference
    mode and refuse train()/eval(), which every caller of a model may use; here those only set the flag."""

    def __init__(self, program: nn.Module):
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> "_InferenceProgram":
        self.training = mode
        return self

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.program(inputs)


def compile_for_inference(module: nn.Module) -> nn.Module:
    """The model under torch.compile (inductor), for any batch size: int8 kernels exist only in its lowering.

    An exported program is compiled itself, not through the wrapper: every wrapper shares one `forward`, and dynamo
    keeps at most `recompile_limit` (8) compilations per function, so a process that loads model after model (a
    server following releases, compress profiling candidates) would silently fall back to eager execution, about
    10x slower at batch 1, after a few models. Each exported graph has a `forward` of its own."""
    if isinstance(module, _InferenceProgram):
        return _InferenceProgram(torch.compile(module.program, dynamic=True))
    return torch.compile(module, dynamic=True)


def _refuse_pickled_entries(archive: Path) -> None:
    """torch.export.load unpickles weights or constants flagged `use_pickle` (tensor subclasses) and any stored
    example inputs; refuse archives holding either."""
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            if "/sample_inputs/" in info.filename and info.file_size > 0:
                raise ArtifactIntegrityError(f"{archive} embeds pickled example inputs, which aimass never loads")
        for name in bundle.namelist():
            if name.endswith(("model_weights_config.json", "model_constants_config.json")):
                entries = json.loads(bundle.read(name)).get("config", {})
                pickled = sorted(key for key, entry in entries.items() if entry.get("use_pickle"))
                if pickled:
                    raise ArtifactIntegrityError(
                        f"{archive} stores {', '.join(pickled)} as pickles, which aimass never loads; "
                        "export the model with plain tensors (torchao's unwrap_tensor_subclass)")
