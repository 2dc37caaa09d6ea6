"""A pretrained checkpoint as aimass reads it before any model is built: where its files are, their sha256 (the model
card's lineage names the exact pretrained weights), and the preprocessing it asks for (translated by
aimass/data/image_processor.py), which then drives the one shared preprocessing (aimass/data/preprocess.py) at
ingest, training, evaluation and serving. Three kinds:
    hf:FOLDER                 a Hugging Face save_pretrained folder (or a Hub id, fetched where the Hub is reachable)
    timm:NAME + checkpoint    a folder as timm's save_pretrained/push_to_hub writes it: config.json (pretrained_cfg)
                              and model.safetensors
    torchvision:NAME + checkpoint
                              a .safetensors state dict (or a folder holding model.safetensors, as aimass saves one);
                              its preprocessing is the one aimass recorded in it, else the builder's default weights'

Weights are safetensors only: a pickled checkpoint (.bin, .pth, .pt) is refused, never loaded. Only JSON and
safetensors headers are read here (no transformers, no timm), so ingest can ask for the input size cheaply.
"""
from __future__ import annotations

import json
from pathlib import Path

from aimass.config import HF_PREFIX, ModelConfig
from aimass.data.image_processor import (CONFIG_FILE, PROCESSOR_FILE, CheckpointPreprocessing, read_preprocessing,
                                         timm_preprocessing, torchvision_preprocessing)
from aimass.errors import ConfigError
from aimass.integrity import sha256_file

WEIGHTS_FILE = "model.safetensors"
# Where a torchvision checkpoint aimass saved records its preprocessing (safetensors metadata: strings only).
PREPROCESSING_METADATA = "aimass.preprocessing"
CLASS_NAMES_METADATA = "aimass.class_names"
_PICKLED_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".tar")


def checkpoint_folder(architecture: str) -> Path:
    """The local folder of `hf:CHECKPOINT`: the folder itself, or the Hub's files fetched into its cache.

    Raises:
        ConfigError: no such folder, no config.json in it, or a Hub id that cannot be fetched (saying how to
            provide the checkpoint as a folder instead).
    """
    source = architecture.removeprefix(HF_PREFIX)
    folder = Path(source).expanduser()
    if not folder.exists():
        if source.startswith(("/", ".", "~")) or source.count("/") > 1:
            raise ConfigError(f"model.architecture={architecture}: no such folder")
        folder = _fetch_from_hub(source)
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(f"model.architecture={architecture}: {folder} holds no {CONFIG_FILE}; give a folder "
                          "written by a Hugging Face model's save_pretrained")
    return folder


def _fetch_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:  # weights as safetensors only: a pickled pytorch_model.bin is never fetched, so never loaded
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as error:  # noqa: BLE001 - offline, unknown id, gated: all mean "give a folder"
        raise ConfigError(
            f"model.architecture=hf:{repo_id}: no such folder, and the Hugging Face Hub cannot provide it "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Where the Hub is not "
            "reachable, save the checkpoint with save_pretrained on a machine that reaches it and give that "
            "folder") from None


def checkpoint_files(folder: Path) -> dict[str, str]:
    """sha256 of the files that define the checkpoint: its configs and its weights."""
    names = sorted(path.name for path in folder.iterdir()
                   if path.name in (CONFIG_FILE, PROCESSOR_FILE) or path.suffix == ".safetensors")
    return {name: sha256_file(folder / name) for name in names}


def timm_checkpoint_folder(model: ModelConfig) -> Path:
    """The folder of a timm checkpoint, checked: config.json naming model.architecture's network, and its weights
    as safetensors (a folder with config.json alone and no weight file of any kind gives that network and
    preprocessing from random weights, as a Hugging Face folder does).

    Raises:
        ConfigError: naming the path: missing, not a folder, no config.json, another network, or weights that are
            not safetensors.
    """
    folder = _existing(model)
    if not folder.is_dir():
        raise ConfigError(f"model.checkpoint={folder}: a timm checkpoint is a folder (config.json, {WEIGHTS_FILE}) "
                          "as timm's save_pretrained writes it, not a file")
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(f"model.checkpoint={folder} holds no {CONFIG_FILE}; give a folder written by timm's "
                          "save_pretrained or push_to_hub")
    saved = str(json.loads((folder / CONFIG_FILE).read_text()).get("architecture", ""))
    if saved.split(".")[0] != model.library_name.split(".")[0]:
        raise ConfigError(f"model.checkpoint={folder} holds a timm {saved or 'network of no architecture'}, "
                          f"model.architecture names {model.library_name}: set model.architecture=timm:{saved}")
    if (folder / WEIGHTS_FILE).exists() or _pickled_files(folder):
        _check_safetensors(folder / WEIGHTS_FILE, folder)
    return folder


def torchvision_checkpoint_file(model: ModelConfig) -> Path:
    """The .safetensors state dict of a torchvision checkpoint (a folder stands for its model.safetensors), checked.

    Raises:
        ConfigError: naming the path: missing, pickled, or not a safetensors file.
    """
    path = _existing(model)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    _check_safetensors(weights, path)
    return weights


def _existing(model: ModelConfig) -> Path:
    path = Path(model.checkpoint).expanduser()
    if not path.exists():
        raise ConfigError(f"model.checkpoint={path}: no such file or folder (nothing is downloaded: save the "
                          "checkpoint where this step can read it)")
    return path


def _check_safetensors(weights: Path, given: Path) -> None:
    from safetensors import SafetensorError, safe_open

    pickled = _pickled_files(given)
    if given.is_file() and pickled:
        raise ConfigError(f"model.checkpoint={given}: {given.name} is a pickle, which aimass never loads; convert it "
                          f"once, on a machine you trust: safetensors.torch.save_file(torch.load('{given.name}', "
                          f"weights_only=True), '{given.stem}.safetensors')")
    if not weights.is_file():
        found = f" (it holds {', '.join(pickled)}: pickles, which aimass never loads)" if pickled else ""
        raise ConfigError(f"model.checkpoint={given}: no {weights.name}{found}; save the weights as safetensors "
                          "(safetensors.torch.save_file(model.state_dict(), ...) or save_pretrained)")
    try:
        with safe_open(str(weights), framework="numpy"):
            pass
    except (SafetensorError, OSError, ValueError) as error:
        raise ConfigError(f"model.checkpoint={given}: {weights.name} is not a safetensors file ({error}); aimass "
                          "loads weights from safetensors only, never pickles") from None


def _pickled_files(given: Path) -> list[str]:
    return sorted(path.name for path in ([given] if given.is_file() else given.iterdir())
                  if path.suffix in _PICKLED_SUFFIXES)


def torchvision_metadata(weights: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(weights), framework="numpy") as handle:
        return handle.metadata() or {}


def library_checkpoint_files(model: ModelConfig) -> dict[str, str]:
    """sha256 of a timm or torchvision checkpoint's files, for the model card's lineage."""
    if model.library == "timm":
        return checkpoint_files(timm_checkpoint_folder(model))
    weights = torchvision_checkpoint_file(model)
    return {weights.name: sha256_file(weights)}


def model_preprocessing(model: ModelConfig) -> CheckpointPreprocessing | None:
    """What the configured architecture fixes about its input; None where the data decides (the built-in CNN, a
    timm model from random weights)."""
    if model.library == "hf":
        return read_preprocessing(checkpoint_folder(model.architecture))
    if model.library == "timm" and model.checkpoint is not None:
        folder = timm_checkpoint_folder(model)
        return timm_preprocessing(json.loads((folder / CONFIG_FILE).read_text()).get("pretrained_cfg", {}),
                                  folder / CONFIG_FILE)
    if model.library == "torchvision":
        if model.checkpoint is None:
            return CheckpointPreprocessing(channels=3)  # its builders take RGB; the data decides the rest
        recorded = torchvision_metadata(torchvision_checkpoint_file(model)).get(PREPROCESSING_METADATA)
        return CheckpointPreprocessing.from_json(recorded) if recorded else _default_weights_preprocessing(model)
    return None


def _default_weights_preprocessing(model: ModelConfig) -> CheckpointPreprocessing:
    """The eval transform of the builder's default weights (metadata in torchvision's code: nothing downloads)."""
    import torchvision

    try:
        transforms = torchvision.models.get_model_weights(model.library_name).DEFAULT.transforms()
    except (ValueError, AttributeError):
        return CheckpointPreprocessing(channels=3)  # a builder with no published weights: the data decides
    return torchvision_preprocessing(transforms.crop_size[0], transforms.resize_size[0], transforms.mean,
                                     transforms.std, transforms.interpolation.value)


