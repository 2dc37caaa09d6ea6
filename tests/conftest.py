"""Shared fixtures: a real DVC repository holding the real Fashion-MNIST import, image files in every layout
`aimass data import` reads (written from scikit-learn's digits), and tiny splits and models."""
import contextlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aimass.models.architecture import Signature
from aimass.ingestion.stage import ingest
from aimass.training.stage import train
from aimass.config import AimassConfig, load_config
from aimass.data.fashion_mnist import DEFAULT_SOURCE_DIR
from aimass.data.importing import import_dataset
from aimass.data.preprocess import InputSpec
from aimass.data.versions import track_data
from aimass.lineage import Lineage

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def fashion_mnist_source() -> Path:
    source = Path(os.environ.get("AIMASS_FASHION_MNIST_DIR") or DEFAULT_SOURCE_DIR)
    if not (source / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST IDX files not found in {source}: run `make test`, which installs them")
    return source


def init_dvc_repo(path: Path) -> Path:
    """An empty git + DVC repository at `path`, the way a user's clone of aimass is one."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    # The dvc CLI in a subprocess: in-process, DVC binds its log handler to whatever sys.stdout is at the time.
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=path, check=True)
    return path


@pytest.fixture(scope="session")
def data_repo(tmp_path_factory, fashion_mnist_source) -> Path:
    """A DVC repository with the real Fashion-MNIST imported and pinned in data.dvc, as `aimass data import` does."""
    repo = init_dvc_repo(tmp_path_factory.mktemp("data-repo"))
    import_dataset(fashion_mnist_source, repo / "data")
    track_data(repo)
    return repo


@pytest.fixture(scope="session")
def tiny_config(data_repo) -> AimassConfig:
    return load_config("tiny", [f"data.repo_dir={data_repo}"])


@pytest.fixture(scope="session")
def tiny_splits_dir(tmp_path_factory, tiny_config) -> Path:
    output = tmp_path_factory.mktemp("tiny-splits")
    ingest(tiny_config, output)
    return output


@pytest.fixture(scope="session")
def successful_run(tiny_config, tmp_path_factory):
    """The whole DAG through kfp.local on the tiny profile, once per session (about a minute)."""
    from aimass.pipelines.local_run import run_pipeline_locally

    return run_pipeline_locally(tiny_config, tmp_path_factory.mktemp("runs"), git_commit="abc123")


# Python source for a child process: from here on, any unpickling (pickle's load functions, or torch.load without
# weights_only, which goes through pickle.Unpickler) raises instead of running.
FORBID_UNPICKLING = """
import pickle
def _refuse(*args, **kwargs):
    raise RuntimeError("unpickling attempted")
class _RefusingUnpickler(pickle.Unpickler):
    def load(self):
        _refuse()
pickle.load = pickle.loads = _refuse
pickle.Unpickler = _RefusingUnpickler
"""

# A model signature for unit tests that need no data: 1x28x28 grey images, ten classes.
GREY_28_TEN_CLASSES = Signature(InputSpec(1, 28, 28, mean=(0.286,), std=(0.353,)), tuple("abcdefghij"))

TEST_LINEAGE = Lineage(data_md5="d" * 32 + ".dir", git_commit="c" * 40, run_id="run-1", run_name="test-run")


@pytest.fixture(scope="session")
def tiny_signature(tiny_splits_dir) -> Signature:
    from aimass.data.card import SplitsCard

    return Signature.of_splits(SplitsCard.read(tiny_splits_dir))


@pytest.fixture(scope="session")
def tiny_teacher(tiny_config, tiny_splits_dir, tmp_path_factory):
    """(model directory, TrainResult) of one tiny training run, shared by the tests that need a trained model."""
    model_dir = tmp_path_factory.mktemp("teacher")
    return model_dir, train(tiny_config, tiny_splits_dir, model_dir, TEST_LINEAGE)


def write_digits_folder(root: Path, count: int = 400, split_folders: bool = False, layout: str = "mixed") -> Path:
    """scikit-learn's 8x8 digits as real image files in class folders `root/<digit>/`: PNG and JPEG, grey and RGB,
    of several sizes (layout "mixed"), or all 8x8 grey PNG ("uniform"). With `split_folders`, a fifth of them go
    under test/ and the rest under train/."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index in range(count):
        pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
        image = Image.fromarray(pixels)
        suffix = ".png"
        if layout == "mixed":
            image = image.resize((8 * (1 + index % 3), 8 * (1 + index % 3)))
            if index % 2:
                image, suffix = image.convert("RGB"), ".jpg"
        split = ("test" if index % 5 == 0 else "train") if split_folders else ""
        folder = root / split / str(digits.target[index])
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"digit-{index:04d}{suffix}")
    return root


def save_tiny_resnet(folder, num_labels=5, size=32, resample=3, mean=(0.5, 0.4, 0.3), std=(0.5, 0.6, 0.7)):
    """A small ResNet checkpoint (three channels, its own classes) with a ViT-style image processor."""
    import torch
    import transformers

    config = transformers.ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1],
                                       num_labels=num_labels)
    torch.manual_seed(1)
    transformers.ResNetForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessorPil(size={"height": size, "width": size}, resample=resample, image_mean=list(mean),
                                      image_std=list(std)).save_pretrained(folder)
    return folder


def save_tiny_timm_checkpoint(folder, name="test_resnet", classes=("a", "b", "c", "d", "e", "f", "g"), channels=3,
                              size=24, crop_pct=0.875, interpolation="bicubic", mean=(0.5, 0.4, 0.3),
                              std=(0.5, 0.6, 0.7)):
    """A small timm network (its own classes and preprocessing) saved as timm's save_pretrained writes it."""
    import timm
    import torch

    torch.manual_seed(1)
    network = timm.create_model(name, num_classes=len(classes), in_chans=channels)
    timm.models.save_for_hf(network, folder, safe_serialization=True, model_config={"label_names": list(classes)},
                            data_config={"input_size": (channels, size, size), "crop_pct": crop_pct,
                                         "interpolation": interpolation, "mean": mean, "std": std})
    return folder


def save_tiny_torchvision_state_dict(path, name="mobilenet_v3_small", classes=1000):
    """A torchvision builder's network, as a plain safetensors state dict (what a user converts a .pth into)."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(1)
    network = torchvision.models.get_model(name, weights=None, num_classes=classes)
    save_file({key: value.contiguous() for key, value in network.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    return write_digits_folder(tmp_path_factory.mktemp("digits-source") / "digits")


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def moto_s3_server():
    """A real S3 endpoint on 127.0.0.1 (moto's server); yields its host:port. Its state is process-wide, so each
    test uses buckets of its own."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_server():
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory):
    """etcd and kube-apiserver on loopback for the whole session (scripts/kube_apiserver.py, as `make k8s-apiserver`
    starts them), stopped at its end. Where this machine has neither binary the tests that need them are reported as
    not run, with the reason; CI (CI=true) always has them, so there a missing one fails those tests."""
    from kube_apiserver import ControlPlaneUnavailable, running_apiserver

    kubectl = Path(sys.executable).parent / "kubectl"
    if not kubectl.is_file():
        pytest.fail("kubectl is missing from the environment: run `make k8s-tools` (the test command does)")
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_apiserver(tmp_path_factory.mktemp("kube-apiserver"), str(kubectl)))
        except ControlPlaneUnavailable as error:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI runs the API server tests: {error}")
            pytest.skip(f"no Kubernetes API server here: {error}")
        yield server


@pytest.fixture(scope="session")
def engine():
    """DOCKER_HOST of a running container engine (podman's API service when podman is the engine), for the
    container checks (tests/e2e, marker `containers`, `make e2e`). Without an engine or without the project image
    (`make image`) they are skipped, saying which."""
    import shutil

    from aimass.config import PROJECT_IMAGE
    from aimass.containers import ContainerEngineError, container_engine, require_image

    if not (shutil.which("podman") or shutil.which("docker")):
        pytest.skip("no container engine: apt-get install -y podman runc (or Docker)")
    try:
        with container_engine() as docker_host:
            require_image(PROJECT_IMAGE)
            yield docker_host
    except ContainerEngineError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def monitored_model_dir(tiny_teacher, tiny_splits_dir, tiny_config, tmp_path_factory) -> Path:
    """The tiny teacher as deploy registers it: with its outputs on validation images as the drift reference."""
    from aimass.data.arrays import load_image_sets
    from aimass.models.artifact import load_model
    from aimass.monitoring.reference import reference_outputs, with_reference_outputs

    loaded = load_model(tiny_teacher[0])
    validation = load_image_sets(tiny_splits_dir)[0]["validation"]
    outputs = reference_outputs(loaded.module, validation.images, loaded.signature.input_spec,
                                tiny_config.monitor.reference_images)
    return with_reference_outputs(tiny_teacher[0], outputs, tmp_path_factory.mktemp("monitored") / "model")


@pytest.fixture(scope="session")
def fashion_mnist_test_images(fashion_mnist_source):
    """All 10,000 Fashion-MNIST test images (N, 1, 28, 28) and their labels, as the IDX files hold them."""
    from aimass.data.idx import read_idx_split

    pixels, labels = read_idx_split(fashion_mnist_source / "t10k-images-idx3-ubyte.gz",
                                    fashion_mnist_source / "t10k-labels-idx1-ubyte.gz")
    return pixels[:, None], labels.astype("int64")


def relabelled_model_dir(model_dir: Path, permutation: list[int], splits_dir: Path, config: AimassConfig,
                         target: Path) -> Path:
    """A copy of a trained model whose output j is the original's output permutation[j]: a real model that
    answers some classes wrong, as deploy registers it (reference outputs of its own). Where it maps class a to
    b it is wrong on every image of a, so the accuracy it loses is known in advance."""
    import torch

    from aimass.data.arrays import load_image_sets
    from aimass.models.artifact import load_model, save_model
    from aimass.monitoring.reference import reference_outputs, with_reference_outputs

    loaded = load_model(model_dir)
    head = [module for module in loaded.module.modules() if isinstance(module, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.copy_(head.weight[permutation].clone())
        head.bias.copy_(head.bias[permutation].clone())
    plain = target / "weights"
    save_model(plain, loaded.module, loaded.card.architecture, loaded.signature, loaded.card.provenance)
    validation = load_image_sets(splits_dir)[0]["validation"]
    outputs = reference_outputs(loaded.module, validation.images, loaded.signature.input_spec,
                                config.monitor.reference_images)
    return with_reference_outputs(plain, outputs, target / "model")


@pytest.fixture(scope="session")
def weaker_model_dir(tiny_teacher, tiny_splits_dir, tiny_config, tmp_path_factory) -> Path:
    """The tiny teacher with three pairs of classes swapped: right on the other four classes, wrong on these."""
    permutation = [1, 0, 3, 2, 6, 5, 4, 7, 8, 9]  # fashion-mnist: 0<->1, 2<->3, 4<->6
    return relabelled_model_dir(tiny_teacher[0], permutation, tiny_splits_dir, tiny_config,
                                tmp_path_factory.mktemp("weaker"))


@pytest.fixture(scope="session")
def wrong_model_dir(tiny_teacher, tiny_splits_dir, tiny_config, tmp_path_factory) -> Path:
    """The tiny teacher answering every class as the next one: confident, fast and wrong."""
    return relabelled_model_dir(tiny_teacher[0], [9, 0, 1, 2, 3, 4, 5, 6, 7, 8], tiny_splits_dir, tiny_config,
                                tmp_path_factory.mktemp("wrong"))
