"""The model server takes encoded images (JPEG, PNG, ...) and answers with class names: OIP v2 BYTES in JSON and
binary, KServe's v1 :predict, top-k, and hostile uploads, over real HTTP against a released model."""
import asyncio
import base64
import io
import struct

import httpx
import numpy as np
import pytest
from PIL import Image

from aimass.config import load_config
from aimass.data.arrays import load_image_sets
from aimass.registry import open_registry
from aimass.releases import open_release_backend
from aimass.serving import ReleaseSource, running_server
from aimass.serving.client import encoded_request, tensor_request

MODEL = "fashion-mnist"


@pytest.fixture(scope="module")
def server(tiny_teacher, tmp_path_factory):
    repo = tmp_path_factory.mktemp("image-serving")
    config = load_config("tiny", [f"data.repo_dir={repo}", f"registry.model_name={MODEL}",
                                  "serving.max_image_bytes=200000", "serving.max_image_pixels=1000000",
                                  "serving.max_images_per_request=8"])
    registry = open_registry(config)
    registry.push(tiny_teacher[0])
    open_release_backend(config, registry).deploy("v1", "test")
    with running_server(MODEL, ReleaseSource(config), config) as running:
        yield running


@pytest.fixture(scope="module")
def test_split(tiny_splits_dir):
    test = load_image_sets(tiny_splits_dir)[0]["test"]
    return np.array(test.images[:6]), test.labels[:6]


def encoded(pixels: np.ndarray, image_format: str = "PNG", size: int | None = None) -> bytes:
    """A (1, H, W) image as a file in `image_format`, optionally resized to size x size and in colour."""
    image = Image.fromarray(pixels[0])
    if size:
        image = image.resize((size, size)).convert("RGB")
    stream = io.BytesIO()
    image.save(stream, format=image_format)
    return stream.getvalue()


def v2_json(files: list[bytes], **extra) -> dict:
    return {**encoded_request(files), **extra}


def infer(server, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body)


def outputs(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return {output["name"]: output["data"] for output in response.json()["outputs"]}


def tensor_labels(server, images: np.ndarray) -> list[str]:
    return outputs(infer(server, tensor_request(images)))["label"]


def test_png_files_get_the_same_class_names_as_the_preprocessed_tensors(server, test_split):
    images, _ = test_split
    answer = outputs(infer(server, v2_json([encoded(image) for image in images])))
    assert answer["label"] == tensor_labels(server, images) and len(answer["label_index"]) == len(images)


def test_a_large_colour_jpeg_is_resized_and_greyed_as_ingest_does(server, test_split):
    images, _ = test_split
    answer = outputs(infer(server, v2_json([encoded(images[0], "JPEG", size=280)])))
    assert answer["label"][0] in ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                  "Sneaker", "Bag", "Ankle boot")


def test_top_k_answers_the_k_most_probable_classes_in_order(server, test_split):
    answer = outputs(infer(server, v2_json([encoded(test_split[0][0])], parameters={"top_k": 3})))
    assert len(answer["top_k_labels"]) == 3 and answer["top_k_labels"][0] == answer["label"][0]
    assert answer["top_k_probabilities"] == sorted(answer["top_k_probabilities"], reverse=True)


def test_a_top_k_beyond_the_number_of_classes_is_a_clear_400(server, test_split):
    response = infer(server, v2_json([encoded(test_split[0][0])], parameters={"top_k": 11}))
    assert response.status_code == 400 and "from 1 to 10" in response.json()["error"]


@pytest.mark.parametrize("binary_data", [True, False], ids=["binary-tensor-extension", "json-base64"])
def test_kserve_inference_rest_client_sends_bytes_and_gets_class_names(server, test_split, binary_data):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    images, _ = test_split
    files = [encoded(image) for image in images[:3]]
    elements = np.array(files if binary_data else [base64.b64encode(f) for f in files], dtype=object)

    async def ask():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        tensor = InferInput(name="image", shape=[len(files)], datatype="BYTES")
        tensor.set_data_from_numpy(elements, binary_data=binary_data)
        try:
            return await client.infer(server.url, InferRequest(MODEL, infer_inputs=[tensor]), model_name=MODEL)
        finally:
            await client.close()

    response = asyncio.run(ask())
    labels = next(output for output in response.outputs if output.name == "label").as_numpy().tolist()
    assert [label.decode() if isinstance(label, bytes) else label for label in labels] == \
        tensor_labels(server, images[:3])


def test_the_binary_extension_carries_length_prefixed_image_bytes(server, test_split):
    files = [encoded(image) for image in test_split[0][:2]]
    payload = b"".join(struct.pack("<I", len(f)) + f for f in files)
    header = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                          "parameters": {"binary_data_size": len(payload)}}]}
    import orjson

    head = orjson.dumps(header)
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", content=head + payload,
                          headers={"Inference-Header-Content-Length": str(len(head)),
                                   "Content-Type": "application/octet-stream"})
    assert outputs(response)["label"] == tensor_labels(server, test_split[0][:2])


def test_kserves_v1_predict_answers_class_names_and_probabilities(server, test_split):
    images, _ = test_split
    body = {"instances": [{"image": {"b64": base64.b64encode(encoded(image)).decode()}} for image in images[:2]],
            "parameters": {"top_k": 2}}
    response = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json=body)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == tensor_labels(server, images[:2])
    assert len(predictions[0]["probabilities"]) == 10 and len(predictions[0]["top_k"]) == 2


def test_metadata_describes_both_inputs_and_every_output(server):
    metadata = httpx.get(f"{server.url}/v2/models/{MODEL}").json()
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                                  {"name": "images", "datatype": "UINT8", "shape": [-1, 1, 28, 28]}]
    assert {o["name"] for o in metadata["outputs"]} == {"label", "label_index", "probabilities", "top_k_labels",
                                                         "top_k_probabilities"}


def bomb() -> bytes:
    """A small PNG file of 2,000 x 2,000 pixels: above the server's 1,000,000-pixel limit here."""
    stream = io.BytesIO()
    Image.new("L", (2000, 2000)).save(stream, format="PNG")
    return stream.getvalue()


HOSTILE = {
    "not an image": ([b"this is a text file"], 400, "image 0: not an image Pillow can read"),
    "truncated": ([b"\x89PNG\r\n\x1a\n" + b"\x00" * 40], 400, "image 0:"),
    "decompression bomb": ([bomb()], 400, "image 0: 2000x2000 pixels is more than the limit of 1000000"),
    "too many bytes": ([b"x" * 200_001], 413, "more than serving.max_image_bytes (200000)"),
    "too many images": ([b"x"] * 9, 400, "1 to 8 images; this one has 9"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_a_hostile_upload_gets_a_4xx_that_says_why_and_the_server_stays_ready(server, test_split, case):
    files, status, message = HOSTILE[case]
    response = infer(server, v2_json(files))
    assert response.status_code == status and message in response.json()["error"]
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert outputs(infer(server, v2_json([encoded(test_split[0][0])])))["label"]


def test_text_that_is_not_base64_is_refused_naming_the_image(server):
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not base64 !!"]}]}
    response = infer(server, body)
    assert response.status_code == 400 and "image 0 is not base64 text" in response.json()["error"]


# ---- the page for people ----

@pytest.fixture(scope="module")
def browser():
    from headless_chromium import chromium_path

    if chromium_path() is None:
        pytest.fail("chromium is missing: `make test` installs Debian's chromium (apt-get install chromium)")


def test_the_page_shows_the_models_card_and_classifies_a_picked_image(server, test_split, browser, tmp_path):
    from headless_chromium import open_url

    picture = tmp_path / "sneaker.png"
    picture.write_bytes(encoded(test_split[0][0]))
    expected = tensor_labels(server, test_split[0][:1])[0]
    page = open_url(f"{server.url}/", upload=picture, settle_seconds=2.0)
    assert page.problems == []
    assert f"sneaker.png: {expected} ({MODEL} v1)" in page.text
    assert "classes\t10: T-shirt/top, Trouser" in page.text and "data version" in page.text
    # pushed straight to the registry, not by deploy: the card records no test figures, and the page says so
    assert "test accuracy under corruptions\tnot recorded (registered before it was measured)" in page.text
    assert "%" in page.text  # the top classes with their probabilities
    assert "Window: " in page.text and "images of v1; drift" in page.text  # the monitor's view


def test_the_page_asks_for_the_token_when_the_server_needs_one(tiny_teacher, tmp_path, browser):
    from headless_chromium import open_url

    config = load_config("tiny", [f"data.repo_dir={tmp_path}", f"registry.model_name={MODEL}"])
    registry = open_registry(config)
    registry.push(tiny_teacher[0])
    open_release_backend(config, registry).deploy("v1", "test")
    with running_server(MODEL, ReleaseSource(config), config, token="page-test-token") as running:
        page = open_url(f"{running.url}/")
    assert "Enter the bearer token to see the model." in page.text and "This server needs a bearer token" in page.text
    assert all("401" in problem for problem in page.problems), page.problems  # the card request, refused
