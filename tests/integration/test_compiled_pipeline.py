"""The compiled pipeline YAML: committed copy up to date, GPU scheduling on train, resources and caching everywhere."""
import re

import yaml
import pytest

from aimass.config import CLUSTER_OVERRIDES, AimassConfig, load_config
from aimass.pipelines.compile import COMPILED_PIPELINE, compile_pipeline


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    # What `aimass compile` builds: the full profile with the cluster's backends.
    path = compile_pipeline(load_config("full", CLUSTER_OVERRIDES),
                            tmp_path_factory.mktemp("compiled") / "pipeline.yaml")
    return path.read_text()


def documents(text):
    pipeline_spec, platform_spec = yaml.safe_load_all(text)
    return pipeline_spec, platform_spec


def executor(pipeline_spec, component):
    return pipeline_spec["deploymentSpec"]["executors"][f"exec-{component}"]["container"]


def test_committed_pipeline_yaml_is_up_to_date(compiled):
    assert COMPILED_PIPELINE.read_text() == compiled, "run `make compile` and commit pipelines/compiled/"


def test_train_requests_one_gpu(compiled):
    accelerator = executor(documents(compiled)[0], "train-component")["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"


def test_train_is_scheduled_on_gpu_nodes_with_the_gpu_toleration(compiled):
    train = documents(compiled)[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-component"]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert train["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]


def test_only_train_compress_and_each_search_trial_ask_for_a_gpu(compiled):
    executors = documents(compiled)[0]["deploymentSpec"]["executors"]
    with_gpu = [name for name, spec in executors.items() if "accelerator" in spec["container"].get("resources", {})]
    trials = [name for name in with_gpu if name.startswith("exec-hpo-trial-component")]
    assert sorted(set(with_gpu) - set(trials)) == ["exec-compress-component", "exec-train-component"]
    assert len(trials) == 4  # one trial component per round of the full profile's search


def test_the_full_profiles_search_fans_out_in_rounds_of_parallel_trials(compiled):
    pipeline_spec = documents(compiled)[0]
    loops = {name: spec for name, spec in pipeline_spec["root"]["dag"]["tasks"].items() if name.startswith("for-loop")}
    assert len(loops) == 4  # 16 trials, 4 at a time
    assert all(loop["iteratorPolicy"]["parallelismLimit"] == 4 for loop in loops.values())


def test_compress_is_scheduled_on_gpu_nodes_too(compiled):
    executors = documents(compiled)[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-compress-component"]["nodeSelector"] == executors["exec-train-component"]["nodeSelector"]
    assert executors["exec-compress-component"]["tolerations"] == executors["exec-train-component"]["tolerations"]


def test_every_task_requests_cpu_and_memory(compiled):
    for name, spec in documents(compiled)[0]["deploymentSpec"]["executors"].items():
        resources = spec["container"]["resources"]
        assert resources["resourceCpuRequest"] and resources["resourceMemoryRequest"], name


def test_every_task_but_deploy_has_caching_enabled(compiled):
    def tasks(dag):
        for task in dag["tasks"].values():
            yield task

    spec = documents(compiled)[0]
    all_tasks = list(tasks(spec["root"]["dag"])) + [
        task for component in spec["components"].values() if "dag" in component
        for task in tasks(component["dag"])]
    executed = {task["componentRef"]["name"]: task for task in all_tasks
                if task["componentRef"]["name"].endswith("-component")}
    deploy = executed.pop("comp-deploy-component")
    stages = {re.sub(r"-\d+$", "", name) for name in executed}
    assert stages == {f"comp-{stage}-component" for stage in (
        "ingest", "validate-data", "augment", "hpo-plan", "hpo-trial", "hpo-record", "hpo-select", "train",
        "compress", "evaluate", "bless-model", "reject-model")}
    assert all(task["cachingOptions"]["enableCache"] for task in executed.values())
    assert not deploy["cachingOptions"].get("enableCache")  # a cached deploy would release nothing


def test_components_run_in_the_project_image_without_pip_installs(compiled):
    from aimass.config import PROJECT_IMAGE

    for name, spec in documents(compiled)[0]["deploymentSpec"]["executors"].items():
        assert spec["container"]["image"] == PROJECT_IMAGE, name
        assert "pip install" not in " ".join(spec["container"]["command"]), name


def test_the_gpu_node_selector_can_be_changed_at_compile_time(tmp_path):
    config = load_config("full", ["kubernetes.gpu_node_selector=cloud.example.com/accelerator=h100"])
    _, platform = documents(compile_pipeline(config, tmp_path / "p.yaml").read_text())
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-component"]
    assert train["nodeSelector"]["labels"] == {"cloud.example.com/accelerator": "h100"}


def test_blessing_and_deployment_run_only_when_the_gate_passed(compiled):
    spec = documents(compiled)[0]
    (branching,) = [name for name in spec["root"]["dag"]["tasks"] if name.startswith("condition-branches")]
    assert "evaluate-component" in spec["root"]["dag"]["tasks"][branching]["dependentTasks"]
    branches = spec["components"][f"comp-{branching}"]["dag"]["tasks"]
    gate_passed = next(task for task in branches.values() if task["taskInfo"]["name"] == "gate-passed")
    condition = gate_passed["triggerPolicy"]["condition"]
    assert condition == "inputs.parameter_values['pipelinechannel--evaluate-component-passed'] == true"
    blessed_branch = spec["components"][gate_passed["componentRef"]["name"]]["dag"]["tasks"]
    assert list(blessed_branch) == ["bless-model-component", "deploy-component"]
    assert blessed_branch["deploy-component"]["dependentTasks"] == ["bless-model-component"]


def test_no_credential_reaches_the_compiled_pipeline(tmp_path, monkeypatch):
    canaries = {"AIMASS_S3_ACCESS_KEY": "canary-access-3f9a", "AIMASS_S3_SECRET_KEY": "canary-secret-8c1d",
                "AIMASS_SERVING_TOKEN": "canary-token-77e2"}
    for variable, value in canaries.items():
        monkeypatch.setenv(variable, value)
    text = compile_pipeline(load_config("full"), tmp_path / "pipeline.yaml").read_text()
    assert not [value for value in canaries.values() if value in text]


def test_the_configuration_names_where_credentials_are_but_never_holds_one():
    from aimass.config import valid_keys

    # A key may mention a credential only to say where it lives: a file (*_file) or a Kubernetes Secret (*_secret).
    suspicious = [key for key in valid_keys() if re.search(r"secret|password|access_key|token", key)
                  and not key.endswith(("_file", "_secret"))]
    assert suspicious == []


def platform_executors(compiled):
    return documents(compiled)[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_every_step_runs_as_the_images_unprivileged_user(compiled):
    executors = platform_executors(compiled)
    assert len(executors) == len(documents(compiled)[0]["deploymentSpec"]["executors"])
    for name, executor in executors.items():
        assert executor["securityContext"] == {"runAsUser": "10001", "runAsGroup": "10001", "runAsNonRoot": True}, name


# ingest pulls the data version; validate_data reads the production model's data profile, evaluate scores the
# production model, deploy publishes: all reach MinIO.
STORE_READERS = ("ingest", "validate-data", "evaluate", "deploy")


@pytest.mark.parametrize("step", STORE_READERS)
def test_the_steps_that_reach_minio_read_its_credentials_from_the_secret_by_name(compiled, step):
    (secret,) = platform_executors(compiled)[f"exec-{step}-component"]["secretAsEnv"]
    assert secret["secretName"] == "aimass-minio-credentials"
    assert {pair["envVar"] for pair in secret["keyToEnv"]} == {"AIMASS_S3_ACCESS_KEY", "AIMASS_S3_SECRET_KEY"}


def test_no_other_step_sees_a_secret(compiled):
    readers = {name for name, executor in platform_executors(compiled).items() if "secretAsEnv" in executor}
    assert readers == {f"exec-{step}-component" for step in STORE_READERS}


def test_the_compiled_default_configuration_uses_minio_and_helm(compiled):
    default = documents(compiled)[0]["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    config = AimassConfig.from_json(default)
    assert (config.registry.backend, config.release.backend, config.profile) == ("s3", "helm", "full")
    assert config.data.remote_url == "s3://aimass-data/dvc"


def test_the_pipeline_takes_the_data_version_to_pull_as_a_parameter(compiled):
    parameters = documents(compiled)[0]["root"]["inputDefinitions"]["parameters"]
    assert {"config_json", "git_commit", "data_version"} <= set(parameters)


def test_a_multi_node_train_step_shares_a_volume_with_its_pytorchjob_and_holds_no_gpu(tmp_path):
    config = load_config("full", [*CLUSTER_OVERRIDES, "train.nodes=2", "train.nproc=4"])
    pipeline_spec, platform_spec = documents(compile_pipeline(config, tmp_path / "p.yaml").read_text())
    train = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-component"]
    (mount,) = train["pvcMount"]
    assert (mount["mountPath"], mount["constant"]) == ("/shared", "aimass-training-shared")
    assert "nodeSelector" not in train and "tolerations" not in train
    assert "accelerator" not in executor(pipeline_spec, "train-component")["resources"]


def test_the_compiled_pipeline_carries_a_timm_architecture_and_its_checkpoint(tmp_path):
    config = load_config("full", [*CLUSTER_OVERRIDES, "model.architecture=timm:convnext_atto",
                                  "model.checkpoint=/mnt/checkpoints/convnext-atto", "compress.student=timm:resnet10t"])
    default = documents(compile_pipeline(config, tmp_path / "p.yaml").read_text())[0]["root"]["inputDefinitions"][
        "parameters"]["config_json"]["defaultValue"]
    carried = AimassConfig.from_json(default)
    assert (carried.model.architecture, carried.model.checkpoint) == ("timm:convnext_atto",
                                                                      "/mnt/checkpoints/convnext-atto")
    assert carried.compress.student == "timm:resnet10t"
