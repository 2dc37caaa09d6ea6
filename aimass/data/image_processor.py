"""A Hugging Face image processor's settings (`preprocessor_config.json`, with `config.json`'s channels) as aimass's
one preprocessing (aimass/data/preprocess.py) reproduces them, and the way back for a model aimass saves.
Only JSON is read here.

How an image processor's settings map onto aimass's preprocessing:
    size {height, width} or an int   -> that size, `squash` (what ViT's processor does)
    size {shortest_edge} [+ crop]    -> `center-crop` to crop_size (else shortest_edge) on both sides; a crop_pct
                                        margin (ConvNeXT) is not reproduced: the whole shorter side is kept
    resample (Pillow's filter number) -> the same filter
    image_mean / image_std           -> the per-channel scaling (do_normalize false: none)
    rescale_factor                   -> must be 1/255 (pixels to 0..1), the only scale aimass applies
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aimass.data.preprocess import InputSpec
from aimass.errors import ConfigError

CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
# Pillow's Image.Resampling values, as image processors store them.
_PILLOW_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class CheckpointPreprocessing:
    """What a checkpoint fixes about its input; None where its files leave the choice to the data set."""

    channels: int  # the network's input channels (config.json num_channels)
    height: int | None = None
    width: int | None = None
    resize: str | None = None
    resample: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def read_preprocessing(folder: Path) -> CheckpointPreprocessing:
    """The checkpoint's input: channels from config.json; size, filter, mean and std from its image processor
    (preprocessor_config.json) when it has one.

    Raises:
        ConfigError: settings aimass cannot reproduce exactly (another rescale factor, a mean of the wrong length).
    """
    channels = int(json.loads((folder / CONFIG_FILE).read_text()).get("num_channels", 3))
    if channels not in (1, 3):
        raise ConfigError(f"{folder / CONFIG_FILE}: num_channels={channels}; aimass feeds images of 1 or 3 channels")
    processor_path = folder / PROCESSOR_FILE
    if not processor_path.is_file():
        return CheckpointPreprocessing(channels)
    settings = json.loads(processor_path.read_text())
    if settings.get("do_rescale", True) and abs(settings.get("rescale_factor", 1 / 255) - 1 / 255) > 1e-9:
        raise ConfigError(f"{processor_path}: rescale_factor={settings['rescale_factor']}; aimass scales pixels by "
                          "1/255 only")
    height, width, resize = _size(settings, processor_path)
    mean, std = None, None
    if settings.get("do_normalize", True) and "image_mean" in settings:
        mean, std = _per_channel(settings["image_mean"], channels), _per_channel(settings["image_std"], channels)
    elif not settings.get("do_normalize", True):
        mean, std = (0.0,) * channels, (1.0,) * channels
    resample = _PILLOW_FILTERS.get(settings.get("resample"), None) if "resample" in settings else None
    return CheckpointPreprocessing(channels, height, width, resize, resample, mean, std)


def _size(settings: dict, path: Path) -> tuple[int | None, int | None, str | None]:
    size = settings.get("size")
    if size is None:
        return None, None, None
    if isinstance(size, int):
        return size, size, "squash"
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"]), "squash"
    if "shortest_edge" in size:
        crop = settings.get("crop_size") if settings.get("do_center_crop", False) else None
        if isinstance(crop, dict) and "height" in crop:
            return int(crop["height"]), int(crop["width"]), "center-crop"
        side = int(crop if isinstance(crop, int) else size["shortest_edge"])
        return side, side, "center-crop"
    raise ConfigError(f"{path}: size {size} is not one aimass reads ({{height, width}}, shortest_edge or an int)")


def _per_channel(values, channels: int) -> tuple[float, ...]:
    values = (values,) if isinstance(values, (int, float)) else tuple(values)
    if len(values) == 1:  # a grey statistic for a colour network: the same on every channel
        values = values * channels
    if len(values) != channels:
        raise ConfigError(f"the image processor's mean/std {values} do not match the checkpoint's {channels} "
                          "input channels")
    return tuple(float(value) for value in values)


def processor_settings(spec: InputSpec) -> dict | None:
    """Image-processor settings that reproduce `spec`, written beside a Hugging Face model trained by aimass so the
    model is itself a checkpoint to start from; None for `pad`, which no stock processor does."""
    if spec.resize == "pad":
        return None
    channels = spec.model_shape[0]
    size = ({"height": spec.height, "width": spec.width} if spec.resize == "squash"
            else {"shortest_edge": min(spec.height, spec.width)})
    crop = {"do_center_crop": True, "crop_size": {"height": spec.height, "width": spec.width}} \
        if spec.resize == "center-crop" else {}
    return {"image_processor_type": "ViTImageProcessor" if spec.resize == "squash" else "ConvNextImageProcessor",
            "do_resize": True, "size": size, **crop,
            "resample": {name: number for number, name in _PILLOW_FILTERS.items()}[spec.resample],
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(_per_channel(spec.mean, channels)), "image_std": list(_per_channel(spec.std, channels))}


def apply_preprocessing(spec: InputSpec, checkpoint: CheckpointPreprocessing) -> InputSpec:
    """The data set's input spec under what the checkpoint fixes: its size, filter, channels, mean and std.

    A one-channel checkpoint gets grey images; a three-channel one gets the images as they are (grey ones are
    repeated to three channels when normalised)."""
    return InputSpec(channels=1 if checkpoint.channels == 1 else spec.channels,
                     height=checkpoint.height or spec.height, width=checkpoint.width or spec.width,
                     resize=checkpoint.resize or spec.resize, resample=checkpoint.resample or spec.resample,
                     mean=checkpoint.mean or spec.mean, std=checkpoint.std or spec.std)
