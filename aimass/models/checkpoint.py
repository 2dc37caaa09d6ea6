"""A Hugging Face image-classification checkpoint as aimass reads it before any model is built: where its files are,
their sha256 (the model card's lineage names the exact pretrained weights), and the preprocessing its image
processor asks for (read by aimass/data/image_processor.py), which then drives the one shared preprocessing
(aimass/data/preprocess.py) at ingest, training, evaluation and serving.

Only JSON is read here (no torch, no transformers), so ingest can ask for the input size cheaply.
"""
from __future__ import annotations

from pathlib import Path

from aimass.config import HF_PREFIX, ModelConfig
from aimass.data.image_processor import CONFIG_FILE, PROCESSOR_FILE, CheckpointPreprocessing, read_preprocessing
from aimass.errors import ConfigError
from aimass.integrity import sha256_file


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


def model_preprocessing(model: ModelConfig) -> CheckpointPreprocessing | None:
    """What the configured architecture fixes about its input; None for the built-in CNN (the data decides)."""
    return None if model.is_built_in else read_preprocessing(checkpoint_folder(model.architecture))


