"""Running pipeline steps in the project image, as the cluster runs them, through Docker or podman on this machine.

`aimass run --runner docker` hands every DAG step to kfp.local's Docker runner, which speaks the Docker Engine API
(the `docker` SDK, `DOCKER_HOST`). Docker answers it natively; podman answers it once `podman system service`
listens on a socket, which `container_engine()` starts when no Docker engine is there.

What the cluster gives a step's pod, a container here gets the same way:
- the image's own user (uid 10001), a read-only root file system with a tmpfs on /tmp, every capability dropped and
  no privilege escalation, as the chart's and the pipeline's pod security context ("restricted");
- the data, the model registry, the release history and the caches as mounts at the paths the configuration names
  (a PVC and the object store on the cluster): the repository read-only, the state folders read-write.
The writable folders must be writable by the container's user: run as root, aimass gives them to uid 10001 (an
fsGroup does this on the cluster); run as anyone else, the container runs as that user instead.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aimass.config import HF_PREFIX, AimassConfig
from aimass.errors import AimassError
from aimass.polling import poll_until

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PODMAN_CONF = PROJECT_ROOT / "scripts" / "podman" / "containers.conf"
DOCKER_SOCKET = Path("/var/run/docker.sock")


class ContainerEngineError(AimassError):
    """No container engine answers, or the project image is not there."""


@dataclass(frozen=True)
class Mount:
    source: Path
    read_only: bool

    def as_volume(self) -> tuple[str, dict[str, str]]:
        """The docker SDK's `volumes` entry: mounted at the same path, so the configuration's paths hold inside."""
        return str(self.source), {"bind": str(self.source), "mode": "ro" if self.read_only else "rw"}


@dataclass(frozen=True)
class StepContainer:
    """How every step's container runs: its user, mounts and environment, and the restricted security settings."""
    user: str
    mounts: tuple[Mount, ...]
    environment: dict[str, str] = field(default_factory=dict)

    def make_writable(self, folder: Path) -> None:
        """Let the container's user create entries in `folder`, which this process made (each run's folder under
        the pipeline root, as its first task starts). What the containers write inside is theirs already."""
        if os.geteuid() == 0:
            os.chown(folder, *(int(part) for part in self.user.split(":")))

    def run_arguments(self, volumes: dict[str, dict], task_environment: dict[str, str] | None) -> dict:
        """Keyword arguments for docker's `containers.create`: `volumes` (the pipeline root kfp.local mounts)
        plus ours, and the task's own environment over ours."""
        return {
            "user": self.user,
            "read_only": True,
            # /tmp is the one writable place in the image (HOME, torch.compile's cache, the executor's program).
            "tmpfs": {"/tmp": "rw,size=4g,mode=1777"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "volumes": {**volumes, **dict(mount.as_volume() for mount in self.mounts)},
            "environment": {**self.environment, **(task_environment or {})},
            # The steps share memory between DataLoader workers: the default 64 MB /dev/shm is too small.
            "shm_size": "1g",
        }


def step_container(config: AimassConfig, pipeline_root: Path) -> StepContainer:
    """The containers of a run of `config` whose artifacts go under `pipeline_root`, with the state folders (and
    the pipeline root) made writable for the container's user."""
    repo = Path(config.data.repo_dir)
    # torch.compile's kernels outlive each container here (a fresh /tmp would compile them again in every step:
    # 50 s for an int8 model's deploy on 2 cores); TORCHINDUCTOR_CACHE_DIR, when set, is the one to use.
    compile_cache = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or repo / ".aimass-cache" / "inductor")
    writable = [pipeline_root, compile_cache, *(repo / relative for relative in (
        Path(config.data.cache_dir).parent, config.registry.local_dir, config.release.state_dir,
        config.serving.cache_dir, ".dvc/tmp"))]
    read_only = [repo, *_checkpoint_folders(config)]
    image_user = config.kubernetes.run_as_user  # the image's user (Dockerfile), as the pods run
    user = f"{image_user}:{image_user}" if os.geteuid() == 0 else f"{os.geteuid()}:{os.getegid()}"
    if os.geteuid() == 0:
        _check_readable_by_others(read_only, user)
    for folder in writable:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _give_to(folder, user)
    mounts = tuple(Mount(folder.resolve(), True) for folder in read_only) + \
        tuple(Mount(folder.resolve(), False) for folder in writable[1:])
    # DVC keeps its index under /var/tmp by default, which the read-only root refuses.
    return StepContainer(user, mounts, {"DVC_SITE_CACHE_DIR": "/tmp/dvc-site-cache",
                                        "TORCHINDUCTOR_CACHE_DIR": str(compile_cache.resolve())})


def _checkpoint_folders(config: AimassConfig) -> list[Path]:
    """Checkpoint folders the run's model or student load from: Hugging Face folders (a Hub id needs no mount) and
    a timm or torchvision checkpoint (a torchvision state dict's folder)."""
    sources = [config.model.architecture, config.compress.student]
    folders = [Path(source[len(HF_PREFIX):]) for source in sources if source.startswith(HF_PREFIX)]
    if config.model.checkpoint is not None:
        checkpoint = Path(config.model.checkpoint)
        folders.append(checkpoint if checkpoint.is_dir() else checkpoint.parent)
    return [folder for folder in folders if folder.is_absolute() and folder.is_dir()]


def _check_readable_by_others(folders: list[Path], user: str) -> None:
    """The container's user owns none of these folders: it reads them as "others" do."""
    for folder in folders:
        if folder.stat().st_mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
            raise ContainerEngineError(
                f"the steps' containers run as uid {user.split(':')[0]} and cannot read {folder} (mode "
                f"{stat.filemode(folder.stat().st_mode)}): make it readable, e.g. chmod o+rx {folder}")


def _give_to(folder: Path, user: str) -> None:
    uid, gid = (int(part) for part in user.split(":"))
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            os.chown(path, uid, gid)


def podman_environment() -> dict[str, str]:
    """This process's environment with podman pointed at the project's settings, unless the user chose their own."""
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(PODMAN_CONF))}


@contextlib.contextmanager
def container_engine() -> Iterator[str]:
    """A Docker Engine API endpoint for the run: `DOCKER_HOST` when set, Docker's socket when it answers, else
    `podman system service` on a socket of its own for as long as the run lasts. Sets and yields DOCKER_HOST.

    Raises:
        ContainerEngineError: none of the three is available.
    """
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    if DOCKER_SOCKET.is_socket() and _answers(f"unix://{DOCKER_SOCKET}"):
        yield from _with_docker_host(f"unix://{DOCKER_SOCKET}")
        return
    podman = shutil.which("podman")
    if podman is None:
        raise ContainerEngineError(
            "no container engine: --runner docker needs Docker (its socket at /var/run/docker.sock or DOCKER_HOST) "
            "or podman (apt-get install -y podman runc); or run without --runner docker")
    with tempfile.TemporaryDirectory(prefix="aimass-podman-") as folder:
        url = f"unix://{folder}/podman.sock"
        service = subprocess.Popen([podman, "system", "service", "--time=0", url], env=podman_environment(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_service(service, url)
            yield from _with_docker_host(url)
        finally:
            service.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.wait(timeout=10)
            if service.poll() is None:
                service.kill()


def _with_docker_host(url: str) -> Iterator[str]:
    before = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = url
    try:
        yield url
    finally:
        if before is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = before


def _answers(url: str) -> bool:
    import docker

    try:
        with contextlib.closing(docker.DockerClient(base_url=url, timeout=5)) as client:
            return bool(client.ping())
    except docker.errors.DockerException:
        return False


def _wait_for_service(service: subprocess.Popen, url: str, timeout_seconds: float = 30) -> None:
    def answering() -> bool | None:
        if service.poll() is not None:
            raise ContainerEngineError(f"podman system service exited at once: {service.stderr.read().strip()}")
        return True if _answers(url) else None

    poll_until(answering, timeout_seconds, 0.2, lambda: ContainerEngineError(
        f"podman system service did not answer on {url} within {timeout_seconds:.0f} s"))


def require_image(image: str) -> None:
    """Refuse to start a run whose image the engine lacks (kfp.local would try to pull it from a registry)."""
    import docker

    with contextlib.closing(docker.from_env()) as client:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise ContainerEngineError(f"the container engine has no image {image}: build it with `make image` "
                                       "(`make base-image image` where no registry is reachable)") from None
