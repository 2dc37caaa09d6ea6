"""A pretrained model's own preprocessing as aimass's one preprocessing (aimass/data/preprocess.py) reproduces it:
a Hugging Face image processor (`preprocessor_config.json`, with `config.json`'s channels), timm's `pretrained_cfg`
and torchvision's weights transforms; and the way back for a model aimass saves. Only JSON and plain values are read
here (no torch).

How timm's pretrained_cfg maps (its eval transform, timm.data.create_transform):
    input_size (C, H, W)             -> channels and size
    crop_pct, crop_mode              -> crop_fraction; center -> `center-crop`, squash -> `squash`, border -> `pad`
    interpolation, mean, std         -> the same filter and per-channel scaling
torchvision's ImageClassification(resize_size, crop_size, mean, std, interpolation) is `center-crop` to crop_size with
crop_fraction = crop_size / resize_size (224/256 for most of its weights).

How an image processor's settings map onto aimass's preprocessing:
    size {height, width} or an int   -> that size, `squash` (what ViT's processor does)
    size {shortest_edge} [+ crop]    -> `center-crop` to crop_size (else shortest_edge) on both sides; ConvNeXT's
                                        crop_pct (below 384 pixels) is the crop_fraction (where a margin is odd,
                                        transformers crops one pixel nearer the top/left than timm and
                                        torchvision, whose rounding aimass follows)
    resample (Pillow's filter number) -> the same filter
    image_mean / image_std           -> the per-channel scaling (do_normalize false: none)
    rescale_factor                   -> must be 1/255 (pixels to 0..1), the only scale aimass applies
"""
from __future__ import annotations

import dataclasses
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
    crop_fraction: float | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CheckpointPreprocessing:
        values = json.loads(text)
        return cls(**{**values, **{key: tuple(values[key]) for key in ("mean", "std") if values.get(key)}})

    @classmethod
    def of_spec(cls, spec: InputSpec) -> CheckpointPreprocessing:
        """Everything `spec` fixes, for a checkpoint aimass saves."""
        return cls(spec.model_shape[0], spec.height, spec.width, spec.resize, spec.resample, spec.mean, spec.std,
                   spec.crop_fraction)


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
    return CheckpointPreprocessing(channels, height, width, resize, resample, mean, std,
                                   _convnext_crop_fraction(settings, height))


def _convnext_crop_fraction(settings: dict, side: int | None) -> float | None:
    """ConvNeXT's processor resizes the shorter side to shortest_edge / crop_pct and crops shortest_edge, below 384
    pixels (above, it squashes to the size, which `_size` reads as a centre crop of the whole side)."""
    if "crop_pct" not in settings or side is None or side >= 384 or "shortest_edge" not in (settings.get("size") or {}):
        return None
    return float(settings["crop_pct"])


_TIMM_CROP_MODES = {"center": "center-crop", "squash": "squash", "border": "pad"}


def timm_preprocessing(pretrained_cfg: dict, where: Path) -> CheckpointPreprocessing:
    """What a timm checkpoint's pretrained_cfg (config.json) fixes about its input.

    Raises:
        ConfigError: an input size, crop mode or filter aimass cannot reproduce, naming the file.
    """
    try:
        channels, height, width = (int(value) for value in pretrained_cfg["input_size"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: pretrained_cfg.input_size must be [channels, height, width], found "
                          f"{pretrained_cfg.get('input_size')!r}") from None
    if channels not in (1, 3):
        raise ConfigError(f"{where}: the checkpoint takes {channels}-channel images; aimass feeds 1 or 3 channels")
    mode = pretrained_cfg.get("crop_mode", "center")
    if mode not in _TIMM_CROP_MODES:
        raise ConfigError(f"{where}: crop_mode {mode!r} is not one aimass reproduces ({', '.join(_TIMM_CROP_MODES)})")
    interpolation = pretrained_cfg.get("interpolation", "bilinear")
    if interpolation not in _PILLOW_FILTERS.values():
        raise ConfigError(f"{where}: interpolation {interpolation!r} is not a filter aimass has "
                          f"({', '.join(_PILLOW_FILTERS.values())})")
    mean = _per_channel(pretrained_cfg["mean"], channels) if "mean" in pretrained_cfg else None
    std = _per_channel(pretrained_cfg["std"], channels) if "std" in pretrained_cfg else None
    crop = pretrained_cfg.get("crop_pct")
    return CheckpointPreprocessing(channels, height, width, _TIMM_CROP_MODES[mode], interpolation, mean, std,
                                   float(crop) if crop is not None and mode != "border" else None)


def torchvision_preprocessing(crop_size: int, resize_size: int, mean, std,
                              interpolation: str) -> CheckpointPreprocessing:
    """What torchvision's ImageClassification transform of a weights entry does: resize the shorter side to
    resize_size, crop crop_size, scale by mean and std, always on three channels."""
    if interpolation not in _PILLOW_FILTERS.values():
        raise ConfigError(f"torchvision's interpolation {interpolation!r} is not a filter aimass has")
    return CheckpointPreprocessing(3, crop_size, crop_size, "center-crop", interpolation, _per_channel(mean, 3),
                                   _per_channel(std, 3), crop_size / resize_size)


def timm_data_config(spec: InputSpec) -> dict:
    """timm's data config for `spec` (the inverse of `timm_preprocessing`), saved in a timm model aimass trains so
    its folder is a checkpoint that brings its preprocessing along."""
    channels = spec.model_shape[0]
    return {"input_size": spec.model_shape, "interpolation": spec.resample, "crop_pct": spec.crop_fraction,
            "crop_mode": {mode: name for name, mode in _TIMM_CROP_MODES.items()}[spec.resize],
            "mean": _per_channel(spec.mean, channels), "std": _per_channel(spec.std, channels)}


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
    """The data set's input spec under what the checkpoint fixes: its size, filter, crop, channels, mean and std.

    A one-channel checkpoint gets grey images; a three-channel one gets the images as they are (grey ones are
    repeated to three channels when normalised; where the checkpoint names no mean and std, the training split's
    are repeated to its channels)."""
    return InputSpec(channels=1 if checkpoint.channels == 1 else spec.channels,
                     height=checkpoint.height or spec.height, width=checkpoint.width or spec.width,
                     resize=checkpoint.resize or spec.resize, resample=checkpoint.resample or spec.resample,
                     mean=checkpoint.mean or spec.mean, std=checkpoint.std or spec.std,
                     crop_fraction=checkpoint.crop_fraction or spec.crop_fraction)
