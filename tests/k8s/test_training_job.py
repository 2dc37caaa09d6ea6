"""The multi-node train stage's PyTorchJob: what Kubeflow's training operator requires of it, the API schemas of its
pod template, Pod Security "restricted", and the wait for its outcome (against a FAKE custom-objects API: no cluster
or operator runs here)."""
import pytest
from k8s_render import KUBERNETES_VERSIONS, restricted_violations, schema_errors

from aimass.config import load_config
from aimass.training.operator_job import TrainingJobError, pytorch_job, run_job


def job(nodes=3, nproc=2):
    config = load_config("full", [f"train.nodes={nodes}", f"train.nproc={nproc}"])
    return pytorch_job(config, "aimass-train-run-1", "kubeflow", "ghcr.io/aimass/aimass:0.1.0",
                       "/shared/aimass-train-run-1/job.json", "aimass-pipeline")


def test_the_job_is_a_kubeflow_v1_pytorchjob_with_one_master_and_the_other_nodes_as_workers():
    manifest = job(nodes=3, nproc=2)
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    replicas = manifest["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 2)
    assert manifest["spec"]["nprocPerNode"] == "2"


def test_a_single_node_job_has_no_workers():
    assert set(job(nodes=1)["spec"]["pytorchReplicaSpecs"]) == {"Master"}


@pytest.mark.parametrize("role", ["Master", "Worker"])
def test_each_pod_runs_torchrun_in_the_pytorch_container_with_one_gpu_per_process_on_gpu_nodes(role):
    replica = job(nodes=2, nproc=4)["spec"]["pytorchReplicaSpecs"][role]
    assert replica["restartPolicy"] == "Never"
    pod = replica["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "pytorch"  # the operator injects the rendezvous variables into this container
    assert container["command"][:3] == ["python", "-m", "torch.distributed.run"]
    assert container["command"][-2:] == ["aimass.training.distributed", "/shared/aimass-train-run-1/job.json"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 4}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert {"name": "shared", "persistentVolumeClaim": {"claimName": "aimass-training-shared"}} in pod["volumes"]


def test_a_failed_rank_fails_the_job_rather_than_being_retried():
    assert job()["spec"]["runPolicy"]["backoffLimit"] == 0


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_the_pod_template_matches_the_kubernetes_schemas_and_meets_restricted(kubernetes_version):
    template = job()["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "master", **template["metadata"]},
           "spec": template["spec"]}
    assert schema_errors([pod], kubernetes_version) == []
    assert restricted_violations(template["spec"]) == []


class FakeCustomObjectsApi:
    """A FAKE kubernetes CustomObjectsApi: records the created object and replays scripted statuses."""

    def __init__(self, statuses, refuse=None):
        self.statuses, self.refuse, self.created = list(statuses), refuse, None

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        if self.refuse:
            raise RuntimeError(self.refuse)
        self.created = (group, version, namespace, plural, body)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"metadata": {"name": name}, "status": status}


def condition(kind, **extra):
    return {"conditions": [{"type": "Created", "status": "True"}, {"type": kind, "status": "True", **extra}]}


def test_run_job_creates_the_job_and_waits_until_it_succeeds():
    api = FakeCustomObjectsApi([{}, condition("Running"), condition("Succeeded")])
    status = run_job(api, job(), poll_seconds=0)
    assert api.created[:4] == ("kubeflow.org", "v1", "kubeflow", "pytorchjobs")
    assert status["conditions"][-1]["type"] == "Succeeded"


def test_a_failed_job_fails_with_the_operators_reason():
    api = FakeCustomObjectsApi([condition("Running"), condition("Failed", reason="PyTorchJobFailed",
                                                                message="Worker 1 exited with code 137")])
    with pytest.raises(TrainingJobError, match="failed: PyTorchJobFailed: Worker 1 exited with code 137"):
        run_job(api, job(), poll_seconds=0)


def test_a_refused_job_says_the_operator_may_be_missing():
    with pytest.raises(TrainingJobError, match="is the training operator installed"):
        run_job(FakeCustomObjectsApi([{}], refuse="404 page not found"), job(), poll_seconds=0)


def test_a_job_that_never_finishes_times_out():
    with pytest.raises(TrainingJobError, match="did not finish within 0 s"):
        run_job(FakeCustomObjectsApi([condition("Running")]), job(), poll_seconds=0, timeout_seconds=0)
