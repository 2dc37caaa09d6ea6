"""Shared fixtures: a real DVC repository holding the real Fashion-MNIST import, and tiny splits and models."""
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aimass.components.ingest import ingest
from aimass.components.train import train
from aimass.config import AimassConfig, load_config
from aimass.data_version import track_data
from aimass.dataset import ImageSet, save_image_sets
from aimass.fashion_mnist import DEFAULT_SOURCE_DIR, import_fashion_mnist
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
    import_fashion_mnist(fashion_mnist_source, repo / "data" / "fashion-mnist")
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

TEST_LINEAGE = Lineage(data_md5="d" * 32 + ".dir", git_commit="c" * 40, run_id="run-1", run_name="test-run")


@pytest.fixture(scope="session")
def tiny_teacher(tiny_config, tiny_splits_dir, tmp_path_factory):
    """(model directory, TrainResult) of one tiny training run, shared by the tests that need a trained model."""
    model_dir = tmp_path_factory.mktemp("teacher")
    return model_dir, train(tiny_config, tiny_splits_dir, model_dir, TEST_LINEAGE)


@pytest.fixture
def make_data_repo(tmp_path, data_repo) -> Callable[[Callable[[dict[str, ImageSet]], None]], Path]:
    """Build a DVC repository whose data is the real data set after `corrupt(image_sets)` altered it in place."""
    from aimass.dataset import load_image_sets

    def build(corrupt: Callable[[dict[str, ImageSet]], None]) -> Path:
        image_sets, manifest = load_image_sets(data_repo / "data" / "fashion-mnist")
        image_sets = {name: ImageSet(s.images.copy(), s.labels.copy()) for name, s in image_sets.items()}
        corrupt(image_sets)
        repo = init_dvc_repo(tmp_path / "corrupted-repo")
        save_image_sets(repo / "data" / "fashion-mnist", image_sets, {"name": manifest["name"]})
        track_data(repo)
        return repo

    return build


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def s3_server():
    """A real S3 endpoint on 127.0.0.1 (moto's server); yields its host:port. Its state is process-wide, so each
    test uses buckets of its own."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()
