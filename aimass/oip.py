"""The Open Inference Protocol (KServe v2) over REST, for an image classifier whose input is C x H x W: request
parsing and response building, independent of any web framework.

A request carries one input tensor of images, in JSON (`"data": [...]`, row-major, flattened or nested) or, with
the binary tensor extension KServe's client uses by default, as raw bytes after the JSON header
(`Inference-Header-Content-Length`). Accepted forms, for the model's input shape (C, H, W):
    datatype UINT8, pixel values 0..255         datatype FP32, pixel values 0..1
    shape [N, C, H, W], [N, C*H*W], or [N, H, W] when C is 1
The response has three outputs: `label` (BYTES [N], the class name), `label_index` (INT64 [N]) and `probabilities`
(FP32 [N, classes]).
Every mistake in a request raises `InvalidRequest` whose message says what was wrong and what is expected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

INPUT_NAME = "images"
LABEL_OUTPUT = "label"
LABEL_INDEX_OUTPUT = "label_index"
PROBABILITIES_OUTPUT = "probabilities"
OUTPUT_NAMES = (LABEL_OUTPUT, LABEL_INDEX_OUTPUT, PROBABILITIES_OUTPUT)
BINARY_HEADER = "inference-header-content-length"
_DTYPES = {"UINT8": np.uint8, "FP32": np.float32}


def accepted_shapes(input_shape: tuple[int, int, int]) -> list[list[int]]:
    """The per-image shapes a request may use for a model taking (C, H, W)."""
    channels, height, width = input_shape
    shapes = [[channels, height, width], [channels * height * width]]
    return shapes + ([[height, width]] if channels == 1 else [])


class InvalidRequest(ValueError):
    """The request is not a valid inference request for this model (an HTTP 400)."""


@dataclass(frozen=True)
class InferenceRequest:
    images: np.ndarray  # (N, C, H, W) uint8
    request_id: str | None
    outputs: tuple[str, ...]


def parse_infer_request(body: bytes, binary_header_length: str | None, max_images: int,
                        input_shape: tuple[int, int, int]) -> InferenceRequest:
    """Decode an OIP v2 infer request into uint8 images (N, C, H, W) for a model taking `input_shape`."""
    header_bytes, binary = _split_binary(body, binary_header_length)
    try:
        request = orjson.loads(header_bytes)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"the request body is not valid JSON: {error}") from None
    if not isinstance(request, dict):
        raise InvalidRequest('the request must be a JSON object: {"inputs": [{"name", "shape", "datatype", "data"}]}')
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidRequest(f'"inputs" must be a list holding exactly one tensor, the images ("{INPUT_NAME}")')
    images = _decode_images(inputs[0], binary, max_images, input_shape)
    request_id = request.get("id")
    return InferenceRequest(images=images, request_id=str(request_id) if request_id is not None else None,
                            outputs=_requested_outputs(request.get("outputs")))


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
        "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, *input_shape]}],
        "outputs": [{"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]},
                    {"name": LABEL_INDEX_OUTPUT, "datatype": "INT64", "shape": [-1]},
                    {"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, len(class_names)]}],
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
        raise InvalidRequest(f"datatype {datatype!r} is not accepted: send UINT8 pixels (0..255) or FP32 (0..1)")
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


def _requested_outputs(outputs: Any) -> tuple[str, ...]:
    if outputs is None:
        return OUTPUT_NAMES
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and "name" in o for o in outputs):
        raise InvalidRequest('"outputs" must be a list of {"name": ...} objects')
    names = tuple(o["name"] for o in outputs)
    unknown = [name for name in names if name not in OUTPUT_NAMES]
    if unknown:
        raise InvalidRequest(f"unknown output(s) {unknown}; this model has {list(OUTPUT_NAMES)}")
    return names
