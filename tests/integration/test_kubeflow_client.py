"""`aimass submit | runs | schedule` through the real kfp.Client against a FAKE KFP API server
(tests/fakes/fake_kfp_api.py): no KFP backend runs here. The fake refuses any request body KFP's v2beta1 API would
refuse (fields checked against kfp-server-api's models), so these tests also pin the wire format."""
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT, free_port

from aimass.cli import main
from aimass.kubeflow import KubeflowError, kfp_cron

sys.path.insert(0, str(REPO_ROOT / "tests" / "fakes"))
from fake_kfp_api import FakeKfp, RunningFakeKfp, model_errors

COMPILED = REPO_ROOT / "pipelines" / "compiled" / "training_pipeline.yaml"


@pytest.fixture
def kfp_api():
    with RunningFakeKfp(FakeKfp(), free_port()) as running:
        yield running


@pytest.fixture
def checkout(tmp_path):
    """A committed checkout: git history and data.dvc, as a user's clone has."""
    repo = tmp_path / "checkout"
    repo.mkdir()
    shutil.copyfile(REPO_ROOT / "data.dvc", repo / "data.dvc")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "data.dvc"], check=True)
    subprocess.run([*git, "commit", "-qm", "data"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    return repo, commit


def cli(kfp_api, checkout, *arguments):
    return main([*arguments, "--repo", str(checkout[0]), "--set", f"kubeflow.host={kfp_api.url}",
                 "--set", "kubeflow.poll_seconds=0.01"])


def posted(kfp_api, path_end):
    return [body for method, path, body in kfp_api.fake.requests if method == "POST" and path.endswith(path_end)]


def test_submit_starts_a_run_pinned_to_the_commit_and_the_data_dvc_version(kfp_api, checkout):
    assert cli(kfp_api, checkout, "submit", "--pipeline", str(COMPILED), "--run-name", "r-1") == 0
    (run,) = posted(kfp_api, "/runs")
    assert run["display_name"] == "r-1" and run["service_account"] == "aimass-pipeline"
    pinned = yaml.safe_load((checkout[0] / "data.dvc").read_text())["outs"][0]["md5"]
    assert run["runtime_config"]["parameters"] == {"git_commit": checkout[1], "data_version": pinned}
    # kfp sends the pipeline and its Kubernetes platform spec together (secrets by name, security context, GPUs)
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "aimass-training"
    assert "exec-deploy-component" in run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"][
        "deploymentSpec"]["executors"]
    assert posted(kfp_api, "/experiments") == [{"display_name": "aimass", "namespace": "kubeflow"}]


def test_submit_compiles_the_cluster_pipeline_when_none_is_given(kfp_api, checkout):
    assert cli(kfp_api, checkout, "submit") == 0
    (run,) = posted(kfp_api, "/runs")
    root = run["pipeline_spec"]["pipeline_spec"]["root"]
    default_config = root["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert '"backend":"helm"' in default_config and '"profile":"full"' in default_config


def test_submit_wait_prints_each_steps_state_until_the_run_succeeds(kfp_api, checkout, capsys):
    assert cli(kfp_api, checkout, "submit", "--pipeline", str(COMPILED), "--wait") == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("RUNNING") and "validate data RUNNING" in line for line in lines)
    assert lines[-1].startswith("SUCCEEDED") and "train SUCCEEDED" in lines[-1]


def test_submit_wait_fails_when_the_run_fails(kfp_api, checkout, capsys):
    kfp_api.fake.final_state = "FAILED"
    assert cli(kfp_api, checkout, "submit", "--pipeline", str(COMPILED), "--wait", "--run-name", "r-2") == 1
    assert "run r-2 ended FAILED" in capsys.readouterr().err


def test_a_dirty_checkout_is_not_submitted(kfp_api, checkout, capsys):
    (checkout[0] / "data.dvc").write_text("outs: []\n")
    assert cli(kfp_api, checkout, "submit", "--pipeline", str(COMPILED)) == 1
    assert "is dirty: a cluster run is pinned to a commit" in capsys.readouterr().err
    assert posted(kfp_api, "/runs") == []


def test_the_token_comes_from_the_environment(kfp_api, checkout, monkeypatch):
    monkeypatch.setenv("AIMASS_KFP_TOKEN", "token-from-env")
    cli(kfp_api, checkout, "submit", "--pipeline", str(COMPILED))
    assert kfp_api.fake.authorizations == {"Bearer token-from-env"}


def test_runs_lists_the_experiments_runs_newest_first(kfp_api, checkout, capsys):
    for name in ("first", "second"):
        cli(kfp_api, checkout, "submit", "--pipeline", str(COMPILED), "--run-name", name)
    capsys.readouterr()
    assert cli(kfp_api, checkout, "runs") == 0
    output = capsys.readouterr().out
    assert output.index("second") < output.index("first") and "PENDING" in output


def test_schedule_create_converts_five_field_cron_and_runs_one_at_a_time_without_catch_up(kfp_api, checkout):
    assert cli(kfp_api, checkout, "schedule", "create", "nightly", "--cron", "30 2 * * *",
               "--pipeline", str(COMPILED)) == 0
    (recurring,) = posted(kfp_api, "/recurringruns")
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 30 2 * * *"}}
    assert (int(recurring["max_concurrency"]), recurring["no_catchup"], recurring["mode"]) == (1, True, "ENABLE")
    assert recurring["runtime_config"]["parameters"]["git_commit"] == checkout[1]


def test_schedule_create_replace_swaps_the_schedule_of_the_same_name(kfp_api, checkout, capsys):
    for _ in range(2):
        assert cli(kfp_api, checkout, "schedule", "create", "nightly", "--cron", "0 2 * * *", "--replace",
                   "--catch-up", "--pipeline", str(COMPILED)) == 0
    assert [r["display_name"] for r in kfp_api.fake.recurring_runs.values()] == ["nightly"]
    assert list(kfp_api.fake.recurring_runs.values())[0]["no_catchup"] is False
    capsys.readouterr()
    assert cli(kfp_api, checkout, "schedule", "list") == 0
    (schedule_id,) = kfp_api.fake.recurring_runs
    assert f"{schedule_id}  nightly  cron '0 0 2 * * *'" in capsys.readouterr().out
    assert cli(kfp_api, checkout, "schedule", "delete", schedule_id) == 0
    assert kfp_api.fake.recurring_runs == {}


def test_a_bad_cron_is_refused_before_anything_is_sent(kfp_api, checkout, capsys):
    assert cli(kfp_api, checkout, "schedule", "create", "nightly", "--cron", "61 2 * * *") == 1
    assert "the minute field '61' is outside 0-59" in capsys.readouterr().err
    assert kfp_api.fake.requests == []


def test_an_unreachable_endpoint_is_one_clear_error(checkout, capsys):
    assert main(["runs", "--repo", str(checkout[0]), "--set", f"kubeflow.host=http://127.0.0.1:{free_port()}"]) == 1
    assert "aimass: error:" in capsys.readouterr().err


# ---- cron ----

@pytest.mark.parametrize("given, sent", [
    ("30 2 * * *", "0 30 2 * * *"), ("0 30 2 * * *", "0 30 2 * * *"), ("*/15 * * * *", "0 */15 * * * *"),
    ("0 0 * * MON-FRI", "0 0 0 * * MON-FRI"), ("0 6 1 JAN,JUL *", "0 0 6 1 JAN,JUL *"), ("@daily", "@daily"),
    ("@every 6h", "@every 6h"), ("  0   2 * * *  ", "0 0 2 * * *"),
])
def test_cron_accepts_five_or_six_fields_and_descriptors(given, sent):
    assert kfp_cron(given) == sent


@pytest.mark.parametrize("expression, problem", [
    ("* * *", "has 3 fields; KFP reads six fields, seconds first"),
    ("0 24 * * *", "the hour field '24' is outside 0-23"),
    ("0 0 0 * *", "the day of month field '0' is outside 1-31"),
    ("0 0 * 13 *", "the month field '13' is outside 1-12 (or JAN-DEC)"),
    ("0 0 * * FUNDAY", "the day of week field 'FUNDAY' is outside 0-6 (or SUN-SAT)"),
    ("*/0 * * * *", "has a bad step '0'"),
])
def test_cron_refuses_what_kfp_would_and_says_which_field(expression, problem):
    with pytest.raises(KubeflowError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        kfp_cron(expression)


def test_the_fake_refuses_a_field_the_kfp_api_does_not_have():
    assert model_errors({"display_name": "r", "pipeline": {}}, "V2beta1Run") == [
        ".pipeline: unknown field of V2beta1Run"]
    assert model_errors({"display_name": "r", "trigger": {"cron": "x"}, "mode": "ENABLE"}, "V2beta1RecurringRun") == [
        ".trigger.cron: unknown field of V2beta1Trigger"]
