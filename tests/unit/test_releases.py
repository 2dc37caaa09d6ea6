"""Release lifecycle on the embedded backend, with Helm's revision semantics."""
import pytest

from aimass.object_store import LocalStore
from aimass.registry import ModelRegistry, RegistryError
from aimass.releases import DEPLOYED, SUPERSEDED, EmbeddedReleaseBackend, ReleaseError


@pytest.fixture
def registry(tmp_path, tiny_teacher):
    registry = ModelRegistry(LocalStore(tmp_path / "registry"), "fashion-mnist-classifier")
    for _ in range(3):
        registry.push(tiny_teacher[0])
    return registry


@pytest.fixture
def releases(tmp_path, registry):
    return EmbeddedReleaseBackend(tmp_path / "releases", "aimass-serving", registry)


def test_each_deploy_is_a_new_revision_and_only_the_last_is_deployed(releases):
    releases.deploy("v1", "alice@laptop")
    releases.deploy("v2", "pipeline run r-42")
    history = releases.history()
    assert [(r.revision, r.model_version, r.status, r.description) for r in history] == [
        (1, "v1", SUPERSEDED, "Install complete"), (2, "v2", DEPLOYED, "Upgrade complete")]
    assert history[1].triggered_by == "pipeline run r-42"


def test_a_revision_records_the_lineage_of_its_model(releases, registry):
    revision = releases.deploy("v1", "alice@laptop")
    assert revision.lineage == {**registry.get("v1").lineage, "parent_version": "none"}
    assert revision.lineage["data_md5"].endswith(".dir")


def test_rollback_without_a_target_serves_the_previous_revisions_model(releases):
    releases.deploy("v1", "alice")
    releases.deploy("v2", "alice")
    revision = releases.rollback(None, "bob")
    assert (revision.revision, revision.model_version, revision.description) == (3, "v1", "Rollback to 1")
    assert releases.status() == revision


def test_rollback_to_a_named_revision_is_recorded_as_such(releases):
    for version in ("v1", "v2", "v3"):
        releases.deploy(version, "alice")
    revision = releases.rollback(2, "bob")
    assert (revision.model_version, revision.description) == ("v2", "Rollback to 2")
    assert [r.status for r in releases.history()].count(DEPLOYED) == 1


def test_deploying_an_alias_records_the_version_it_resolves_to(releases, registry):
    registry.promote("v3", "production")
    assert releases.deploy("production", "alice").model_version == "v3"


def test_an_unknown_version_is_refused_and_history_is_unchanged(releases):
    releases.deploy("v1", "alice")
    with pytest.raises(RegistryError, match="has no version v9"):
        releases.deploy("v9", "alice")
    assert [r.model_version for r in releases.history()] == ["v1"]


def test_rollback_to_an_unknown_revision_lists_the_revisions(releases):
    releases.deploy("v1", "alice")
    with pytest.raises(ReleaseError, match="no revision 7 to roll back to; revisions: 1"):
        releases.rollback(7, "bob")


def test_status_and_rollback_before_any_deploy_say_what_to_do(releases):
    with pytest.raises(ReleaseError, match="aimass release deploy VERSION"):
        releases.status()
    with pytest.raises(ReleaseError, match="nothing to roll back"):
        releases.rollback(None, "bob")


def test_uninstall_keeps_the_history_and_the_next_deploy_is_an_install(releases):
    releases.deploy("v1", "alice")
    uninstalled = releases.uninstall("deploy smoke test")
    with pytest.raises(ReleaseError, match="nothing is deployed"):
        releases.status()
    assert (uninstalled.status, uninstalled.description) == ("uninstalled", "Uninstallation complete")
    assert releases.deploy("v2", "alice").description == "Install complete"
    assert [r.revision for r in releases.history()] == [1, 2]
