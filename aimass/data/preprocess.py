"""The one preprocessing of aimass: an image file or array becomes the model's input, the same way at ingest,
training, evaluation and serving.

Two steps, split where the data is stored:
    decode  any image Pillow reads -> uint8 array (C, H, W) at the data set's input size and channels
            (`preprocess_image`); ingest stores these arrays, the server applies it to each uploaded image
    scale   uint8 (N, C, H, W) -> float32 on the 0..1 scale, then per-channel (x - mean) / std (`to_model_input`);
            the mean and std are the training split's, recorded in the data card and the model card

Resize modes (`data.resize`): `squash` stretches to the target size, `center-crop` scales the shorter side to fit
and crops the centre, `pad` scales the longer side to fit and pads with black. A pretrained model's evaluation
transform may look at the central `crop_fraction` of the image only (timm's crop_pct, torchvision's crop/resize size,
e.g. 224/256): `squash` and `center-crop` then resize to size / crop_fraction and crop the centre, as those libraries
do. Resampling is bilinear unless a
Hugging Face checkpoint's image processor names another filter; Pillow's filters antialias, so a large photo shrinks
without aliasing.

A model may take more channels than the images have: a grey image feeds a three-channel checkpoint by repeating its
channel, in `normalize`, before the checkpoint's per-channel mean and std apply (as an RGB conversion would).

This module imports only numpy and Pillow at the top (torch lazily): ingest's decoding worker processes import it.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:
    import torch

RESIZE_MODES = ("squash", "center-crop", "pad")
RESAMPLING = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
              "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
              "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
# A decompression bomb (a small file that decodes to billions of pixels) is refused before it is decoded.
DEFAULT_MAX_PIXELS = 64 * 2**20


class ImageDecodeError(ValueError):
    """A file or upload is not an image Pillow can decode whole (truncated, not an image, too many pixels)."""


@dataclass(frozen=True)
class InputSpec:
    """What the model takes: images of `channels` x `height` x `width`, scaled with a per-channel `mean` and `std`
    (0..1 scale): the training split's, or a pretrained checkpoint's. Saved in the data card and every model card.
    `mean` and `std` may have more entries than `channels`: the model then takes that many channels (see
    `normalize`)."""

    channels: int  # 1 (grey) or 3 (RGB): the stored images' and the server's uint8 tensor input's
    height: int
    width: int
    resize: str = "squash"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    resample: str = "bilinear"  # a key of RESAMPLING
    crop_fraction: float = 1.0  # squash and center-crop: the central share of each side kept (timm's crop_pct)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Of the stored uint8 images."""
        return self.channels, self.height, self.width

    @property
    def model_shape(self) -> tuple[int, int, int]:
        """Of the float tensor the model takes."""
        return max(self.channels, len(self.mean)), self.height, self.width

    def to_dict(self) -> dict:
        values = {**asdict(self), "mean": list(self.mean), "std": list(self.std), "dtype": "uint8"}
        if self.crop_fraction == 1.0:  # absent means the whole image, so cards written before the field read the same
            del values["crop_fraction"]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> InputSpec:
        return cls(channels=int(values["channels"]), height=int(values["height"]), width=int(values["width"]),
                   resize=values.get("resize", "squash"), mean=tuple(values.get("mean", ())),
                   std=tuple(values.get("std", ())), resample=values.get("resample", "bilinear"),
                   crop_fraction=float(values.get("crop_fraction", 1.0)))


def image_mode(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


def open_image(source: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a file or encoded bytes completely (the first frame of an animation), applying its EXIF rotation.

    Raises:
        ImageDecodeError: saying why: not an image, truncated, or more than `max_pixels` pixels.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            if image.width * image.height > max_pixels:
                raise ImageDecodeError(f"{image.width}x{image.height} pixels is more than the limit of {max_pixels}")
            image.seek(0)
            image.load()  # decodes every byte: a truncated file fails here, not later in training
            return ImageOps.exif_transpose(image)
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"cannot be decoded ({error})") from None


def image_channels(image: Image.Image) -> int:
    """1 for grey-scale images (with or without alpha), 3 for anything in colour."""
    return 1 if image.mode in ("1", "L", "LA", "I", "I;16", "F") else 3


def preprocess_image(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """A decoded image -> uint8 array (C, H, W) at the spec's size and channels."""
    image = image.convert(image_mode(spec.channels))
    size = (spec.width, spec.height)
    resample = RESAMPLING[spec.resample]
    if spec.crop_fraction < 1.0 and spec.resize in ("squash", "center-crop"):
        image = _resize_then_crop(image, spec, resample)
    elif image.size != size:
        if spec.resize == "center-crop":
            image = ImageOps.fit(image, size, resample)
        elif spec.resize == "pad":
            image = ImageOps.pad(image, size, resample, color=0)
        else:
            image = image.resize(size, resample)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _resize_then_crop(image: Image.Image, spec: InputSpec, resample: Image.Resampling) -> Image.Image:
    """timm's and torchvision's eval transform, step for step, so a pretrained model sees the pixels it was trained
    on: resize to side / crop_fraction (the shorter side for `center-crop`, each side for `squash`), then crop the
    centre at the spec's size."""
    scaled_height = math.floor(spec.height / spec.crop_fraction)
    scaled_width = math.floor(spec.width / spec.crop_fraction)
    if spec.resize == "squash":
        target = (scaled_width, scaled_height)
    else:  # the shorter side scaled, the other in proportion (torchvision's Resize(int) truncates it)
        ratio = max(scaled_width / image.width, scaled_height / image.height)
        target = (max(scaled_width, int(image.width * ratio)), max(scaled_height, int(image.height * ratio)))
    image = image.resize(target, resample)
    left = int(round((image.width - spec.width) / 2.0))
    top = int(round((image.height - spec.height) / 2.0))
    return image.crop((left, top, left + spec.width, top + spec.height))


def preprocess_array(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A stored uint8 image (H, W) or (H, W, C) -> (C, H, W) under the spec, through the same Pillow path."""
    if pixels.ndim == 2 and spec.channels == 1 and pixels.shape == (spec.height, spec.width):
        return pixels[np.newaxis]
    return preprocess_image(Image.fromarray(pixels), spec)


def decode_uploads(encoded: tuple[bytes, ...], spec: InputSpec, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Uploaded image files -> uint8 (N, C, H, W) under `spec`, as ingest decoded the training images.

    Raises:
        ImageDecodeError: naming the image (its position in the request) and why it cannot be decoded.
    """
    return decode_uploads_with_sources(encoded, spec, max_pixels)[0]


def decode_uploads_with_sources(encoded: tuple[bytes, ...], spec: InputSpec,
                                max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """`decode_uploads`, and each original's (width, height, channels) as ingest records them (N, 3), for the
    server's drift window."""
    images = np.empty((len(encoded), *spec.shape), dtype=np.uint8)
    sources = np.empty((len(encoded), 3), dtype=np.int32)
    for position, data in enumerate(encoded):
        try:
            image = open_image(data, max_pixels)
        except ImageDecodeError as error:
            raise ImageDecodeError(f"image {position}: {error}") from None
        sources[position] = (image.width, image.height, image_channels(image))
        images[position] = preprocess_image(image, spec)
    return images, sources


def tensor_sources(images: np.ndarray) -> np.ndarray:
    """(width, height, channels) of images sent as a tensor (N, C, H, W): their originals are the tensor."""
    count, channels, height, width = images.shape
    return np.tile(np.array([width, height, channels], dtype=np.int32), (count, 1))


def unit_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float32 tensor (N, C, H, W) on the 0..1 scale, on `device`."""
    import torch

    pixels = torch.from_numpy(np.require(images, requirements=["C", "W"])).to(device)  # read-only maps: a copy
    return pixels.float().div_(255.0)


def normalize(unit_images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """0..1 images (N, C, H, W) -> the zero-centred inputs the model expects (per-channel mean and std); a grey
    image's channel repeated first when the model takes three."""
    import torch

    if unit_images.shape[1] == 1 and len(spec.mean) > 1:
        unit_images = unit_images.expand(-1, len(spec.mean), -1, -1)
    mean = torch.tensor(spec.mean, dtype=unit_images.dtype, device=unit_images.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=unit_images.dtype, device=unit_images.device).view(1, -1, 1, 1)
    return (unit_images - mean) / std


def to_model_input(images: np.ndarray, spec: InputSpec, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images (N, C, H, W) -> normalised float32 model input on `device`."""
    return normalize(unit_tensor(images, device), spec)


# Below this many tasks a process pool costs more to start than it saves.
_SERIAL_BELOW = 2


def imap_in_processes(function, items: list, chunksize: int = 64):
    """`function(item)` for each item, on every CPU this process may use, yielded in order as they complete (so a
    caller can stream results to disk instead of holding them all).

    Worker processes start with the forkserver method: a fork of a parent that already runs threads (torch,
    kfp.local, a web server) can deadlock. `function` must be importable from a light module.
    """
    import multiprocessing
    import os

    workers = len(os.sched_getaffinity(0))
    if len(items) < _SERIAL_BELOW or workers == 1:
        yield from map(function, items)
        return
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        yield from pool.imap(function, items, chunksize=chunksize)


def decode_file(path: Path, spec: InputSpec) -> np.ndarray:
    """An image file -> uint8 (C, H, W) under `spec`."""
    return preprocess_image(open_image(path), spec)


def decode_files(paths: list[Path], spec: InputSpec) -> np.ndarray:
    """Image files -> uint8 (N, C, H, W): ingest's worker task. One task decodes many files, so a small image's
    decoding is not outweighed by the cost of sending it between processes."""
    return np.stack([decode_file(path, spec) for path in paths]) if paths else np.zeros((0, *spec.shape), np.uint8)
