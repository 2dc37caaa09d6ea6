"""The deploy stage's work: publish the blessed model, release it, prove the served model answers well, or undo the
release.

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
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from aimass.config import AimassConfig
from aimass.data.arrays import load_image_sets
from aimass.data.card import SplitsCard
from aimass.deployment.smoke_test import SmokeTest, send_labelled_images, smoke_test_release
from aimass.errors import DeployError
from aimass.gates import smoke_test_failures
from aimass.integrity import read_verified_manifest, write_manifest
from aimass.models.artifact import LoadedModel, load_model
from aimass.models.card import CARD_FILE, read_model_card
from aimass.monitoring.reference import reference_outputs, with_reference_outputs
from aimass.registry import open_registry
from aimass.releases import ReleaseBackend, ReleaseError, Revision, open_release_backend
from aimass.reports import markdown_table

PRODUCTION_ALIAS = "production"


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
        registered = with_test_figures(with_reference_outputs(blessed_dir, outputs, Path(scratch) / "model"),
                                       gate_metrics)
        record = registry.push(registered, metrics=gate_metrics,
                               parent_version=previous.model_version if previous else None)
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
        failures = smoke_test_failures(smoke.images, smoke.agreement, smoke.failed_requests)
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


# The gate's figures a model card keeps (the gate's metrics also hold per-class precision and recall).
CARD_FIGURES = ("accuracy", "macro_f1", "roc_auc_ovr", "corruption_accuracy", "calibration_error")


def with_test_figures(model_dir: Path, gate_metrics: dict[str, float]) -> Path:
    """`model_dir` (a registration copy) with the gate's test figures in its card, its manifest rewritten."""
    manifest = read_verified_manifest(model_dir)
    card = read_model_card(model_dir)
    figures = {name: float(gate_metrics[name]) for name in CARD_FIGURES if name in gate_metrics}
    (model_dir / CARD_FILE).write_text(card.model_copy(update={"evaluation": figures or None}).to_json())
    write_manifest(model_dir, {key: value for key, value in manifest.items() if key != "sha256"})
    return model_dir


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
