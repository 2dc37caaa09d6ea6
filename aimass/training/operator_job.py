"""The train stage across nodes: a PyTorchJob of Kubeflow's training operator (kubeflow.org/v1) whose pods run the
same worker `train.nproc` runs on one node (`python -m aimass.training.distributed JOB` under torchrun), one process
per GPU.

The operator starts one Master and `nodes - 1` Worker pods and gives each torchrun its rendezvous through PET_*
variables (nnodes, node rank, master address, `nprocPerNode`). The train step and the pods share a ReadWriteMany
volume: the step writes the job file and the inputs there, rank 0 writes the model there, and the step copies it out
once the job has succeeded. A failed rank fails the job (restart policy Never, no retries: a data-parallel job
cannot take back one restarted rank without elastic rendezvous), and the step fails with the operator's message.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from aimass.config import PROJECT_IMAGE, AimassConfig
from aimass.errors import AimassError
from aimass.lineage import Lineage
from aimass.polling import poll_until

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
SHARED_MOUNT = "/shared"
CONTAINER_NAME = "pytorch"  # the operator finds the training container by this name


class TrainingJobError(AimassError):
    """The PyTorchJob failed, could not be created, or did not finish in time."""


def pytorch_job(config: AimassConfig, name: str, namespace: str, image: str, job_file: str,
                service_account: str) -> dict:
    """The PyTorchJob manifest for `config.train.nodes` nodes with `config.train.nproc` GPUs each."""
    train, cluster = config.train, config.kubernetes
    label_key, label_value = cluster.gpu_node_selector.split("=", 1)
    pod = {
        "metadata": {"labels": {"app.kubernetes.io/part-of": "aimass", "app.kubernetes.io/component": "training"}},
        "spec": {
            "serviceAccountName": service_account,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": cluster.run_as_user,
                                "runAsGroup": cluster.run_as_user, "fsGroup": cluster.run_as_user,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "nodeSelector": {label_key: label_value},
            "tolerations": [{"key": cluster.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": CONTAINER_NAME,
                "image": image,
                "command": ["python", "-m", "torch.distributed.run", "--max-restarts=0", "-m",
                            "aimass.training.distributed", job_file],
                "env": [{"name": "HOME", "value": "/tmp"}],
                "resources": {
                    "requests": {"cpu": cluster.train_cpu_request, "memory": cluster.train_memory_request},
                    "limits": {cluster.gpu_accelerator: train.nproc}},
                "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                    "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "volumeMounts": [{"name": "shared", "mountPath": SHARED_MOUNT},
                                 {"name": "tmp", "mountPath": "/tmp"},
                                 {"name": "dshm", "mountPath": "/dev/shm"}],  # NCCL exchanges through it
            }],
            "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": train.shared_volume_claim}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}],
        },
    }
    replica = {"restartPolicy": "Never", "template": pod}
    replicas = {"Master": {"replicas": 1, **replica}}
    if train.nodes > 1:
        replicas["Worker"] = {"replicas": train.nodes - 1, **replica}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "aimass"}},
        "spec": {
            "nprocPerNode": str(train.nproc),
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None",
                          "activeDeadlineSeconds": train.job_timeout_seconds},
            "pytorchReplicaSpecs": replicas,
        },
    }


def run_job(custom_objects, manifest: dict, poll_seconds: float = 10.0, timeout_seconds: float = 86_400) -> dict:
    """Create the PyTorchJob with a kubernetes CustomObjectsApi and wait until it succeeds; returns its status.

    Raises:
        TrainingJobError: creation was refused, the job failed (the operator's reason and message), or it did not
            finish within `timeout_seconds`.
    """
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    try:
        custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except Exception as error:  # kubernetes.client.ApiException and transport errors
        raise TrainingJobError(f"the cluster refused PyTorchJob {namespace}/{name}: "
                               f"{getattr(error, 'body', None) or error} (is the training operator installed?)") from error

    def finished() -> dict | None:
        job = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        conditions = {c["type"]: c for c in job.get("status", {}).get("conditions", []) if c.get("status") == "True"}
        if "Failed" in conditions:
            failed = conditions["Failed"]
            raise TrainingJobError(f"PyTorchJob {namespace}/{name} failed: {failed.get('reason', '')}: "
                                   f"{failed.get('message', '')}")
        return job["status"] if "Succeeded" in conditions else None

    return poll_until(finished, timeout_seconds, poll_seconds, lambda: TrainingJobError(
        f"PyTorchJob {namespace}/{name} did not finish within {timeout_seconds:.0f} s"))


def train_on_nodes(config: AimassConfig, splits_dir: Path, model_dir: Path, lineage: Lineage,
                   training_set_dir: Path | None, job_name: str, shared_root: Path = Path(SHARED_MOUNT)):
    """From inside the cluster (the pipeline's train step, with the shared volume mounted at `shared_root`): stage
    the inputs on the shared volume, run the PyTorchJob, and copy rank 0's model into `model_dir`."""
    from kubernetes import client
    from kubernetes import config as kube_config

    from aimass.training.distributed import read_result, write_job

    work = shared_root / job_name
    shutil.copytree(splits_dir, work / "splits", dirs_exist_ok=True)
    staged_training_set = None
    if training_set_dir is not None:
        staged_training_set = work / "training_set"
        shutil.copytree(training_set_dir, staged_training_set, dirs_exist_ok=True)
    write_job(work / "job.json", config, work / "splits", work / "model", lineage, staged_training_set,
              work / "result.json")
    kube_config.load_incluster_config()
    namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    manifest = pytorch_job(config, job_name, namespace, PROJECT_IMAGE, str(work / "job.json"),
                           config.kubeflow.service_account)
    run_job(client.CustomObjectsApi(), manifest, timeout_seconds=config.train.job_timeout_seconds)
    shutil.copytree(work / "model", model_dir, dirs_exist_ok=True)
    result = read_result(work / "result.json")
    shutil.rmtree(work, ignore_errors=True)
    return result
