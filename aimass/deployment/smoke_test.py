"""The smoke test of a release: held-out test images sent over HTTP to the endpoint that serves it, once it reports
the new version, their answers compared with the blessed model's own; and the labelled images a canary judges
first."""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimass.config import AimassConfig
from aimass.data.arrays import load_image_sets
from aimass.data.card import SplitsCard
from aimass.errors import DeployError, EndpointError
from aimass.models.architecture import predict_probabilities
from aimass.models.artifact import LoadedModel
from aimass.serving import ReleaseSource, read_token, running_server
from aimass.serving.client import InferenceAnswer, InferenceClient, tensor_request

SMOKE_BATCH = 100  # images per request: big enough to be quick, far below serving.max_images_per_request


@dataclass(frozen=True)
class SmokeTest:
    url: str
    served_version: str
    images: int
    accuracy: float
    agreement: float  # share of images the served model answers as the blessed model does here
    failed_requests: list[str]  # "HTTP 503: ..." for each request that did not succeed
    sample: list[tuple[str, str]]  # (true class, predicted class) for the first images


def send_labelled_images(config: AimassConfig, model_name: str, url: str, splits_dir: Path, prefix: str) -> int:
    """The smoke-test images of the test split as requests, each followed by its true labels as feedback; returns
    how many images were sent. Their answers and labels are what a canary judges first."""
    test = load_image_sets(splits_dir)[0]["test"]
    images = np.asarray(test.images[:config.serving.smoke_test_images])
    names = SplitsCard.read(splits_dir).class_names
    with InferenceClient(url, model_name, read_token(config.serving)) as client:
        for start in range(0, len(images), SMOKE_BATCH):
            request_id = f"{prefix}-{start}"
            batch = images[start:start + SMOKE_BATCH]
            client.infer(tensor_request(batch, request_id, outputs=["label_index"]))
            client.send_feedback(request_id, [names[label] for label in test.labels[start:start + len(batch)]])
    return len(images)


def smoke_test_release(config: AimassConfig, model_name: str, expected_version: str, splits_dir: Path,
                       blessed: LoadedModel, release_endpoint: str | None = None) -> SmokeTest:
    """Send held-out test images to the endpoint serving the release, once it serves `expected_version`:
    `serving.url`, else the release's own endpoint (the chart's Service), else a server started here.

    Raises:
        DeployError: the endpoint did not serve `expected_version` within serving.ready_timeout_seconds.
    """
    settings = config.serving
    token = read_token(settings)
    signature = blessed.signature
    with ExitStack() as stack:
        url = settings.url or release_endpoint
        if url is None:
            # The check's own traffic is no production traffic: nothing of it is captured.
            url = stack.enter_context(running_server(model_name, ReleaseSource(config, model_name),
                                                     config.with_serving(capture=settings.capture.model_copy(
                                                         update={"sample_rate": 0.0})), token)).url
        client = stack.enter_context(InferenceClient(url, model_name, token))
        try:
            client.wait_until_serving(expected_version, signature.input_spec.shape, settings.ready_timeout_seconds)
        except EndpointError as error:
            raise DeployError(str(error)) from error
        test = load_image_sets(splits_dir)[0]["test"]
        images = np.asarray(test.images[:settings.smoke_test_images])
        labels = test.labels[:settings.smoke_test_images]
        predictions, failed, served_versions = [], [], set()
        for start in range(0, len(images), SMOKE_BATCH):
            batch = images[start:start + SMOKE_BATCH]
            response = client.post_infer(tensor_request(batch, outputs=["label_index"]))
            if response.status_code != 200:
                failed.append(f"HTTP {response.status_code}: {response.text[:200]}")
                predictions.extend([-1] * len(batch))
                continue
            answer = InferenceAnswer.from_body(response.json())
            served_versions.add(answer.model_version)
            predictions.extend(answer.label_indices)
    predicted = np.asarray(predictions)
    local = predict_probabilities(blessed.module, images, signature.input_spec).argmax(axis=1)
    names = signature.class_names
    sample = [(names[t], names[p] if p >= 0 else "(failed)") for t, p in zip(labels[:8], predicted[:8])]
    return SmokeTest(url=url, served_version=",".join(sorted(served_versions)) or "none", images=len(images),
                     accuracy=float((predicted == labels).mean()), agreement=float((predicted == local).mean()),
                     failed_requests=failed, sample=sample)
