"""The Open Inference Protocol (KServe v2) over REST, for an image classifier whose input is C x H x W: request
parsing and response building, independent of any web framework.

A request carries one input, in JSON (`"data": [...]`) or, with the binary tensor extension KServe's client uses by
default, as raw bytes after the JSON header (`Inference-Header-Content-Length`):
    `image`   datatype BYTES, shape [N]: encoded images (JPEG, PNG, WebP, ...), any size; in JSON each element is
              the image's base64 text, in binary each element is a 4-byte little-endian length and the bytes. The
              server decodes and preprocesses them as ingest did (aimass/data/preprocess.py).
    `images`  a tensor at the model's input shape (C, H, W), already preprocessed: datatype UINT8 (0..255) or FP32
              (0..1), shape [N, C, H, W], [N, C*H*W], or [N, H, W] when C is 1.
The response has the outputs `label` (BYTES [N], the class name), `label_index` (INT64 [N]) and `probabilities`
(FP32 [N, classes]); with `"parameters": {"top_k": k}` also `top_k_labels` (BYTES [N, k]) and
`top_k_probabilities` (FP32 [N, k]), the k most probable classes, most probable first.
Every mistake in a request raises `InvalidRequest` whose message says what was wrong and what is expected.
"""
from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

INPUT_NAME = "images"
ENCODED_INPUT_NAME = "image"
LABEL_OUTPUT = "label"
LABEL_INDEX_OUTPUT = "label_index"
PROBABILITIES_OUTPUT = "probabilities"
TOP_K_LABELS_OUTPUT = "top_k_labels"
TOP_K_PROBABILITIES_OUTPUT = "top_k_probabilities"
OUTPUT_NAMES = (LABEL_OUTPUT, LABEL_INDEX_OUTPUT, PROBABILITIES_OUTPUT)
TOP_K_OUTPUT_NAMES = (TOP_K_LABELS_OUTPUT, TOP_K_PROBABILITIES_OUTPUT)
BINARY_HEADER = "inference-header-content-length"
_DTYPES = {"UINT8": np.uint8, "FP32": np.float32}


def accepted_shapes(input_shape: tuple[int, int, int]) -> list[list[int]]:
    """The per-image shapes a request may use for a model taking (C, H, W)."""
    channels, height, width = input_shape
    shapes = [[channels, height, width], [channels * height * width]]
    return shapes + ([[height, width]] if channels == 1 else [])


class InvalidRequest(ValueError):
    """The request is not a valid inference request for this model (an HTTP 400, or `status` when given)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestLimits:
    max_images: int  # per request
    max_image_bytes: int  # per encoded image


@dataclass(frozen=True)
class InferenceRequest:
    request_id: str | None
    outputs: tuple[str, ...]
    images: np.ndarray | None = None  # (N, C, H, W) uint8, when a tensor was sent
    encoded: tuple[bytes, ...] | None = None  # encoded image files, when `image` was sent
    top_k: int | None = None

    @property
    def count(self) -> int:
        return len(self.images) if self.images is not None else len(self.encoded)


def parse_infer_request(body: bytes, binary_header_length: str | None, limits: RequestLimits,
                        input_shape: tuple[int, int, int], class_count: int) -> InferenceRequest:
    """Decode an OIP v2 infer request for a model taking `input_shape` and answering `class_count` classes."""
    header_bytes, binary = _split_binary(body, binary_header_length)
    try:
        request = orjson.loads(header_bytes)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"the request body is not valid JSON: {error}") from None
    if not isinstance(request, dict):
        raise InvalidRequest('the request must be a JSON object: {"inputs": [{"name", "shape", "datatype", "data"}]}')
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidRequest(f'"inputs" must be a list holding exactly one input: encoded images '
                             f'("{ENCODED_INPUT_NAME}", BYTES) or an image tensor ("{INPUT_NAME}")')
    request_id = request.get("id")
    top_k = parse_top_k(request.get("parameters"), class_count)
    common = {"request_id": str(request_id) if request_id is not None else None, "top_k": top_k,
              "outputs": _requested_outputs(request.get("outputs"), top_k)}
    if inputs[0].get("name") == ENCODED_INPUT_NAME:
        return InferenceRequest(encoded=_encoded_images(inputs[0], binary, limits), **common)
    return InferenceRequest(images=_decode_images(inputs[0], binary, limits.max_images, input_shape), **common)


def parse_top_k(parameters: Any, class_count: int) -> int | None:
    top_k = (parameters or {}).get("top_k") if isinstance(parameters, dict) or parameters is None else None
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= class_count:
        raise InvalidRequest(f"parameters.top_k must be a whole number from 1 to {class_count} (the model's number of "
                             f"classes); got {top_k!r}")
    return top_k


def _encoded_images(tensor: dict[str, Any], binary: bytes | None, limits: RequestLimits) -> tuple[bytes, ...]:
    """The encoded images of a BYTES input: base64 strings in JSON, length-prefixed bytes in binary data."""
    if tensor.get("datatype") != "BYTES":
        raise InvalidRequest(f'input "{ENCODED_INPUT_NAME}" holds encoded images: its datatype must be BYTES, not '
                             f"{tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) in (1, 2) and all(isinstance(d, int) and not isinstance(d, bool)
                                                                       and d >= 1 for d in shape)
            and (len(shape) == 1 or shape[1] == 1)):
        raise InvalidRequest(f'input "{ENCODED_INPUT_NAME}" must have shape [N] (or [N, 1]): one element per image; '
                             f"got {shape!r}")
    count = shape[0]
    if count > limits.max_images:
        raise InvalidRequest(f"a request carries 1 to {limits.max_images} images; this one has {count}")
    binary_size = (tensor.get("parameters") or {}).get("binary_data_size")
    if binary_size is not None:
        if binary is None or binary_size != len(binary):
            raise InvalidRequest(f"binary_data_size is {binary_size}, but {len(binary or b'')} bytes follow the "
                                 "JSON header")
        images = _length_prefixed(binary, count)
    else:
        data = tensor.get("data")
        if not isinstance(data, list) or len(data) != count or not all(isinstance(item, str) for item in data):
            raise InvalidRequest(f'"data" of "{ENCODED_INPUT_NAME}" must be a list of {count} base64 strings, one '
                                 "per image")
        images = tuple(_from_base64(item, position) for position, item in enumerate(data))
    _refuse_large_images(images, limits)
    return images


def _refuse_large_images(images: list[bytes] | tuple[bytes, ...], limits: RequestLimits) -> None:
    for position, image in enumerate(images):
        if len(image) > limits.max_image_bytes:
            raise InvalidRequest(f"image {position} has {len(image)} bytes, more than serving.max_image_bytes "
                                 f"({limits.max_image_bytes}); send a smaller file", status=413)


def _from_base64(text: str, position: int) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"image {position} is not base64 text (in JSON, send each image file's bytes "
                             "base64-encoded)") from None


def _length_prefixed(binary: bytes, count: int) -> tuple[bytes, ...]:
    """Elements of a binary BYTES tensor: each a 4-byte little-endian length, then that many bytes."""
    images, offset = [], 0
    for position in range(count):
        if offset + 4 > len(binary):
            raise InvalidRequest(f"the binary data ends before image {position}'s 4-byte length")
        (length,) = struct.unpack_from("<I", binary, offset)
        offset += 4
        if offset + length > len(binary):
            raise InvalidRequest(f"image {position} declares {length} bytes, but only {len(binary) - offset} follow")
        images.append(binary[offset:offset + length])
        offset += length
    if offset != len(binary):
        raise InvalidRequest(f"{len(binary) - offset} bytes of binary data follow the {count} images the shape "
                             "announces")
    return tuple(images)


def infer_response(model_name: str, model_version: str, request: InferenceRequest, probabilities: np.ndarray,
                   class_names: list[str]) -> bytes:
    """The JSON response body for (N, classes) class probabilities."""
    outputs: list[dict[str, Any]] = []
    labels = probabilities.argmax(axis=1)
    if LABEL_OUTPUT in request.outputs:
        outputs.append({"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [len(labels)],
                        "data": [class_names[k] for k in labels]})
    if LABEL_INDEX_OUTPUT in request.outputs:
        outputs.append({"name": LABEL_INDEX_OUTPUT, "datatype": "INT64", "shape": [len(labels)],
                        "data": labels.tolist()})
    if PROBABILITIES_OUTPUT in request.outputs:
        outputs.append({"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": list(probabilities.shape),
                        "data": probabilities.ravel().tolist()})
    if request.top_k:
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :request.top_k]
        if TOP_K_LABELS_OUTPUT in request.outputs:
            outputs.append({"name": TOP_K_LABELS_OUTPUT, "datatype": "BYTES", "shape": list(top.shape),
                            "data": [class_names[k] for k in top.ravel()]})
        if TOP_K_PROBABILITIES_OUTPUT in request.outputs:
            outputs.append({"name": TOP_K_PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": list(top.shape),
                            "data": np.take_along_axis(probabilities, top, axis=1).ravel().tolist()})
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if request.request_id is not None:
        response["id"] = request.request_id
    return orjson.dumps(response)


def model_metadata(model_name: str, model_version: str, class_names: list[str],
                   input_shape: tuple[int, int, int]) -> dict[str, Any]:
    return {
        "name": model_name,
        "versions": [model_version],
        "platform": "pytorch",
        "inputs": [{"name": ENCODED_INPUT_NAME, "datatype": "BYTES", "shape": [-1]},
                   {"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, *input_shape]}],
        "outputs": [{"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]},
                    {"name": LABEL_INDEX_OUTPUT, "datatype": "INT64", "shape": [-1]},
                    {"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, len(class_names)]},
                    {"name": TOP_K_LABELS_OUTPUT, "datatype": "BYTES", "shape": [-1, -1]},
                    {"name": TOP_K_PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, -1]}],
        "parameters": {"class_names": class_names},
    }


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _split_binary(body: bytes, binary_header_length: str | None) -> tuple[bytes, bytes | None]:
    if binary_header_length is None:
        return body, None
    try:
        length = int(binary_header_length)
    except ValueError:
        raise InvalidRequest(f"Inference-Header-Content-Length must be an integer, got {binary_header_length!r}") \
            from None
    if not 0 < length <= len(body):
        raise InvalidRequest(f"Inference-Header-Content-Length is {length}, but the body has {len(body)} bytes")
    return body[:length], body[length:]


def _decode_images(tensor: dict[str, Any], binary: bytes | None, max_images: int,
                   input_shape: tuple[int, int, int]) -> np.ndarray:
    datatype = tensor.get("datatype")
    if datatype not in _DTYPES:
        raise InvalidRequest(f"datatype {datatype!r} is not accepted for the tensor input \"{INPUT_NAME}\": send UINT8 "
                             f"pixels (0..255) or FP32 (0..1), or encoded image files as the BYTES input "
                             f"\"{ENCODED_INPUT_NAME}\"")
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                       for d in shape)):
        raise InvalidRequest(f'"shape" must be a list of non-negative integers, [N, ...] with N images of one of '
                             f'the shapes {accepted_shapes(input_shape)}')
    count = shape[0]
    pixels = math.prod(input_shape)
    if shape[1:] not in accepted_shapes(input_shape):
        raise InvalidRequest(f"shape {shape} is not accepted: this model takes images of shape "
                             f"{list(input_shape)}; send [N, ...] with one of {accepted_shapes(input_shape)}")
    if not 1 <= count <= max_images:
        raise InvalidRequest(f"a request carries 1 to {max_images} images; this one has {count}")
    values = _tensor_values(tensor, binary, _DTYPES[datatype], count * pixels)
    if datatype == "FP32":
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise InvalidRequest("FP32 pixels must be finite and between 0 and 1 (or send UINT8 pixels 0..255)")
        values = np.rint(values * 255).astype(np.uint8)
    return values.reshape(count, *input_shape)


def _tensor_values(tensor: dict[str, Any], binary: bytes | None, dtype: type, expected: int) -> np.ndarray:
    binary_size = (tensor.get("parameters") or {}).get("binary_data_size")
    if binary_size is not None:
        if binary is None or binary_size != len(binary):
            raise InvalidRequest(f"binary_data_size is {binary_size}, but {len(binary or b'')} bytes follow the "
                                 "JSON header")
        if binary_size != expected * np.dtype(dtype).itemsize:
            raise InvalidRequest(f"{binary_size} bytes of binary data do not hold {expected} "
                                 f"{np.dtype(dtype).name} values")
        return np.frombuffer(binary, dtype=dtype).copy()  # torch wants writable memory
    data = tensor.get("data")
    if data is None:
        raise InvalidRequest('the input has no "data" (and no binary_data_size parameter)')
    try:
        values = np.asarray(data, dtype=np.float64 if dtype is np.float32 else np.int64).ravel()
    except (ValueError, TypeError):
        raise InvalidRequest('"data" must hold numbers only, as a flat or nested list') from None
    if values.size != expected:
        raise InvalidRequest(f'"data" holds {values.size} values, but the shape asks for {expected}')
    if dtype is np.uint8 and (values.min() < 0 or values.max() > 255):
        raise InvalidRequest("UINT8 pixels must be between 0 and 255")
    return values.astype(dtype)


def _requested_outputs(outputs: Any, top_k: int | None) -> tuple[str, ...]:
    available = OUTPUT_NAMES + (TOP_K_OUTPUT_NAMES if top_k else ())
    if outputs is None:
        return available
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and "name" in o for o in outputs):
        raise InvalidRequest('"outputs" must be a list of {"name": ...} objects')
    names = tuple(o["name"] for o in outputs)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise InvalidRequest(f"unknown output(s) {unknown}; this model has {list(available)}"
                             + ("" if top_k else " (top_k outputs need parameters.top_k)"))
    return names


def parse_v1_request(body: bytes, limits: RequestLimits, class_count: int) -> InferenceRequest:
    """KServe's v1 protocol: `{"instances": [{"image": {"b64": "..."}}, ...], "parameters": {"top_k": k}}`."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"the request body is not valid JSON: {error}") from None
    instances = request.get("instances") if isinstance(request, dict) else None
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest('a v1 request is {"instances": [{"image": {"b64": "<base64 of an image file>"}}, ...]}')
    if len(instances) > limits.max_images:
        raise InvalidRequest(f"a request carries 1 to {limits.max_images} images; this one has {len(instances)}")
    images = []
    for position, instance in enumerate(instances):
        encoded = instance.get("image") if isinstance(instance, dict) else None
        if not isinstance(encoded, dict) or not isinstance(encoded.get("b64"), str):
            raise InvalidRequest(f'instance {position} must be {{"image": {{"b64": "<base64 of an image file>"}}}}')
        images.append(_from_base64(encoded["b64"], position))
    _refuse_large_images(images, limits)
    top_k = parse_top_k(request.get("parameters"), class_count)
    return InferenceRequest(request_id=None, outputs=OUTPUT_NAMES + (TOP_K_OUTPUT_NAMES if top_k else ()),
                            encoded=tuple(images), top_k=top_k)


def v1_response(probabilities: np.ndarray, class_names: list[str], top_k: int | None,
                model_version: str) -> bytes:
    """`{"predictions": [{"label", "label_index", "probabilities", ["top_k"]}, ...], "model_version"}`, one
    prediction per instance; the version that answered, as in v2 (a canary answers some requests)."""
    predictions = []
    for row in probabilities:
        index = int(row.argmax())
        prediction: dict[str, Any] = {"label": class_names[index], "label_index": index,
                                      "probabilities": row.tolist()}
        if top_k:
            best = np.argsort(-row, kind="stable")[:top_k]
            prediction["top_k"] = [{"label": class_names[k], "probability": float(row[k])} for k in best]
        predictions.append(prediction)
    return orjson.dumps({"predictions": predictions, "model_version": model_version})
