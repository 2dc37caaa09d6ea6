"""The capture formats, one JSON object a line (JSON Lines), format 1.

A captured request (`requests/` files):
    {"format": 1, "id": "...", "time": 1764880000.123 (seconds since the epoch), "model": "fashion-mnist",
     "version": "v3", "revision": 7 (or null), "latency_ms": 4.2,
     "input": {"kind": "encoded", "images": ["<base64 of each image file as received>", ...]}
           or {"kind": "tensor", "dtype": "uint8", "shape": [N, C, H, W], "data": "<base64 of the pixels>"},
     "output": {"labels": ["Bag", ...], "top": [[["Bag", 0.93], ["Shirt", 0.04], ...], ...]}}
A label (`feedback/` files), one per answered request:
    {"format": 1, "id": "...", "time": ..., "labels": ["Bag", ...] (one per image, in the request's order),
     "version": "v3" (or null when imported), "source": "api" | "import"}

Nothing else is recorded: no header, no bearer token, no client address. The encoded bytes are stored as received,
never decoded here (no work and no risk on the writer's side); `aimass monitor` decodes them with the model's own
preprocessing when it reads them back.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

FORMAT = 1
REQUESTS = "requests"
FEEDBACK = "feedback"
TOP_CLASSES = 3  # probabilities kept per image: enough for a report, far smaller than a full vector
MAX_ID_LENGTH = 256


class InvalidRecord(ValueError):
    """A line that is not a record of this format (a file cut short by a killed replica, say)."""


@dataclass(frozen=True)
class CapturedRequest:
    request_id: str
    time: float
    model: str
    version: str
    revision: int | None
    latency_ms: float
    labels: tuple[str, ...]  # the answer for each image
    top: tuple[tuple[tuple[str, float], ...], ...]  # the most probable classes of each image, most probable first
    encoded: tuple[bytes, ...] | None = None  # the image files as received
    pixels: np.ndarray | None = None  # or the uint8 tensor (N, C, H, W) as received

    @property
    def count(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Label:
    request_id: str
    time: float
    labels: tuple[str, ...]
    version: str | None = None
    source: str = "api"


def request_line(record: CapturedRequest) -> bytes:
    if record.encoded is not None:
        given: dict[str, Any] = {"kind": "encoded",
                                 "images": [base64.b64encode(image).decode("ascii") for image in record.encoded]}
    else:
        given = {"kind": "tensor", "dtype": "uint8", "shape": list(record.pixels.shape),
                 "data": base64.b64encode(np.ascontiguousarray(record.pixels, dtype=np.uint8).tobytes()).decode()}
    return orjson.dumps({
        "format": FORMAT, "id": record.request_id, "time": record.time, "model": record.model,
        "version": record.version, "revision": record.revision, "latency_ms": round(record.latency_ms, 3),
        "input": given, "output": {"labels": list(record.labels),
                                   "top": [[[name, round(p, 6)] for name, p in image] for image in record.top]},
    }) + b"\n"


def label_line(label: Label) -> bytes:
    return orjson.dumps({"format": FORMAT, "id": label.request_id, "time": label.time, "labels": list(label.labels),
                         "version": label.version, "source": label.source}) + b"\n"


def parse_request_line(line: bytes) -> CapturedRequest:
    """Raises InvalidRecord when the line is not a whole captured request of this format."""
    values = _object(line)
    try:
        given, output = values["input"], values["output"]
        labels = tuple(str(name) for name in output["labels"])
        top = tuple(tuple((str(name), float(p)) for name, p in image) for image in output["top"])
        encoded, pixels = None, None
        if given["kind"] == "encoded":
            encoded = tuple(base64.b64decode(text, validate=True) for text in given["images"])
        elif given["kind"] == "tensor" and given["dtype"] == "uint8":
            shape = tuple(int(d) for d in given["shape"])
            pixels = np.frombuffer(base64.b64decode(given["data"], validate=True), dtype=np.uint8).reshape(shape)
        else:
            raise InvalidRecord(f"unknown input kind {given.get('kind')!r}")
        record = CapturedRequest(str(values["id"]), float(values["time"]), str(values["model"]),
                                 str(values["version"]), values["revision"], float(values["latency_ms"]), labels, top,
                                 encoded, pixels)
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidRecord(f"not a captured request: {error}") from None
    if record.count != (len(encoded) if encoded is not None else len(pixels)):
        raise InvalidRecord("the number of answers differs from the number of images")
    return record


def parse_label_line(line: bytes) -> Label:
    values = _object(line)
    try:
        return Label(str(values["id"]), float(values["time"]), tuple(str(name) for name in values["labels"]),
                     values.get("version"), str(values.get("source", "api")))
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidRecord(f"not a label: {error}") from None


def _object(line: bytes) -> dict:
    try:
        values = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise InvalidRecord(f"not JSON: {error}") from None
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        raise InvalidRecord(f"not a format-{FORMAT} record")
    return values


def check_request_id(request_id: str) -> str:
    """A caller's request id, refused when it could not serve as one (empty, too long, control characters)."""
    if not request_id or len(request_id) > MAX_ID_LENGTH or not request_id.isprintable():
        raise ValueError(f"a request id must be 1 to {MAX_ID_LENGTH} printable characters")
    return request_id
