"""deploy: publish the blessed model, release it, prove the served model answers well, or undo the release.

Runs only under dsl.If(gate passed), after bless_model:
    1. push the blessed model to the registry as a new immutable version (lineage, gate metrics, parent version),
       with its outputs on validation images as the reference of the server's drift test (aimass/monitoring/);
    2. create a release revision serving it (embedded backend locally; Helm on a cluster);
    3. smoke-test the *served* model over HTTP: wait until the endpoint reports the new version, send held-out test
       images, and require no failed request and the same answers the blessed model gives here (the model that
       passed the gate is the one answering);
    4. on success move the registry's `production` alias to it; on failure roll the release back to the revision
       that served before (or uninstall a first install) and fail the step with the reasons.
The endpoint is `serving.url` when set; with the Helm backend, the chart's Service in the release namespace;
otherwise a server is started here for the check, following the release exactly as `aimass serve` does.

deploy.strategy changes steps 2-4: `none` registers the version only; `canary` (once something is in production)
serves it beside production through release.canary.* steps on the live server (serving.url, the chart's Service,
or serving.host:port), sends the smoke-test images and their labels as its first labelled traffic, and moves the
alias only when the canary promotes it; an aborted canary fails the step, production serving throughout.
"""
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from aimass.components.base import project_component
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from aimass.models.architecture import predict_probabilities
from aimass.config import AimassConfig
from aimass.data.arrays import load_image_sets
from aimass.data.card import SplitsCard
from aimass.errors import AimassError
from aimass.models.artifact import LoadedModel, load_model
from aimass.monitoring.reference import reference_outputs, with_reference_outputs
from aimass.registry import open_registry
from aimass.releases import ReleaseBackend, ReleaseError, Revision, open_release_backend
from aimass.reports import markdown_table
from aimass.serving import ReleaseSource, read_token, running_server

PRODUCTION_ALIAS = "production"
SMOKE_BATCH = 100  # images per request: big enough to be quick, far below serving.max_images_per_request
# Served answers may differ from the local ones only where compiled int8 kernels round differently.
MIN_AGREEMENT = 0.99


class DeployError(AimassError):
    """The released model failed its smoke test; the release was rolled back."""


@dataclass(frozen=True)
class SmokeTest:
    url: str
    served_version: str
    images: int
    accuracy: float
    agreement: float  # share of images the served model answers as the blessed model does here
    failed_requests: list[str]  # "HTTP 503: ..." for each request that did not succeed
    sample: list[tuple[str, str]]  # (true class, predicted class) for the first images


@dataclass(frozen=True)
class DeployOutcome:
    model_version: str
    revision: Revision | None  # None with deploy.strategy=none (registered only)
    smoke: SmokeTest | None
    canary_lines: tuple[str, ...] = ()  # deploy.strategy=canary: the controller's line per step and verdict

    def markdown(self) -> str:
        if self.revision is None:
            return (f"# Registered {self.model_version}; not released\n\n`deploy.strategy` is `none`: release it "
                    f"with `aimass release deploy {self.model_version}` or `aimass release canary "
                    f"{self.model_version}`.\n")
        if self.canary_lines:
            steps = "\n".join(f"- {line}" for line in self.canary_lines)
            return (f"# {self.revision.model_name} {self.model_version} promoted by canary as revision "
                    f"{self.revision.revision}\n\n{steps}\n\n- alias `{PRODUCTION_ALIAS}` now points to "
                    f"{self.model_version}\n")
        return self._direct_markdown()

    def _direct_markdown(self) -> str:
        sample = markdown_table(["true class", "served model says"], self.smoke.sample)
        lineage = ", ".join(f"{key} `{value}`" for key, value in sorted(self.revision.lineage.items()))
        return (f"# Deployed {self.revision.model_name} {self.model_version} as revision {self.revision.revision}\n\n"
                f"- smoke test at `{self.smoke.url}`: accuracy {self.smoke.accuracy:.4f} on {self.smoke.images} "
                f"held-out images, served version {self.smoke.served_version}, same answers as the blessed model "
                f"for {self.smoke.agreement:.2%}\n"
                f"- alias `{PRODUCTION_ALIAS}` now points to {self.model_version}\n"
                f"- lineage: {lineage}\n\n## First answers of the served model\n\n{sample}")


def deploy(config: AimassConfig, blessed_dir: Path, splits_dir: Path, gate_metrics: dict[str, float],
           triggered_by: str) -> DeployOutcome:
    """Push, release and smoke-test the blessed model; roll back and raise DeployError when the test fails.

    Raises:
        DeployError: the served model failed the smoke test (the release was rolled back).
        ObjectStoreError: the registry's store failed; nothing was released.
    """
    blessed = load_model(blessed_dir)  # every sha256 checked before anything is published
    registry = open_registry(config, SplitsCard.read(splits_dir).name)
    releases = open_release_backend(config, registry)
    previous = _current_revision(releases)
    validation = load_image_sets(splits_dir)[0]["validation"]
    outputs = reference_outputs(blessed.module, validation.images, blessed.signature.input_spec,
                                config.monitor.reference_images)
    with tempfile.TemporaryDirectory() as scratch:  # the blessed artifact itself stays as bless wrote it
        record = registry.push(with_reference_outputs(blessed_dir, outputs, Path(scratch) / "model"),
                               metrics=gate_metrics, parent_version=previous.model_version if previous else None)
    strategy = config.deploy.strategy
    if strategy == "none":
        return DeployOutcome(record.version, None, None)
    if strategy == "canary" and previous is not None:
        return _deploy_as_canary(config, releases, registry, record.version, splits_dir, blessed, triggered_by)
    # deploy.strategy=canary with nothing in production yet: there is nothing to compare with, so it is installed.
    revision = releases.deploy(record.version, triggered_by)
    try:
        smoke = smoke_test_release(config, registry.model_name, record.version, splits_dir, blessed,
                                   releases.endpoint_url)
        failures = _smoke_failures(smoke)
    except Exception as error:  # noqa: BLE001
        # Not serving the model at all fails the smoke test as surely as low accuracy does.
        smoke, failures = None, [f"the served model could not be checked: {error}"]
    if failures:
        undone = _undo(releases, previous, triggered_by)
        raise DeployError(f"{record.version} (revision {revision.revision}) failed its smoke test: "
                          f"{'; '.join(failures)}. {undone}")
    registry.promote(record.version, PRODUCTION_ALIAS)
    return DeployOutcome(record.version, revision, smoke)


def _deploy_as_canary(config: AimassConfig, releases: ReleaseBackend, registry, version: str, splits_dir: Path,
                      blessed: LoadedModel, triggered_by: str) -> DeployOutcome:
    """The registered version as a canary beside production, the smoke-test images (with their labels) as its
    first labelled traffic, then live traffic as release.canary.* says; promoted, or DeployError when aborted."""
    from aimass.canary.controller import plan_canary, run_canary, start_canary
    from aimass.canary.plan import PROMOTED
    from aimass.canary.analysis import open_metrics_reader

    settings = config.release.canary
    state = plan_canary(releases, registry, version, settings, triggered_by)
    read_metrics = open_metrics_reader(config)
    read_metrics()  # the server taking live traffic must be reachable before anything changes
    start_canary(releases, state)
    url = config.serving.url or releases.endpoint_url or f"http://{config.serving.host}:{config.serving.port}"
    send_labelled_images(config, registry.model_name, url, splits_dir, f"smoke-{version}")
    lines: list[str] = []
    final = run_canary(releases, state, settings, read_metrics, triggered_by, lines.append)
    if final.outcome != PROMOTED:
        raise DeployError(f"{version} was not promoted: {lines[-1]}. It stays registered; "
                          f"{releases.status().model_version} keeps serving")
    registry.promote(version, PRODUCTION_ALIAS)
    return DeployOutcome(version, releases.status(), None, tuple(lines))


def send_labelled_images(config: AimassConfig, model_name: str, url: str, splits_dir: Path, prefix: str) -> int:
    """The smoke-test images of the test split as requests, each followed by its true labels as feedback; returns
    how many images were sent. Their answers and labels are what a canary judges first."""
    token = read_token(config.serving)
    test = load_image_sets(splits_dir)[0]["test"]
    images = np.asarray(test.images[:config.serving.smoke_test_images])
    names = SplitsCard.read(splits_dir).class_names
    with httpx.Client(base_url=url.rstrip("/"), timeout=30,
                      headers={"Authorization": f"Bearer {token}"} if token else {}) as client:
        for start in range(0, len(images), SMOKE_BATCH):
            request_id = f"{prefix}-{start}"
            batch = images[start:start + SMOKE_BATCH]
            client.post(f"/v2/models/{model_name}/infer", json={**_infer_body(batch), "id": request_id}) \
                .raise_for_status()
            labels = [names[label] for label in test.labels[start:start + len(batch)]]
            client.post(f"/v2/models/{model_name}/feedback", json={"id": request_id, "labels": labels}) \
                .raise_for_status()
    return len(images)


def smoke_test_release(config: AimassConfig, model_name: str, expected_version: str, splits_dir: Path,
                       blessed: LoadedModel, release_endpoint: str | None = None) -> SmokeTest:
    """Send held-out test images to the endpoint serving the release, once it serves `expected_version`:
    `serving.url`, else the release's own endpoint (the chart's Service), else a server started here."""
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
        client = stack.enter_context(httpx.Client(
            base_url=url.rstrip("/"), timeout=30, headers={"Authorization": f"Bearer {token}"} if token else {}))
        infer_path = f"/v2/models/{model_name}/infer"
        _wait_until_served(client, infer_path, expected_version, signature.input_spec.shape,
                           settings.ready_timeout_seconds)
        test = load_image_sets(splits_dir)[0]["test"]
        images = np.asarray(test.images[:settings.smoke_test_images])
        labels = test.labels[:settings.smoke_test_images]
        predictions, failed, served_versions = [], [], set()
        for start in range(0, len(images), SMOKE_BATCH):
            response = client.post(infer_path, json=_infer_body(images[start:start + SMOKE_BATCH]))
            if response.status_code != 200:
                failed.append(f"HTTP {response.status_code}: {response.text[:200]}")
                predictions.extend([-1] * len(images[start:start + SMOKE_BATCH]))
                continue
            answer = response.json()
            served_versions.add(answer["model_version"])
            predictions.extend(next(o for o in answer["outputs"] if o["name"] == "label_index")["data"])
    predicted = np.asarray(predictions)
    local = predict_probabilities(blessed.module, images, signature.input_spec).argmax(axis=1)
    names = signature.class_names
    sample = [(names[t], names[p] if p >= 0 else "(failed)") for t, p in zip(labels[:8], predicted[:8])]
    return SmokeTest(url=url, served_version=",".join(sorted(served_versions)) or "none", images=len(images),
                     accuracy=float((predicted == labels).mean()), agreement=float((predicted == local).mean()),
                     failed_requests=failed, sample=sample)


def _wait_until_served(client: httpx.Client, infer_path: str, version: str, input_shape: tuple[int, int, int],
                       timeout: float) -> None:
    probe = _infer_body(np.zeros((1, *input_shape), dtype=np.uint8))
    deadline, last = time.monotonic() + timeout, "no answer yet"
    while time.monotonic() < deadline:
        try:
            response = client.post(infer_path, json=probe)
            if response.status_code == 200 and response.json()["model_version"] == version:
                return
            last = f"HTTP {response.status_code}, " + (f"serving {response.json().get('model_version')}"
                                                       if response.status_code == 200 else response.text[:200])
        except httpx.HTTPError as error:
            last = str(error)
        time.sleep(0.2)
    raise DeployError(f"the endpoint did not serve {version} within {timeout:.0f} s (last: {last})")


def _infer_body(images: np.ndarray) -> dict:
    return {"inputs": [{"name": "images", "shape": list(images.shape), "datatype": "UINT8",
                        "data": images.ravel().tolist()}], "outputs": [{"name": "label_index"}]}


def _smoke_failures(smoke: SmokeTest) -> list[str]:
    failures = []
    if smoke.failed_requests:
        failures.append(f"{len(smoke.failed_requests)} request(s) failed, first: {smoke.failed_requests[0]}")
    if smoke.agreement < MIN_AGREEMENT:
        failures.append(f"the served model answers {smoke.images} held-out images as the blessed model does for "
                        f"only {smoke.agreement:.2%} (at least {MIN_AGREEMENT:.0%} expected): it is not the model "
                        "that passed the gate")
    return failures


def _current_revision(releases: ReleaseBackend) -> Revision | None:
    try:
        return releases.status()
    except ReleaseError:
        return None


def _undo(releases: ReleaseBackend, previous: Revision | None, triggered_by: str) -> str:
    reason = f"{triggered_by} (smoke test failed)"
    if previous is None:
        releases.uninstall(reason)
        return "It was the first release, so the release was uninstalled; nothing is served."
    rollback = releases.rollback(previous.revision, reason)
    return (f"Rolled back to revision {previous.revision} (now revision {rollback.revision}), which serves "
            f"{previous.model_version} again.")


@project_component
def deploy_component(config_json: str, blessed: Input[Model], splits: Input[Dataset], gate_metrics: Input[Metrics],
                     run_id: str, run_name: str, smoke_metrics: Output[Metrics], report: Output[Markdown]):
    """Push the blessed model to the registry, release it, smoke-test the served model, roll back on failure.

    Args:
        config_json: the resolved AimassConfig as JSON (registry.*, release.*, serving.*).
        blessed: the gate-approved model from bless_model.
        splits: the ingest output; the smoke test sends images of `test`.
        gate_metrics: evaluate's metrics of the blessed model, recorded with the registry version.
        run_id: the pipeline run, recorded as what triggered the release.
        run_name: the pipeline run's name.
        smoke_metrics: the served model's smoke-test accuracy, the version and the release revision.
        report: what was deployed where, with the served model's first answers, as Markdown.
    """
    from pathlib import Path

    from aimass.components.deploy import deploy

    from aimass.config import AimassConfig

    scalars = {key: float(value) for key, value in gate_metrics.metadata.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    outcome = deploy(AimassConfig.from_json(config_json), Path(blessed.path), Path(splits.path), scalars,
                     triggered_by=f"pipeline run {run_name} ({run_id})")
    if outcome.smoke is not None:
        smoke_metrics.log_metric("smoke_test_accuracy", outcome.smoke.accuracy)
        smoke_metrics.log_metric("smoke_test_images", outcome.smoke.images)
    if outcome.revision is not None:
        smoke_metrics.log_metric("release_revision", outcome.revision.revision)
    smoke_metrics.metadata["model_version"] = outcome.model_version
    smoke_metrics.metadata["deploy_strategy"] = AimassConfig.from_json(config_json).deploy.strategy
    Path(report.path).write_text(outcome.markdown())
