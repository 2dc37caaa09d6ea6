"""A client of aimass's model server: the Open Inference Protocol v2 over REST, from the caller's side.

protocol.py reads requests and writes answers on the server; this module writes requests and reads answers, so the
wire format is spelled once on each side. Deploy's smoke test and canary traffic, the benchmarks, the scripts and the
tests build their bodies here:

    tensor_request(images)     `images`, UINT8 [N, C, H, W]: arrays already at the model's input shape
    encoded_request(files)     `image`, BYTES [N]: encoded image files (JPEG, PNG, ...), base64 in JSON
    InferenceClient            infer, send feedback, wait until a version is served; errors as EndpointError

KServe's own client (kserve.InferenceRESTClient) speaks the same protocol and works against the server too
(tests/integration/test_serving.py); this one adds what only aimass's server has: request ids joined to feedback,
`model_version` in every answer, the top-k parameter.
"""
from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from aimass.errors import EndpointError
from aimass.polling import poll_until

TENSOR_INPUT = "images"
ENCODED_INPUT = "image"


def tensor_request(images: np.ndarray, request_id: str | None = None, outputs: Sequence[str] | None = None,
                   top_k: int | None = None) -> dict[str, Any]:
    """The infer body for uint8 images already at the model's input shape, (N, C, H, W) or (N, H, W) for one
    channel."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {images.dtype}: scale and convert them first")
    tensor = {"name": TENSOR_INPUT, "shape": list(images.shape), "datatype": "UINT8",
              "data": images.ravel().tolist()}
    return _request(tensor, request_id, outputs, top_k)


def encoded_request(files: Sequence[bytes], request_id: str | None = None, outputs: Sequence[str] | None = None,
                    top_k: int | None = None) -> dict[str, Any]:
    """The infer body for encoded image files of any size; the server decodes and preprocesses them."""
    tensor = {"name": ENCODED_INPUT, "shape": [len(files)], "datatype": "BYTES",
              "data": [base64.b64encode(file).decode("ascii") for file in files]}
    return _request(tensor, request_id, outputs, top_k)


def _request(tensor: dict[str, Any], request_id: str | None, outputs: Sequence[str] | None,
             top_k: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [tensor]}
    if request_id is not None:
        body["id"] = request_id
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    if top_k is not None:
        body["parameters"] = {"top_k": top_k}
    return body


@dataclass(frozen=True)
class InferenceAnswer:
    """An infer answer, decoded. Outputs the request did not ask for are None."""

    model_version: str
    request_id: str | None
    labels: list[str] | None
    label_indices: list[int] | None
    probabilities: np.ndarray | None  # (N, classes)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> InferenceAnswer:
        outputs = {output["name"]: output for output in body["outputs"]}

        def data(name: str):
            return outputs[name]["data"] if name in outputs else None

        probabilities = outputs.get("probabilities")
        return cls(model_version=body["model_version"], request_id=body.get("id"), labels=data("label"),
                   label_indices=data("label_index"),
                   probabilities=None if probabilities is None else
                   np.asarray(probabilities["data"], dtype=np.float32).reshape(probabilities["shape"]))


class InferenceClient:
    """One model on one server: `InferenceClient(url, model_name, token)`; use it as a context manager."""

    def __init__(self, url: str, model_name: str, token: str | None = None, timeout_seconds: float = 30.0):
        self.model_name = model_name
        self.infer_path = f"/v2/models/{model_name}/infer"
        self.feedback_path = f"/v2/models/{model_name}/feedback"
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_seconds,
                                  headers={"Authorization": f"Bearer {token}"} if token else {})

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def post_infer(self, body: dict[str, Any]) -> httpx.Response:
        """The raw response, whatever its status: for callers that count failed requests themselves."""
        return self._http.post(self.infer_path, json=body)

    def infer(self, body: dict[str, Any]) -> InferenceAnswer:
        """Send a body from tensor_request or encoded_request; an error status raises EndpointError."""
        return InferenceAnswer.from_body(_ok(self.post_infer(body)).json())

    def send_feedback(self, request_id: str, labels: Sequence[str]) -> None:
        """The true class names of an answered request, in the order of its images."""
        _ok(self._http.post(self.feedback_path, json={"id": request_id, "labels": list(labels)}))

    def wait_until_serving(self, version: str, input_shape: tuple[int, ...], timeout_seconds: float,
                           interval_seconds: float = 0.2) -> None:
        """Probe with one blank image until the answer names `version`; EndpointError with the last answer seen
        when that takes longer than `timeout_seconds`."""
        probe = tensor_request(np.zeros((1, *input_shape), dtype=np.uint8), outputs=["label_index"])
        last = ["no answer yet"]

        def serving() -> bool | None:
            try:
                response = self.post_infer(probe)
            except httpx.HTTPError as error:
                last[0] = str(error) or type(error).__name__
                return None
            if response.status_code == 200 and response.json()["model_version"] == version:
                return True
            last[0] = (f"HTTP 200, serving {response.json().get('model_version')}" if response.status_code == 200
                       else f"HTTP {response.status_code}, {response.text[:200]}")
            return None

        poll_until(serving, timeout_seconds, interval_seconds, lambda: EndpointError(
            f"the endpoint did not serve {version} within {timeout_seconds:.0f} s (last: {last[0]})"))


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise EndpointError(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}, "
                            f"{response.text[:300]}")
    return response
