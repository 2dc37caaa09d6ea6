"""The one typed configuration of aimass: defaults, profiles, `--set key=value` overrides, validation.

Loaded and validated once (by the CLI or a test), then handed to the pipeline as JSON; every stage parses that JSON
back into the same model, so a stage never reads environment strings of its own.

Profiles:
    tiny   at most 3,000 training images and 42 optimisation steps; what the tests run (about a minute on 2 CPUs).
    quick  the whole data set, 1,260 optimisation steps of a lean CNN on CPU; the `make run` default.
    full   the whole data set, 3,150 steps with a larger batch and a search first; meant for a GPU.
Training is budgeted in optimisation steps, not epochs, so a data set of 1,500 images gets as many updates as one
of 1,000,000 (many short epochs against a partial one).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aimass.errors import CanaryError, ConfigError

# The image every component (and later the model server) runs in. Decorators need it at import time, so it is a
# constant rather than a --set key; the Dockerfile and chart take their tag from the same place.
PROJECT_IMAGE = "ghcr.io/aimass/aimass:0.1.0"


class _Section(BaseModel):
    # Unknown keys are errors, not silently ignored typos.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    repo_dir: str = Field(".", description="DVC repository holding data.dvc; resolved to an absolute path on load")
    dvc_file: str = Field("data.dvc", description="the .dvc file, relative to repo_dir, that pins the data version")
    dataset_dir: str = Field("data", description="the imported data set (the folder data.dvc tracks), relative to "
                                                 "repo_dir")
    remote_url: str | None = Field(None, pattern=r"^s3://[^/]+(/.*)?$",
                                   description="DVC remote holding every data version, s3://BUCKET[/PATH] "
                                               "(MinIO on the cluster); credentials as for the registry")
    remote_endpoint: str | None = Field(None, pattern=r"^https?://[^/\s]+$",
                                        description="S3 API of the remote, e.g. http://minio.minio.svc:9000; "
                                                    "none = AWS S3")
    image_size: Literal["auto"] | Annotated[int, Field(ge=4, le=1024)] | tuple[int, int] = Field(
        "auto", description="model input, a side or [height, width]; auto: the images' common size, else their "
                            "median shorter side up to max_auto_image_size")
    channels: Literal["auto", 1, 3] = Field("auto", description="1 (grey) or 3 (RGB); auto: 1 if every image is grey")
    resize: Literal["squash", "center-crop", "pad"] = Field("squash", description="how images of another shape "
                                                                                  "reach image_size")
    max_auto_image_size: int = Field(64, ge=4, le=1024, description="the largest side image_size=auto picks")
    min_images_per_class: int = Field(10, ge=1, description="import refuses a class with fewer images")
    cache_dir: str = Field(".aimass-cache/decoded", description="decoded images by data version and preprocessing, "
                                                                "relative to repo_dir")


class SplitConfig(_Section):
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of the training images held out "
                                                                      "when the source has no validation split")
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="share of the training images held out when the "
                                                                 "source has no test split")
    train_limit: int | None = Field(None, gt=0, description="use at most this many training images (stratified)")
    test_limit: int | None = Field(None, gt=0, description="use at most this many test images (stratified)")
    seed: int = Field(0, ge=0)


class ValidationConfig(_Section):
    """Data validation, derived from the data set's own profile; distances as TensorFlow Data Validation measures
    skew and drift (see aimass/data/profile.py)."""

    class_share_tolerance: float = Field(0.02, gt=0, lt=1, description="a class's share of validation or test may "
                                                                       "differ this much from its share of train "
                                                                       "(plus the sampling allowance)")
    max_js_distance: float = Field(0.1, gt=0, le=1, description="numeric statistics (brightness, contrast, size): "
                                                               "Jensen-Shannon distance between splits or versions")
    max_linf_distance: float = Field(0.05, gt=0, le=1, description="categorical statistics (classes, channels): "
                                                                  "L-infinity distance between splits or versions")
    sampling_allowance: float = Field(2.0, ge=0, description="added to both thresholds: this many times the "
                                                             "distance two samples of one distribution show by "
                                                             "chance at the splits' sizes")
    drift_against_production: bool = Field(True, description="compare the new version's training data with the "
                                                             "profile stored with the production model")
    min_contrast: float = Field(0.01, ge=0, le=1, description="per-image pixel std (0..1): rejects blank images")
    max_exact_duplicates: int = Field(0, ge=0, description="validation/test images identical to a train image")
    max_near_duplicate_share: float = Field(0.01, ge=0, le=1, description="share of validation/test images that "
                                                                          "are near duplicates of a train image")
    near_duplicate_radius: int = Field(3, ge=0, le=12, description="a near duplicate's dHash lies within this many "
                                                                   "bits of the train image's (64-bit hash; a JPEG "
                                                                   "re-encoding at another size moves it by 0-4)")
    near_duplicate_max_pixel_difference: float = Field(
        2.0, ge=0, le=255, description="and its preprocessed pixels differ from the train image's by at most this "
                                       "on average (0..255, each image's mean brightness taken away): re-encodings "
                                       "stay under 1.3, different images of one silhouette do not "
                                       "(docs/PERFORMANCE.md)")
    max_quarantined_share: float = Field(0.05, ge=0, le=1, description="share of files --skip-bad-images may leave "
                                                                       "out")


# A transform's probability per image; 0 disables it.
Probability = Annotated[float, Field(ge=0, le=1)]


class FlipSpec(_Section):
    p: Probability = 0.5


class RotationSpec(_Section):
    p: Probability = 0.3
    degrees: float = Field(10.0, gt=0, le=45, description="rotate by up to +/- this angle")


class ScaleSpec(_Section):
    p: Probability = 0.3
    min_factor: float = Field(0.9, ge=0.5, le=1)
    max_factor: float = Field(1.1, ge=1, le=1.5)


class TranslateSpec(_Section):
    p: Probability = 0.3
    max_fraction: float = Field(0.1, gt=0, le=0.3, description="shift by up to this share of the image size")


class NoiseSpec(_Section):
    p: Probability = 0.2
    std: float = Field(0.03, gt=0, le=0.5, description="Gaussian noise std on the 0..1 pixel scale")


class ErasingSpec(_Section):
    p: Probability = 0.25
    min_area: float = Field(0.02, gt=0, le=0.5, description="erased rectangle, as a share of the image area")
    max_area: float = Field(0.12, gt=0, le=0.5)

    @model_validator(mode="after")
    def _areas_are_ordered(self) -> ErasingSpec:
        if self.min_area > self.max_area:
            raise ValueError("min_area must not exceed max_area")
        return self


class AugmentPolicy(_Section):
    """The transforms, applied in this order; unknown names are rejected, p=0 disables one."""

    horizontal_flip: FlipSpec = FlipSpec()
    rotation: RotationSpec = RotationSpec()
    scale: ScaleSpec = ScaleSpec()
    translate: TranslateSpec = TranslateSpec()
    gaussian_noise: NoiseSpec = NoiseSpec()
    random_erasing: ErasingSpec = ErasingSpec()


class AugmentConfig(_Section):
    policy: AugmentPolicy = AugmentPolicy()
    expansion: int = Field(0, ge=0, le=10, description="augmented copies of the train split the augment stage "
                                                       "adds to it; 0 = the policy only, no extra images")
    on_the_fly: bool = Field(True, description="train applies the policy to every batch")
    seed: int = Field(0, ge=0)
    batch_size: int = Field(4096, ge=1, description="images per augmentation call in the augment stage")


BUILT_IN_CNN = "aimass-cnn"
HF_PREFIX = "hf:"
TIMM_PREFIX = "timm:"
TORCHVISION_PREFIX = "torchvision:"
# What model.architecture and compress.student accept; each library's names are checked against its own registry.
ARCHITECTURE_PATTERN = r"^(aimass-cnn|hf:\S+|timm:[\w.]+|torchvision:\w+)$"


def _check_library_model_name(architecture: str) -> str:
    """A timm or torchvision name must be one its library builds: a typo fails when the configuration loads, with the
    nearest names, not an hour later in the train step. The registries are read in memory (nothing downloads)."""
    import difflib

    if architecture.startswith(TIMM_PREFIX):
        import timm

        name = architecture.removeprefix(TIMM_PREFIX)
        known, candidates = timm.is_model(name), timm.list_models()
    elif architecture.startswith(TORCHVISION_PREFIX):
        import torchvision

        name = architecture.removeprefix(TORCHVISION_PREFIX)
        candidates = torchvision.models.list_models(module=torchvision.models)  # image classifiers only
        known = name in candidates
    else:
        return architecture
    if not known:
        library = architecture.split(":")[0]
        close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(library + ':' + match for match in close)}?" if close else ""
        raise ValueError(f"{architecture}: {library} has no image classifier named {name!r}{hint}")
    return architecture


class ModelConfig(_Section):
    architecture: str = Field(
        BUILT_IN_CNN, pattern=ARCHITECTURE_PATTERN,
        description="aimass-cnn (the built-in CNN, sized below); hf:CHECKPOINT, a Hugging Face image-classification "
                    "checkpoint: a folder written by save_pretrained (config.json, model.safetensors, "
                    "preprocessor_config.json; config.json alone starts from random weights), or a Hub id where the "
                    "Hub is reachable; timm:NAME, a timm model (resnet18, efficientnet_b0, convnext_atto, ...); or "
                    "torchvision:NAME, a torchvision classification builder (resnet18, mobilenet_v3_small, ...). "
                    "The head is replaced for the data set's classes")
    checkpoint: str | None = Field(
        None, description="timm: and torchvision: only: local pretrained weights, never downloaded. timm: a folder "
                          "as timm's save_pretrained/push_to_hub writes it (config.json with pretrained_cfg, "
                          "model.safetensors); torchvision: a .safetensors state dict of the builder's model. Its "
                          "preprocessing becomes the run's. None: random weights, the data decides the preprocessing")
    channels: tuple[int, int, int] = Field((32, 64, 128), description="aimass-cnn: output channels of the three "
                                                                      "conv blocks")
    hidden_units: int = Field(256, ge=8, description="aimass-cnn: width of the hidden layer of the head")
    dropout: float = Field(0.0, ge=0, lt=1, description="aimass-cnn: dropout before the output layer")

    _architecture_is_known = field_validator("architecture")(_check_library_model_name)

    @model_validator(mode="after")
    def _local_checkpoint_is_absolute(self) -> ModelConfig:
        """A checkpoint folder given relative to the working directory still names it from a pipeline step that
        runs elsewhere."""
        if self.architecture.startswith(HF_PREFIX):
            folder = Path(self.architecture[len(HF_PREFIX):]).expanduser()
            if folder.is_dir() and not folder.is_absolute():
                object.__setattr__(self, "architecture", HF_PREFIX + str(folder.resolve()))
        if self.checkpoint is not None:
            if not self.architecture.startswith((TIMM_PREFIX, TORCHVISION_PREFIX)):
                raise ValueError(f"model.checkpoint applies to timm: and torchvision: architectures, not "
                                 f"{self.architecture} (a Hugging Face checkpoint is named by hf:FOLDER itself)")
            path = Path(self.checkpoint).expanduser()
            if path.exists() and not path.is_absolute():
                object.__setattr__(self, "checkpoint", str(path.resolve()))
        return self

    @property
    def is_built_in(self) -> bool:
        return self.architecture == BUILT_IN_CNN

    @property
    def library(self) -> str:
        """Who builds the network: aimass, hf, timm or torchvision."""
        return "aimass" if self.is_built_in else self.architecture.split(":", 1)[0]

    @property
    def library_name(self) -> str:
        """The name the library knows the network by (a Hugging Face checkpoint's folder or Hub id)."""
        return self.architecture.split(":", 1)[1] if ":" in self.architecture else self.architecture


class TrainConfig(_Section):
    steps: int | None = Field(None, ge=1, description="budget in optimisation steps, whatever the data set's size "
                                                      "(the last epoch may be partial); none: `epochs` epochs")
    epochs: int = Field(3, ge=1, le=10_000, description="without `steps`: epochs to run; early stopping may end "
                                                        "sooner")
    batch_size: int = Field(128, ge=1, le=65_536)
    learning_rate: float = Field(0.05, gt=0, le=10, description="peak of the one-cycle schedule, SGD+Nesterov")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, lt=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    warmup_fraction: float = Field(0.2, gt=0, lt=1, description="share of steps spent warming up the LR")
    early_stopping: bool = Field(True, description="stop when validation accuracy has not improved for "
                                                   "early_stopping_steps; the best validation's weights are kept "
                                                   "either way")
    early_stopping_steps: int | None = Field(
        None, ge=1, description="optimisation steps without a validation gain before stopping; none: a quarter of "
                                "the step budget. Counted in steps, so a data set of a few batches (an epoch of one "
                                "step) trains as long as a large one; training never stops inside the warm-up")
    seed: int = Field(0, ge=0)
    backbone_learning_rate_factor: float = Field(
        1.0, ge=0, le=10, description="the backbone's peak learning rate as a share of learning_rate (the head "
                                      "always gets learning_rate); ~0.1 suits a pretrained checkpoint")
    frozen_backbone_epochs: int = Field(0, ge=0, description="first epochs that train the head alone, the backbone "
                                                             "frozen (a new head settles before it moves the "
                                                             "pretrained weights)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int = Field(0, ge=0, description="0 = one per CPU this process may use")
    compile: bool = Field(False, description="torch.compile the model (pays off on GPUs, for long runs)")
    fast_path: Literal["auto"] | bool = Field(
        "auto", description="bfloat16 autocast (weights stay float32) and channels-last layout: true, false, or auto: "
                            "on GPUs and on CPUs with native bfloat16 (AVX-512 BF16, AMX), where it trains ~2.8x "
                            "faster at the same accuracy (bench/cpu_levers.py); off on other CPUs, which would "
                            "emulate bfloat16")
    nproc: int = Field(1, ge=1, le=64, description="processes training one model in sync (torchrun + "
                                                   "DistributedDataParallel; NCCL on GPUs, one GPU each; gloo on CPU)")
    collective_timeout_seconds: float = Field(
        300.0, gt=0, description="with nproc > 1: a rank that stops answering fails the step after this long")
    nodes: int = Field(1, ge=1, le=64, description="nodes training one model (on a cluster: a PyTorchJob of the "
                                                   "Kubeflow training operator, nproc processes per node)")
    shared_volume_claim: str = Field("aimass-training-shared", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                                     description="ReadWriteMany claim a multi-node job's pods and the train step "
                                                 "share for inputs and the model")
    job_timeout_seconds: int = Field(24 * 3600, ge=60, description="how long the train step waits for a PyTorchJob")


CompressionMethod = Literal["prune_unstructured", "prune_channels", "quantize_int8", "quantize_dynamic_int8", "distill",
                            "distill_int8"]


class CompressConfig(_Section):
    methods: tuple[CompressionMethod, ...] = Field(
        ("prune_unstructured", "prune_channels", "quantize_int8", "distill", "distill_int8"),
        description="candidates to build; each is measured beside the teacher")
    unstructured_sparsity: float = Field(0.8, ge=0, lt=1, description="share of conv/linear weights set to zero")
    channel_sparsity: float = Field(0.5, ge=0, lt=1, description="share of channels and hidden units removed")
    finetune_epochs: int = Field(1, ge=0, description="epochs of fine-tuning after pruning")
    finetune_learning_rate: float = Field(0.01, gt=0, le=10)
    calibration_images: int = Field(1024, ge=16, description="training images that calibrate int8 activations")
    int8_runtime: Literal["inductor", "eager"] = Field(
        "inductor", description="how int8 candidates are timed: torch.compile (real int8 kernels) or eager")
    student: str = Field(BUILT_IN_CNN, pattern=ARCHITECTURE_PATTERN,
                         description="the distillation student, from random weights: aimass-cnn (sized by "
                                     "student_channels and student_hidden_units), hf:FOLDER holding a Hugging Face "
                                     "config.json, or a smaller timm: or torchvision: model than the teacher")
    _student_is_known = field_validator("student")(_check_library_model_name)
    student_channels: tuple[int, int, int] = (16, 32, 64)
    student_hidden_units: int = Field(128, ge=8)
    distill_epochs: int = Field(3, ge=1)
    distill_temperature: float = Field(4.0, gt=0, le=100)
    distill_weight: float = Field(0.7, ge=0, le=1, description="share of the soft-target loss; the rest is CE")
    time_every_candidate: bool = Field(False, description="time latency and throughput even of candidates the "
                                                          "size gate rules out (benchmarks do)")
    latency_runs: int = Field(200, ge=10, description="batch-1 calls timed for p50/p99")
    throughput_runs: int = Field(20, ge=3, description="batch-64 calls timed for throughput")


class GateConfig(_Section):
    """The gate is relative by default: the model must beat always answering the most common class, and must not
    be worse than the production model on the same test split. Absolute minimums apply when set here, or when the
    data card recommends them (the demo data set does)."""

    min_accuracy: float | None = Field(None, ge=0, le=1, description="test accuracy below this rejects the model")
    min_macro_f1: float | None = Field(None, ge=0, le=1)
    min_error_reduction: float = Field(0.5, ge=0, le=1, description="share of the majority-class baseline's test "
                                                                   "errors the model must avoid (0.5: half)")
    max_regression: float = Field(0.01, ge=0, le=1, description="test accuracy the model may lose against the "
                                                              "production model on the same test split")
    max_accuracy_drop: float = Field(0.005, ge=0, le=1, description="a candidate may lose at most this much "
                                                                     "accuracy against the teacher (0.005 = 0.5 pt)")
    min_size_ratio: float = Field(4.0, ge=1, description="a candidate must be this many times smaller on disk")
    max_latency_ratio: float = Field(1.0, gt=0, description="candidate batch-1 p50 latency / teacher's, at most")
    min_corruption_accuracy: float | None = Field(
        None, ge=0, le=1, description="test accuracy under common corruptions (the mean over evaluate.corruptions "
                                      "and evaluate.severities) below this rejects the model; none: reported only")
    max_calibration_error: float | None = Field(
        None, ge=0, le=1, description="expected calibration error on the test split above this rejects the model; "
                                      "none: reported only")


Corruption = Literal["gaussian_noise", "gaussian_blur", "brightness", "contrast", "jpeg"]


class EvaluateConfig(_Section):
    """Beyond clean accuracy (aimass/models/robustness.py): accuracy under common corruptions and calibration, for
    the chosen model on the test split and for each compression candidate on the validation split."""

    corruptions: tuple[Corruption, ...] = Field(
        ("gaussian_noise", "gaussian_blur", "brightness", "contrast", "jpeg"),
        description="corruptions applied to the images, each at every severity; () measures none")
    severities: tuple[Annotated[int, Field(ge=1, le=5)], ...] = Field(
        (1, 3, 5), min_length=1, description="severities 1 (mildest) to 5 (harshest), after ImageNet-C")
    robustness_images: int = Field(1_000, ge=10, description="images each corruption is measured on, spread evenly "
                                                             "over the split")
    calibration_bins: int = Field(15, ge=2, le=100, description="equal-width confidence bins of the expected "
                                                                "calibration error")


class SearchDimension(_Section):
    """One hyper-parameter's range: a list of `values` (grid, or categories), or `low`..`high` (optionally on a log
    scale, optionally integers)."""

    values: tuple[float | int | str | bool, ...] | None = Field(None, min_length=1)
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _one_kind_of_range(self) -> SearchDimension:
        ranged = self.low is not None or self.high is not None
        if (self.values is None) == (not ranged):
            raise ValueError("give either `values` or `low` and `high`")
        if ranged and (self.low is None or self.high is None or self.low >= self.high):
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and ranged and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


# What a search may tune: the model, its training and the augmentation policy, never data, gate or deployment.
_SEARCHABLE_PREFIXES = ("train.", "model.", "augment.")
_NOT_SEARCHABLE = {"train.device", "train.nproc", "train.nodes", "train.epochs", "train.steps", "train.seed",
                   "train.shared_volume_claim", "train.job_timeout_seconds", "train.collective_timeout_seconds"}


def _is_searchable_leaf(key: str) -> bool:
    """Whether `key` names a setting (not a section) under train., model. or augment."""
    section_name, _, rest = key.partition(".")
    node: type[BaseModel] | None = {"train": TrainConfig, "model": ModelConfig, "augment": AugmentConfig}.get(
        section_name)
    parts = rest.split(".") if rest else []
    for index, part in enumerate(parts):
        if node is None or part not in node.model_fields:
            return False
        annotation = node.model_fields[part].annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if index == len(parts) - 1:
            return not is_section
        node = annotation if is_section else None
    return False


class HpoConfig(_Section):
    """The hyper-parameter search before the final training: trials fan out as a KFP ParallelFor, each a short
    training run scored by validation accuracy; the best parameters feed the train step."""

    enabled: bool = False
    strategy: Literal["grid", "random", "tpe"] = Field("tpe", description="tpe: Optuna's TPE sampler, asked in "
                                                                          "batches of `parallelism`")
    space: dict[str, SearchDimension] = Field(
        default_factory=lambda: {"train.learning_rate": SearchDimension(low=0.01, high=0.2, log=True),
                                 "train.weight_decay": SearchDimension(values=(1e-4, 5e-4, 1e-3))},
        description="dotted configuration key -> range")
    trials: int = Field(8, ge=1, le=256, description="trials for random and tpe (grid: every combination)")
    parallelism: int = Field(4, ge=1, le=64, description="trials running at once; one round of the search")
    trial_epochs: int = Field(2, ge=1, description="epochs of each trial's short training")
    pruning: bool = Field(True, description="stop a trial whose validation accuracy falls below the median of "
                                            "earlier rounds' trials at the same epoch")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _space_is_searchable(self) -> HpoConfig:
        if not self.space:
            raise ValueError("hpo.space is empty: give at least one key to search")
        for key, dimension in self.space.items():
            if not _is_searchable_leaf(key) or key in _NOT_SEARCHABLE:
                raise ValueError(f"hpo.space key {key!r} cannot be searched: use train.*, model.* or augment.* keys "
                                 f"(except {', '.join(sorted(_NOT_SEARCHABLE))})")
            if self.strategy == "grid" and dimension.values is None:
                raise ValueError(f"hpo.strategy=grid needs `values` for every key; {key!r} has a range")
        return self


class RegistryConfig(_Section):
    """Where model versions live. S3 credentials come from $AIMASS_S3_ACCESS_KEY / $AIMASS_S3_SECRET_KEY only."""

    backend: Literal["local", "s3"] = "local"
    local_dir: str = Field("model-registry", description="local backend folder, relative to data.repo_dir")
    s3_endpoint: str = Field("minio.minio.svc.cluster.local:9000", description="host:port of the S3 API")
    s3_bucket: str = "aimass-models"
    s3_secure: bool = Field(True, description="HTTPS to the endpoint")
    model_name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                                   description="registered model; none: the imported data set's name")


def check_steps(steps: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """A canary's weights in percent, strictly increasing, each in 1..100, the last 100 (the candidate takes all
    traffic before it is promoted). Shared by `release.canary.steps` and `aimass release canary --steps`."""
    steps = tuple(steps)
    if not steps:
        raise CanaryError("no steps given: name the candidate's traffic weights, e.g. --steps 10,50,100")
    outside = [step for step in steps if not 1 <= step <= 100]
    if outside:
        raise CanaryError(f"step {outside[0]} is outside 1..100: a step is the candidate's share of traffic in "
                          "percent, e.g. --steps 10,50,100")
    if any(later <= earlier for earlier, later in zip(steps, steps[1:])):
        raise CanaryError(f"steps {','.join(map(str, steps))} are not increasing: each step gives the candidate "
                          "more traffic, e.g. --steps 10,50,100")
    if steps[-1] != 100:
        raise CanaryError(f"the last step is {steps[-1]}, not 100: the candidate serves all traffic in the last "
                          "step before it is promoted (add 100)")
    return steps


class CanaryConfig(_Section):
    """How `aimass release canary` judges a candidate against production on the same window of traffic (docs/
    OPERATIONS.md). Every check compares the two versions over one step's traffic; one failed check aborts."""

    steps: tuple[int, ...] = Field((10, 50, 100), min_length=1, description="traffic weights (percent) of the "
                                                                             "candidate, increasing, ending at 100")
    shadow_first: bool = Field(True, description="a first step at weight 0: the candidate answers every request in "
                                                 "the background, only production's answer is returned")
    step_seconds: float = Field(60.0, gt=0, le=86_400, description="a step's traffic window, at least")
    min_requests: int = Field(100, ge=1, description="requests the candidate must answer (routed or shadow) before "
                                                     "a step is judged")
    traffic_timeout_seconds: float = Field(900.0, gt=0, description="a step that has not seen min_requests by then "
                                                                    "aborts the canary (no traffic, no verdict)")
    max_error_rate_increase: float = Field(0.01, ge=0, le=1, description="candidate's 5xx share may exceed "
                                                                         "production's by this much")
    max_latency_ratio: float = Field(1.5, gt=0, description="candidate p99 / production p99 of routed requests, "
                                                            "at most (judged when both answered min_requests)")
    min_agreement: float = Field(0.9, ge=0, le=1, description="share of images both models answer alike, without "
                                                              "enough labels to say which one is right")
    min_labelled: int = Field(50, ge=1, description="labelled images each version needs in the window before live "
                                                    "accuracy decides instead of agreement")
    max_accuracy_drop: float = Field(0.02, ge=0, le=1, description="candidate's live accuracy may trail "
                                                                   "production's by this much on the same images")
    mirror: bool = Field(True, description="at weighted steps too, the other model answers each request in the "
                                           "background: agreement and paired accuracy on all traffic")
    max_shadow_queue: int = Field(256, ge=1, description="requests waiting for the background model; more are "
                                                         "not mirrored, and counted")
    metrics_url: str | None = Field(None, pattern=r"^https?://\S+$", description="where the controller reads "
                                    "the servers' counters: a Prometheus (/api/v1/query) with the helm backend; "
                                    "none: the server's own /metrics at serving.url or serving.host:port")

    @field_validator("steps")
    @classmethod
    def _steps_increase_to_100(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        return check_steps(steps)


class DeployConfig(_Section):
    strategy: Literal["direct", "canary", "none"] = Field(
        "direct", description="how the pipeline's deploy stage releases a blessed model: direct (a new revision "
                              "at once), canary (release.canary.* steps, promoted or rolled back by their checks), "
                              "none (register only)")


class ReleaseConfig(_Section):
    backend: Literal["embedded", "helm"] = Field(
        "embedded", description="embedded: a local history file; helm: revisions of the serving chart on a cluster")
    name: str = Field("aimass-serving", pattern=r"^[a-z0-9][a-z0-9-]{0,52}$", description="release name")
    state_dir: str = Field("releases", description="embedded backend's history folder, relative to data.repo_dir")
    # The Helm backend (release.backend=helm); kubeconfig comes from $KUBECONFIG or the pod's service account.
    namespace: str = Field("aimass-serving", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
                           description="namespace of the serving release (see manifests/)")
    chart: str = Field("helm/aimass-serving", description="chart folder, relative to data.repo_dir or to the "
                                                          "installed aimass project")
    values_files: tuple[str, ...] = Field((), description="site values (-f) applied before the model's, e.g. the "
                                                         "auth Secret's name or resources")
    helm_binary: str = Field("helm", description="helm 3 or 4 on the PATH, or a path to it")
    kube_context: str | None = Field(None, description="kubeconfig context; none = the current one")
    timeout_seconds: int = Field(600, ge=10, description="helm --timeout: the new pods must be ready by then, else "
                                                         "helm rolls back and the deploy fails")
    wait_for_ready: bool = Field(True, description="helm waits for the new pods to be ready and rolls a revision "
                                                   "whose pods never get there back; false: helm returns once the "
                                                   "API server accepted the objects (a control plane without nodes, "
                                                   "as `make k8s-apiserver`'s); the deploy step's smoke test still "
                                                   "checks the served model")
    history_max: int = Field(10, ge=2, description="revisions helm keeps (what rollback can reach)")
    storage_endpoint: str | None = Field(None, description="the store as the serving pods reach it, when that "
                                                           "differs from registry.s3_endpoint (a port-forward)")
    canary: CanaryConfig = CanaryConfig()


class CaptureConfig(_Section):
    """What the server records of its traffic (aimass/capture/): a sample of requests with their inputs as received
    and their answers, written in batches by a background thread, one file per replica and interval."""

    sample_rate: float = Field(1.0, ge=0, le=1, description="share of requests recorded, chosen by request id "
                                                            "(0 turns capture off)")
    uri: str = Field("capture", description="a folder (relative to data.repo_dir unless absolute) or "
                                            "s3://BUCKET/PREFIX on registry.s3_endpoint")
    max_queue: int = Field(10_000, ge=1, description="requests waiting for the writer; more are dropped and counted")
    flush_seconds: float = Field(5.0, gt=0, le=3600, description="how often the writer closes a file")
    max_records_per_file: int = Field(1_000, ge=1, description="a file is closed early when it holds this many")


class LiveMonitorConfig(_Section):
    """Drift and live accuracy measured inside the server on a sliding window of its traffic (aimass/monitoring/)."""

    enabled: bool = True
    window: int = Field(500, ge=10, description="images in the sliding window compared with the training profile")
    min_images: int = Field(100, ge=10, description="no drift verdict before the window holds this many images")
    interval_seconds: float = Field(2.0, gt=0, le=600, description="how often the window is measured again")
    remember_predictions: int = Field(100_000, ge=1, description="recent request ids feedback can be joined to")
    max_queue: int = Field(10_000, ge=1, description="answered requests waiting for the monitor; more are skipped "
                                                     "and counted")


class ServingConfig(_Section):
    """The OIP v2 model server (`aimass serve`) and the deploy stage's smoke test against it.
    The bearer token comes from $AIMASS_SERVING_TOKEN or `token_file`, never from this config."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    token_file: str | None = Field(None, description="file holding the bearer token (e.g. a mounted Secret)")
    max_body_bytes: int = Field(32 * 2**20, ge=1024, description="larger request bodies get 413")
    max_images_per_request: int = Field(1024, ge=1)
    max_image_bytes: int = Field(8 * 2**20, ge=1024, description="a larger uploaded image file gets 413")
    max_image_pixels: int = Field(40_000_000, ge=1024, description="an uploaded image of more pixels is refused "
                                                                   "before it is decoded (decompression bombs)")
    dynamic_batching: bool = Field(True, description="merge concurrent requests into one forward pass")
    max_batch_size: int = Field(32, ge=1, description="images per merged forward pass")
    max_batch_delay_ms: float = Field(0.0, ge=0, description="how long a batch waits for more requests; 0 takes "
                                                             "what queued during the previous pass")
    inference_threads: int = Field(1, ge=1, description="threads running forward passes (each with 1 torch thread)")
    compile_quantized: bool = Field(True, description="torch.compile int8 models at load, as compress timed them "
                                                      "(needs a C++ compiler; eager int8 is ~10x slower)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "cpu", description="where forward passes run; auto = CUDA when present, for float models (int8 runs on CPU)")
    poll_seconds: float = Field(0.25, gt=0, le=60, description="how often the server checks the release pointer")
    load_retry_seconds: float = Field(30.0, gt=0, description="wait before retrying a version that failed to load")
    cache_dir: str = Field("serving-cache", description="pulled model versions, relative to data.repo_dir")
    url: str | None = Field(None, description="base URL of the served model for the deploy smoke test; "
                                              "none starts a local server following the release")
    smoke_test_images: int = Field(1000, ge=10, description="held-out test images the deploy smoke test sends")
    ready_timeout_seconds: float = Field(60.0, gt=0, description="how long deploy waits for the new version")
    capture: CaptureConfig = CaptureConfig()
    monitor: LiveMonitorConfig = LiveMonitorConfig()


class MonitorConfig(_Section):
    """What counts as a breach of a served model, and the automatic response (`aimass monitor --retrain`)."""

    embedding_p_value: float = Field(0.001, gt=0, lt=1, description="MMD permutation test on the model's outputs: "
                                                                    "drift when p is below this (one test a window)")
    permutations: int = Field(2_000, ge=100, le=100_000, description="permutations of the MMD test")
    reference_images: int = Field(1_000, ge=50, description="validation images whose outputs are kept with a "
                                                            "model at registration, as the MMD reference")
    min_labelled: int = Field(200, ge=1, description="labels needed before live accuracy can breach")
    max_accuracy_drop: float = Field(0.05, ge=0, le=1, description="breach when live accuracy falls this far "
                                                                   "below the production model's test accuracy")
    since: str = Field("24h", pattern=r"^[0-9]+[smhd]$", description="default look-back of `aimass monitor`")
    cooldown: str = Field("6h", pattern=r"^[0-9]+[smhd]$", description="no second retraining within this time")
    captured_test_share: float = Field(0.3, ge=0, lt=1, description="share of labelled captured images that join "
                                                                    "the test split of the retraining data")
    report: str = Field("monitor-report.html", description="HTML report, relative to data.repo_dir")


class KubernetesConfig(_Section):
    """Compile-time settings for the cluster; they change the compiled YAML, not local runs."""

    gpu_accelerator: str = "nvidia.com/gpu"
    gpu_node_selector: str = Field("nvidia.com/gpu.present=true", pattern=r"^[^=\s]+=[^=\s]*$",
                                   description="node label key=value the GPU stages require")
    gpu_toleration_key: str = "nvidia.com/gpu"
    cpu_request: str = "1"
    memory_request: str = "2Gi"
    train_cpu_request: str = "4"
    train_memory_request: str = "16Gi"
    run_as_user: int = Field(10001, ge=1, description="the image's unprivileged user; every step runs as it")
    storage_credentials_secret: str = Field(
        "aimass-minio-credentials", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Secret (keys accesskey, secretkey) the steps that use the registry read; see manifests/")
    serving_token_secret: str | None = Field(None, description="Secret (key token) with the model server's bearer "
                                                                "token, for the deploy step's smoke test")


class KubeflowConfig(_Section):
    """Where `aimass submit | runs | schedule` reach Kubeflow Pipelines. A bearer token, when the endpoint needs one,
    comes from $AIMASS_KFP_TOKEN only; without a host, kfp finds the API through the kubeconfig."""

    host: str | None = Field(None, pattern=r"^https?://\S+$", description="KFP API endpoint, e.g. "
                                                                          "https://kubeflow.example.com/pipeline")
    namespace: str = Field("kubeflow", description="the KFP namespace (a profile namespace on multi-user Kubeflow)")
    experiment: str = Field("aimass", min_length=1, description="runs and schedules are grouped under it")
    service_account: str = Field("aimass-pipeline", description="runs act as it (see manifests/)")
    kube_context: str | None = None
    poll_seconds: float = Field(10.0, gt=0, description="how often --wait asks for the run's state")


class AimassConfig(_Section):
    profile: Literal["tiny", "quick", "full"] = "quick"
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    validation: ValidationConfig = ValidationConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    compress: CompressConfig = CompressConfig()
    gate: GateConfig = GateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    registry: RegistryConfig = RegistryConfig()
    release: ReleaseConfig = ReleaseConfig()
    deploy: DeployConfig = DeployConfig()
    serving: ServingConfig = ServingConfig()
    monitor: MonitorConfig = MonitorConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    kubeflow: KubeflowConfig = KubeflowConfig()
    hpo: HpoConfig = HpoConfig()

    @model_validator(mode="after")
    def _student_is_smaller_than_the_teacher(self) -> AimassConfig:
        distilling = any(method.startswith("distill") for method in self.compress.methods)
        if not (distilling and self.model.is_built_in and self.compress.student == BUILT_IN_CNN):
            return self  # a checkpoint's size is known only once it is loaded: compress's size gate judges it
        student = (*self.compress.student_channels, self.compress.student_hidden_units)
        teacher = (*self.model.channels, self.model.hidden_units)
        if any(s > t for s, t in zip(student, teacher)) or student == teacher:
            raise ValueError(f"the distillation student (compress.student_channels, compress.student_hidden_units = "
                             f"{student}) must be smaller than the teacher (model.channels, model.hidden_units = "
                             f"{teacher}) in every layer and not equal to it")
        return self

    @model_validator(mode="after")
    def _frozen_backbone_trains_in_one_process(self) -> AimassConfig:
        if self.train.frozen_backbone_epochs and self.train.nproc > 1:
            raise ValueError("train.frozen_backbone_epochs needs train.nproc=1: DistributedDataParallel cannot "
                             "change which parameters train during a run")
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    def with_serving(self, **changes: Any) -> AimassConfig:
        """This configuration with some `serving` settings changed (sections are frozen)."""
        return self.model_copy(update={"serving": self.serving.model_copy(update=changes)})

    @classmethod
    def from_json(cls, text: str) -> AimassConfig:
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            raise ConfigError(_describe(error)) from None


PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "split": {"train_limit": 3_000, "test_limit": 1_000},
        "train": {"steps": 42, "batch_size": 64},
        "compress": {"calibration_images": 128, "distill_epochs": 1, "int8_runtime": "eager",
                     "latency_runs": 20, "throughput_runs": 3},
        "gate": {"min_accuracy": 0.5, "min_macro_f1": 0.4, "max_accuracy_drop": 0.05},
        "evaluate": {"robustness_images": 100, "severities": (3,)},
        "serving": {"smoke_test_images": 200},
        "hpo": {"enabled": True, "strategy": "grid", "trial_epochs": 1, "parallelism": 2,
                "space": {"train.learning_rate": {"values": [0.001, 0.05]}, "model.dropout": {"values": [0.0, 0.2]}}},
    },
    # Chosen by measurement (docs/PERFORMANCE.md): the lean CNN reaches 0.92 in 45 % of the large one's time, and
    # augmentation costs a point at three epochs. The student is leaner still, distilled for one epoch.
    "quick": {"model": {"channels": (16, 32, 64), "hidden_units": 128}, "augment": {"on_the_fly": False},
              "train": {"steps": 1_260}, "evaluate": {"robustness_images": 500},
              "compress": {"methods": ("quantize_int8", "distill", "distill_int8"), "student_channels": (8, 16, 32),
                           "student_hidden_units": 64, "distill_epochs": 1}},
    "full": {
        "train": {"steps": 3_150, "batch_size": 512, "learning_rate": 0.2, "early_stopping_steps": 420,
                  "compile": True},
        "hpo": {"enabled": True, "strategy": "tpe", "trials": 16, "parallelism": 4, "trial_epochs": 5,
                "space": {"train.learning_rate": {"low": 0.02, "high": 0.5, "log": True},
                          "train.weight_decay": {"low": 1e-5, "high": 1e-3, "log": True},
                          "model.dropout": {"low": 0.0, "high": 0.3}}},
    },
}


# How a run on the cluster differs from a local one: data pulled from the DVC remote and the registry, both on
# MinIO (plain HTTP inside the cluster; set registry.s3_secure=true and an https endpoint where MinIO serves TLS),
# and releases as Helm revisions. `aimass compile` applies these before its own --set overrides.
CLUSTER_OVERRIDES = ("data.remote_url=s3://aimass-data/dvc", "data.remote_endpoint=http://minio.minio.svc.cluster.local:9000",
                     "registry.backend=s3", "registry.s3_secure=false", "release.backend=helm")


def valid_keys() -> list[str]:
    """Every dotted key that `--set` accepts, e.g. `train.epochs` or `augment.policy.rotation.degrees`.

    `profile` is not one of them: it is chosen with --profile, never overridden.
    """
    def leaves(model_type: type[BaseModel], prefix: str) -> list[str]:
        keys = []
        for name, field in model_type.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                keys.extend(leaves(field.annotation, f"{prefix}{name}."))
            elif prefix:
                keys.append(f"{prefix}{name}")
        return keys

    return leaves(AimassConfig, "")


def load_config(profile: str = "quick", overrides: list[str] | tuple[str, ...] = ()) -> AimassConfig:
    """Build the configuration for `profile` with `KEY=VALUE` overrides applied on top.

    Values are parsed as YAML scalars (`3` is an int, `true` a bool, `[16,32,64]` a list).

    Raises:
        ConfigError: unknown profile, malformed override, unknown key (the message lists the valid ones) or a value
            outside its allowed range.
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    settings = copy.deepcopy(PROFILES[profile])
    settings["profile"] = profile
    for override in overrides:
        key, value = _parse_override(override)
        _assign(settings, key, value)
    try:
        return AimassConfig.model_validate(settings)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


# Keys earlier versions took, and what replaced them: a --set of one says so instead of listing every valid key.
REPLACED_KEYS = {
    "train.early_stopping_patience": "it counted epochs, which on a data set of a few batches ended training inside "
                                     "the warm-up; set train.early_stopping_steps (optimisation steps without a "
                                     "validation gain) instead",
}


def _parse_override(override: str) -> tuple[str, Any]:
    key, separator, raw_value = override.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"override {override!r} is not KEY=VALUE, e.g. train.epochs=5")
    key = key.strip()
    if key in REPLACED_KEYS:
        raise ConfigError(f"{key} is gone: {REPLACED_KEYS[key]}")
    if key not in valid_keys():
        raise ConfigError(f"unknown configuration key {key!r}; valid keys: {', '.join(valid_keys())}")
    try:
        return key, yaml.safe_load(raw_value) if raw_value.strip() else raw_value
    except yaml.YAMLError:
        return key, raw_value


def _assign(settings: dict[str, Any], dotted_key: str, value: Any) -> None:
    *sections, name = dotted_key.split(".")
    node = settings
    for section in sections:
        node = node.setdefault(section, {})
    node[name] = value


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "configuration"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}; valid keys: {', '.join(valid_keys())}")
        else:
            problems.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
    return "invalid configuration: " + "; ".join(problems)


def config_summary(config: AimassConfig) -> str:
    """The resolved configuration as indented JSON, for saving beside every model."""
    return json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True)
