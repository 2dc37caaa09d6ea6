"""The project image itself, run the way the chart and the pipeline run it: as its own unprivileged user, on a
read-only root with a scratch /tmp."""
import contextlib

import docker
import pytest

from aimass.config import PROJECT_IMAGE

pytestmark = pytest.mark.containers


def run_in_image(*command: str, entrypoint: str | None = None) -> str:
    with contextlib.closing(docker.from_env()) as client:
        output = client.containers.run(PROJECT_IMAGE, list(command), entrypoint=entrypoint, remove=True,
                                       read_only=True, tmpfs={"/tmp": "rw,mode=1777"}, cap_drop=["ALL"],
                                       security_opt=["no-new-privileges"], stdout=True, stderr=True)
    return output.decode()


def test_the_image_answers_help_on_a_read_only_root(engine):
    assert "usage: aimass" in run_in_image("--help")


def test_the_image_runs_as_its_unprivileged_user(engine):
    assert run_in_image("-c", "id -u; id -g", entrypoint="sh").split() == ["10001", "10001"]


def test_the_image_compiles_torch_kernels_as_int8_serving_needs(engine):
    """torch.compile builds C++ kernels at load time (a C++ compiler and Python.h); without them int8 models fail
    to load in the server."""
    program = "import torch; f = torch.compile(lambda x: (x * 2).relu().sum()); print(float(f(torch.ones(64))))"
    assert run_in_image("-c", program, entrypoint="python").strip().splitlines()[-1] == "128.0"
