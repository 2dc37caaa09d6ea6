"""aimass's own OIP client (aimass/serving/client.py) against a real server: the bodies it writes are the ones the
server reads, and its answers, feedback and readiness wait behave as callers rely on."""
import numpy as np
import pytest

from aimass.config import load_config
from aimass.data.arrays import load_image_sets
from aimass.errors import EndpointError
from aimass.registry import open_registry
from aimass.releases import open_release_backend
from aimass.serving import ReleaseSource, running_server
from aimass.serving.client import InferenceClient, encoded_request, tensor_request

MODEL = "fashion-mnist"
TOKEN = "test-token-not-a-secret"


@pytest.fixture
def server(tmp_path, tiny_teacher):
    config = load_config("tiny", [f"data.repo_dir={tmp_path}", "serving.poll_seconds=0.05"])
    registry = open_registry(config, MODEL)
    registry.push(tiny_teacher[0])
    open_release_backend(config, registry).deploy("v1", "test")
    with running_server(MODEL, ReleaseSource(config, MODEL), config, token=TOKEN) as running:
        yield running


@pytest.fixture
def images(tiny_splits_dir):
    return np.asarray(load_image_sets(tiny_splits_dir)[0]["test"].images[:4])


def test_a_tensor_request_is_answered_with_labels_indices_and_probabilities_per_image(server, images):
    with InferenceClient(server.url, MODEL, TOKEN) as client:
        answer = client.infer(tensor_request(images, request_id="r-1"))
    names = server.holder.current.class_names
    assert answer.model_version == "v1" and answer.request_id == "r-1"
    assert answer.probabilities.shape == (4, len(names))
    assert answer.label_indices == answer.probabilities.argmax(axis=1).tolist()
    assert answer.labels == [names[k] for k in answer.label_indices]


def test_asking_for_one_output_leaves_the_others_out(server, images):
    with InferenceClient(server.url, MODEL, TOKEN) as client:
        answer = client.infer(tensor_request(images, outputs=["label_index"]))
    assert answer.labels is None and answer.probabilities is None and len(answer.label_indices) == 4


def test_an_encoded_image_file_gets_the_same_answer_as_its_pixels(server, images):
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(images[0][0]).save(png, format="PNG")
    with InferenceClient(server.url, MODEL, TOKEN) as client:
        from_file = client.infer(encoded_request([png.getvalue()]))
        from_pixels = client.infer(tensor_request(images[:1]))
    assert from_file.labels == from_pixels.labels


def test_feedback_for_an_answered_request_is_accepted(server, images):
    names = server.holder.current.class_names
    with InferenceClient(server.url, MODEL, TOKEN) as client:
        client.infer(tensor_request(images[:2], request_id="labelled"))
        client.send_feedback("labelled", [names[0], names[1]])


def test_an_error_status_raises_naming_the_status_and_the_server_message(server, images):
    with InferenceClient(server.url, MODEL, token=None) as client, pytest.raises(EndpointError, match="HTTP 401"):
        client.infer(tensor_request(images))


def test_waiting_for_a_version_that_is_not_served_gives_up_with_the_last_answer(server, images):
    with InferenceClient(server.url, MODEL, TOKEN) as client:
        client.wait_until_serving("v1", images.shape[1:], timeout_seconds=5)
        with pytest.raises(EndpointError, match=r"did not serve v9 within 1 s \(last: HTTP 200, serving v1\)"):
            client.wait_until_serving("v9", images.shape[1:], timeout_seconds=1, interval_seconds=0.1)


def test_a_tensor_that_is_not_uint8_is_refused_before_anything_is_sent():
    with pytest.raises(ValueError, match="must be uint8"):
        tensor_request(np.zeros((1, 1, 4, 4), dtype=np.float32))
