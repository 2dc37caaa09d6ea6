"""The aimass training DAG:
ingest -> validate_data -> augment -> train -> compress -> evaluate -> (gate) bless -> deploy | reject.

This file only wires stages. Each stage's work lives in `components/<stage>.py`.

Parameters of the compiled pipeline:
    config_json: the resolved AimassConfig as JSON; the compiled default is the `full` profile.
    git_commit: the commit the run's code came from, recorded in every model's lineage.
    data_version: the DVC md5 data.dvc pins at that commit; ingest pulls it from data.remote_url. Empty (local
        runs): the version data.dvc in data.repo_dir pins.
"""
from kfp import dsl, kubernetes

from aimass.components.augment import augment_component
from aimass.components.compress import compress_component
from aimass.components.deploy import deploy_component
from aimass.components.evaluate import evaluate_component
from aimass.components.hpo import hpo_plan_component, hpo_record_component, hpo_select_component, hpo_trial_component
from aimass.components.ingest import ingest_component
from aimass.components.promote import bless_model_component, reject_model_component
from aimass.components.train import train_component
from aimass.components.validate_data import validate_data_component
from aimass.config import AimassConfig, KubernetesConfig
from aimass.object_store import ACCESS_KEY_VARIABLE, SECRET_KEY_VARIABLE
from aimass.serving import TOKEN_ENV
from aimass.training.hpo import search_rounds
from aimass.training.operator_job import SHARED_MOUNT

PIPELINE_NAME = "aimass-training"


def _request_resources(task: dsl.PipelineTask, cpu: str, memory: str) -> dsl.PipelineTask:
    return task.set_cpu_request(cpu).set_memory_request(memory).set_caching_options(True)


def _schedule_on_gpu(task: dsl.PipelineTask, cluster: KubernetesConfig) -> None:
    """One GPU, a GPU node, and the toleration GPU nodes' taint asks for."""
    task.set_accelerator_type(cluster.gpu_accelerator).set_accelerator_limit(1)
    label_key, label_value = cluster.gpu_node_selector.split("=", 1)
    kubernetes.add_node_selector(task, label_key=label_key, label_value=label_value)
    kubernetes.add_toleration(task, key=cluster.gpu_toleration_key, operator="Exists", effect="NoSchedule")


def _run_unprivileged(task: dsl.PipelineTask, cluster: KubernetesConfig) -> None:
    """The image's own non-root user (KFP adds no privilege escalation, no capabilities, RuntimeDefault seccomp)."""
    kubernetes.set_security_context(task, run_as_user=cluster.run_as_user, run_as_group=cluster.run_as_user,
                                    run_as_non_root=True)


def _read_store_credentials(task: dsl.PipelineTask, cluster: KubernetesConfig) -> None:
    """MinIO credentials from the Secret by name (the DVC remote and the registry): the YAML never holds a value."""
    kubernetes.use_secret_as_env(task, secret_name=cluster.storage_credentials_secret, secret_key_to_env={
        "accesskey": ACCESS_KEY_VARIABLE, "secretkey": SECRET_KEY_VARIABLE})


def _read_serving_token(task: dsl.PipelineTask, cluster: KubernetesConfig) -> None:
    if cluster.serving_token_secret:
        kubernetes.use_secret_as_env(task, secret_name=cluster.serving_token_secret,
                                     secret_key_to_env={"token": TOKEN_ENV})


def _hyperparameter_search(config: AimassConfig, config_json, splits, training_set):
    """Rounds of trials, each round a ParallelFor over the strategy's asks, gathered with dsl.Collected; returns the
    chosen parameters (JSON) for the train step."""
    cluster, history = config.kubernetes, "[]"
    for round_number in range(1, search_rounds(config.hpo) + 1):
        plan = hpo_plan_component(config_json=config_json, history_json=history)
        plan.set_display_name(f"hpo plan {round_number}")
        with dsl.ParallelFor(plan.output, parallelism=config.hpo.parallelism, name=f"hpo-round-{round_number}") \
                as trial:
            run = hpo_trial_component(config_json=config_json, splits=splits, training_set=training_set,
                                      trial_json=trial, history_json=history).set_display_name("hpo trial")
            _request_resources(run, cluster.train_cpu_request, cluster.train_memory_request)
            _schedule_on_gpu(run, cluster)  # each trial its own GPU
            _run_unprivileged(run, cluster)
        record = hpo_record_component(history_json=history, results=dsl.Collected(run.output))
        record.set_display_name(f"hpo results {round_number}")
        for task in (plan, record):
            _request_resources(task, cluster.cpu_request, cluster.memory_request)
            _run_unprivileged(task, cluster)
        history = record.output
    select = hpo_select_component(config_json=config_json, history_json=history).set_display_name("hpo select")
    _request_resources(select, cluster.cpu_request, cluster.memory_request)
    _run_unprivileged(select, cluster)
    return select.outputs["Output"]


def build_training_pipeline(default_config: AimassConfig):
    """The pipeline with `default_config` as its default parameters and its Kubernetes settings compiled in."""
    cluster = default_config.kubernetes

    @dsl.pipeline(name=PIPELINE_NAME, description="Validate a DVC-pinned image data set version, train and compress "
                                                  "a classifier, gate it, deploy it behind the model server.")
    def training_pipeline(config_json: str = default_config.to_json(), git_commit: str = "unknown",
                          data_version: str = "", trigger: str = "manual", trigger_reason: str = ""):
        # ---- Data stage ----
        ingest = ingest_component(config_json=config_json, data_version=data_version).set_display_name("ingest")
        validate = validate_data_component(config_json=config_json, splits=ingest.outputs["splits"])
        validate.set_display_name("validate data")

        # ---- Augmentation stage ----
        augment = augment_component(config_json=config_json, splits=ingest.outputs["splits"]).after(validate)
        augment.set_display_name("augment")

        # ---- Hyper-parameter search (its shape comes from the compiled configuration's hpo.*) ----
        hyperparameters = "{}"
        if default_config.hpo.enabled:
            hyperparameters = _hyperparameter_search(default_config, config_json, ingest.outputs["splits"],
                                                     augment.outputs["training_set"])

        # ---- Training stage ----
        train = train_component(
            config_json=config_json, splits=ingest.outputs["splits"],
            training_set=augment.outputs["training_set"], git_commit=git_commit,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            hyperparameters_json=hyperparameters, trigger=trigger, trigger_reason=trigger_reason,
        ).set_display_name("train")
        if default_config.train.nodes > 1:
            # The step only starts the PyTorchJob whose pods hold the GPUs, and shares a volume with them.
            kubernetes.mount_pvc(train, pvc_name=default_config.train.shared_volume_claim, mount_path=SHARED_MOUNT)
        else:
            _schedule_on_gpu(train, cluster)

        # ---- Compression stage ----
        compress = compress_component(config_json=config_json, model=train.outputs["model"],
                                      splits=ingest.outputs["splits"]).set_display_name("compress")
        _schedule_on_gpu(compress, cluster)

        # ---- Evaluation stage ----
        evaluate = evaluate_component(config_json=config_json, model=train.outputs["model"],
                                      candidates=compress.outputs["candidates"], splits=ingest.outputs["splits"])
        evaluate.set_display_name("evaluate")

        # ---- Promotion stage ----
        with dsl.If(evaluate.outputs["passed"] == True, name="gate-passed"):  # noqa: E712 (KFP condition syntax)
            bless = bless_model_component(teacher=train.outputs["model"], candidates=compress.outputs["candidates"],
                                          chosen=evaluate.outputs["chosen"], reasons=evaluate.outputs["reasons"])
            bless.set_display_name("bless model")

            # ---- Deployment stage ----
            deploy = deploy_component(config_json=config_json, blessed=bless.outputs["blessed"],
                                      splits=ingest.outputs["splits"], gate_metrics=evaluate.outputs["metrics"],
                                      run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                      run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER).set_display_name("deploy")
            deploy.set_caching_options(False)  # a release must happen on every run that reaches it
        with dsl.Else(name="gate-rejected"):
            reject = reject_model_component(reasons=evaluate.outputs["reasons"]).set_display_name("reject model")

        for task in (ingest, validate, augment, evaluate, bless, reject):
            _request_resources(task, cluster.cpu_request, cluster.memory_request)
        deploy.set_cpu_request(cluster.cpu_request).set_memory_request(cluster.memory_request)
        for task in (train, compress):
            _request_resources(task, cluster.train_cpu_request, cluster.train_memory_request)
        if default_config.data.remote_url:
            _read_store_credentials(ingest, cluster)
        if default_config.registry.backend == "s3":
            # validate reads the production model's data profile (drift), evaluate scores the production model
            for task in (validate, evaluate, deploy):
                _read_store_credentials(task, cluster)
        _read_serving_token(deploy, cluster)
        for task in (ingest, validate, augment, train, compress, evaluate, bless, deploy, reject):
            _run_unprivileged(task, cluster)

    return training_pipeline
