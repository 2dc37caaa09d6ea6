"""compress: build smaller candidates from the trained teacher and measure each beside it.

Candidates (choose with `compress.methods`):
    prune_unstructured  global magnitude pruning of conv/linear weights to a target sparsity, then fine-tuning
    prune_channels      structured pruning through torch-pruning's dependency graph (channels, hidden units,
                        residual groups of any architecture; the output layer kept), then fine-tuning
    quantize_int8       the teacher in int8: static post-training quantization of conv and linear layers with
                        torchao's PT2E flow (x86 inductor quantizer, calibrated on training images)
    quantize_dynamic_int8  the teacher with dynamic int8 linear layers (torchao); not a default method
    distill             a smaller student (`compress.student`: the built-in CNN at the student widths, or a Hugging
                        Face config) trained on the teacher's temperature-softened outputs
    distill_int8        that student, quantized as above

A candidate whose technique fails (a model torch.export cannot capture, say) is reported as failed with its reason
in `failures.json` and the report, and the other candidates go on; nothing falls back silently to another technique.

Every candidate and the teacher are profiled the same way, side by side in this process: parameters, non-zero
parameters, bytes on disk, validation accuracy, CPU batch-1 latency p50/p99 and batch-64 throughput. Candidates are
compared on the validation split; the test split is left to evaluate, which scores only the chosen model, so the
reported test metrics are not biased by the choice.
"""
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output
from torch import nn

from aimass.components.base import project_component
from aimass.training.batches import plain_batches
from aimass.training.devices import FastPath, select_device
from aimass.training.loop import fit, LossFunction, smoothed_cross_entropy
from aimass.config import AimassConfig, CompressConfig, GateConfig, ModelConfig
from aimass.data.arrays import ImageSet, load_image_sets
from aimass.data.preprocess import InputSpec, to_model_input
from aimass.integrity import read_verified_manifest, write_manifest
from aimass.models.architecture import CNNClassifier, Signature, build_classifier, example_input
from aimass.models.artifact import compile_for_inference, load_model, save_exported_model, save_model
from aimass.models.card import TEACHER
from aimass.progress import report as report_progress
from aimass.reports import markdown_table

log = logging.getLogger(__name__)
PROFILES_FILE = "profiles.json"
FAILURES_FILE = "failures.json"
FLOAT_BACKEND = "float32"
STATIC_INT8_BACKEND = "pt2e-x86-inductor-static-int8"
DYNAMIC_INT8_BACKEND = "torchao-dynamic-int8-linear"


@dataclass(frozen=True)
class ModelProfile:
    name: str  # "teacher" or the compression method
    backend: str  # float32, or which int8 flow produced the weights
    parameters: int  # of the float network (int8 candidates: of the network they quantize)
    nonzero_parameters: int
    size_bytes: int  # model directory on disk
    accuracy: float  # on the validation split
    latency_p50_ms: float | None  # batch 1, CPU; None: not timed, the size gate rules it out
    latency_p99_ms: float | None
    throughput_b64: float | None  # images/s at batch 64, CPU
    runtime: str  # eager or inductor (torch.compile); "not timed"


# ---- building candidates ----

# Fine-tuning and distillation train every layer at one rate, whatever the teacher's own training did.
WHOLE_NETWORK = {"frozen_backbone_epochs": 0, "backbone_learning_rate_factor": 1.0}


def fine_tune(model: nn.Module, config: AimassConfig, train_set: ImageSet, validation_set: ImageSet,
              spec: InputSpec, epochs: int) -> nn.Module:
    """A short, unaugmented training run of `model` at the compression learning rate."""
    if epochs == 0:
        return model.eval()
    settings = config.train.model_copy(update={
        "steps": None, "epochs": epochs, "learning_rate": config.compress.finetune_learning_rate,
        "early_stopping_patience": epochs, "compile": False, **WHOLE_NETWORK})
    device = select_device(settings.device)
    tuned, _ = fit(model.to(device), settings, plain_batches(train_set, device, spec), train_set.labels,
                   validation_set, smoothed_cross_entropy(settings.label_smoothing), spec)
    return tuned


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


def prune_unstructured(model: nn.Module, sparsity: float) -> nn.Module:
    """Zero the globally smallest-magnitude `sparsity` share of conv/linear weights; masks stay until `finalize`."""
    import torch.nn.utils.prune as prune

    prune.global_unstructured([(layer, "weight") for layer in prunable_layers(model)],
                              pruning_method=prune.L1Unstructured, amount=sparsity)
    return model


def finalize_unstructured(model: nn.Module) -> nn.Module:
    import torch.nn.utils.prune as prune

    for layer in prunable_layers(model):
        prune.remove(layer, "weight")  # bake the mask into the weight tensor
    return model


_PROJECTION_NAMES = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))


def attention_projections(model: nn.Module) -> list[tuple[nn.Module, tuple[nn.Linear, nn.Linear, nn.Linear]]]:
    """Multi-head attention modules (transformers' naming) with their query, key and value projections: pruned by
    whole heads, so the per-head width the attention reshapes by stays valid."""
    found = []
    for module in model.modules():
        for names in _PROJECTION_NAMES:
            if hasattr(module, "num_attention_heads") and all(isinstance(getattr(module, name, None), nn.Linear)
                                                              for name in names):
                found.append((module, tuple(getattr(module, name) for name in names)))
    return found


def prune_channels(model: nn.Module, sparsity: float, signature: Signature) -> tuple[nn.Module, ModelConfig | None]:
    """Remove the `sparsity` share of channels/hidden units with the smallest L2 norm (the output layer kept).

    torch-pruning traces the model into a dependency graph, so layers coupled by a residual addition or a
    concatenation lose the same channels, and attention loses whole heads. Returns the pruned model and, for the built-in CNN, its new widths (it
    is rebuilt as a plain CNN of that shape); any other architecture returns None: its layers no longer match
    any config, and it is saved as an exported program.
    """
    import torch_pruning as tp

    example = example_input(signature)
    classifier = prunable_layers(model)[-1]
    attention = attention_projections(model)
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=sparsity, ignored_layers=[classifier],
                                  num_heads={projection: module.num_attention_heads
                                             for module, projections in attention for projection in projections},
                                  prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=sparsity)
    pruner.step()
    for module, (query, _, _) in attention:
        module.num_attention_heads = pruner.num_heads[query]  # whole heads went; each keeps its width
    with torch.no_grad():
        model.eval()(example)  # a graph torch-pruning could not follow fails here, not in a server
    if not isinstance(model, CNNClassifier):
        return model, None
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    hidden = prunable_layers(model)[-2]
    shape = ModelConfig(channels=tuple(conv.out_channels for conv in convs), hidden_units=hidden.out_features)
    rebuilt = build_classifier(shape, signature)  # a plain network of the new shape, so it saves and loads like any other
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt, shape


def distillation_loss(teacher_logits: torch.Tensor, temperature: float, soft_weight: float) -> LossFunction:
    """Hinton et al.: T^2-scaled KL to the teacher's softened outputs, mixed with cross-entropy on the labels."""
    def loss(logits: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        soft = F.kl_div(F.log_softmax(logits.float() / temperature, dim=1),
                        F.softmax(teacher_logits[batch] / temperature, dim=1), reduction="batchmean")
        return soft_weight * temperature ** 2 * soft + (1 - soft_weight) * F.cross_entropy(logits.float(), labels)

    return loss


def teacher_logits(teacher: nn.Module, images: np.ndarray, spec: InputSpec, fast_path: FastPath,
                   batch_size: int = 256) -> torch.Tensor:
    """The teacher's logits for every image, computed once (one pass instead of one per step), on the teacher's
    device, the way training computes (`fast_path`: 4x faster on a CPU with native bfloat16, and soft targets need
    no more precision). Batches of 256 stay in cache (2.8k vs 2.3k images/s at 1,024 in float32, 11.4k vs 6.8k on
    the fast path)."""
    device = next(teacher.parameters()).device
    teacher = teacher.to(memory_format=fast_path.memory_format).eval()
    with torch.inference_mode(), fast_path.autocast():
        logits = torch.cat([teacher(fast_path.layout(to_model_input(images[start:start + batch_size], spec, device)))
                            .float() for start in range(0, len(images), batch_size)])
    teacher.to(memory_format=torch.contiguous_format)
    return logits


def distill(teacher: nn.Module, config: AimassConfig, train_set: ImageSet, validation_set: ImageSet,
            signature: Signature) -> tuple[nn.Module, ModelConfig]:
    settings = config.compress
    shape = ModelConfig(architecture=settings.student, channels=settings.student_channels,
                        hidden_units=settings.student_hidden_units, dropout=config.model.dropout)
    device = select_device(config.train.device)
    torch.manual_seed(config.train.seed)
    if shape.is_built_in:
        student = build_classifier(shape, signature)
    else:
        from aimass.models.huggingface import from_checkpoint

        student, _ = from_checkpoint(shape.architecture, signature.class_names, signature.input_spec.model_shape[0],
                                     pretrained=False)
    student = student.to(device)
    spec = signature.input_spec
    soft_targets = teacher_logits(teacher.to(device), train_set.images, spec,
                                  FastPath.for_device(config.train.fast_path, device))
    run = config.train.model_copy(update={"steps": None, "epochs": settings.distill_epochs, "compile": False,
                                          **WHOLE_NETWORK})
    loss = distillation_loss(soft_targets, settings.distill_temperature, settings.distill_weight)
    trained, _ = fit(student, run, plain_batches(train_set, device, spec), train_set.labels, validation_set, loss,
                     spec)
    teacher.cpu()
    return trained, shape


def quantize_int8(model: nn.Module, calibration: torch.Tensor,
                  dynamic: bool = False) -> tuple[torch.export.ExportedProgram, str]:
    """The model in int8 (static PT2E, or `dynamic` int8 of linear layers), exported with a dynamic batch
    dimension; returns the program and the backend used. A failure raises: the caller reports it."""
    if dynamic:
        return _dynamic_int8(model, calibration[:2]), DYNAMIC_INT8_BACKEND
    return _static_int8(model, calibration), STATIC_INT8_BACKEND


def _export(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=65_536)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def _static_int8(model: nn.Module, calibration: torch.Tensor) -> torch.export.ExportedProgram:
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(_export(model.eval(), calibration[:2]).module(), quantizer)
    with torch.no_grad():
        for start in range(0, len(calibration), 256):
            prepared(calibration[start:start + 256])
    converted = convert_pt2e(prepared)
    _drop_unused_attributes(converted)
    return _export(converted, calibration[:2])


def _drop_unused_attributes(graph_module: torch.fx.GraphModule) -> None:
    """convert_pt2e folds int8 weights into new constants but keeps the float originals as attributes; without this
    the saved program would carry both and be larger than the float model."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    for name in [name for name, _ in [*graph_module.named_parameters(), *graph_module.named_buffers()]]:
        if name not in used:
            owner_path, _, attribute = name.rpartition(".")
            owner = graph_module.get_submodule(owner_path) if owner_path else graph_module
            delattr(owner, attribute)


def _dynamic_int8(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    import copy

    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    from torchao.utils import unwrap_tensor_subclass

    quantized = copy.deepcopy(model).eval()
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())  # Linear layers only
    return _export(unwrap_tensor_subclass(quantized), example)  # plain tensors: the archive needs no pickle


# ---- measuring ----

def count_parameters(model: nn.Module) -> tuple[int, int]:
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters), sum(int(torch.count_nonzero(p)) for p in parameters)


def directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


@torch.inference_mode()
def time_model(model, inputs: torch.Tensor, latency_runs: int, throughput_runs: int) -> tuple[float, float, float]:
    """(batch-1 p50 ms, batch-1 p99 ms, batch-64 images/s) on the CPU, after warm-up calls."""
    single, batch = inputs[:1], inputs[:64]
    for _ in range(5):
        model(single)
        model(batch)
    latencies = []
    for index in range(latency_runs):
        sample = inputs[index % len(inputs):index % len(inputs) + 1]
        started = time.perf_counter()
        model(sample)
        latencies.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    for _ in range(throughput_runs):
        model(batch)
    throughput = throughput_runs * len(batch) / (time.perf_counter() - started)
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), throughput


def profile_model(name: str, model_dir: Path, counts: tuple[int, int], validation: ImageSet,
                  settings: CompressConfig, timed: bool = True) -> ModelProfile:
    """Load the saved model back (what a server would run) and measure it on the validation split; its latency and
    throughput only when `timed`."""
    loaded = load_model(model_dir)
    backend = loaded.card.get("compression", {}).get("backend", FLOAT_BACKEND)
    spec = loaded.signature.input_spec
    module = loaded.module
    runtime = "eager"
    if backend != FLOAT_BACKEND and settings.int8_runtime == "inductor" and timed:
        # int8 kernels exist only in inductor's lowering; dynamic: one compilation serves every batch size
        module, runtime = compile_for_inference(module), "inductor"
    with torch.inference_mode():
        predictions = np.concatenate([
            module(to_model_input(validation.images[start:start + 512], spec)).argmax(1).numpy()
            for start in range(0, len(validation), 512)])
    accuracy = float((predictions == validation.labels).mean())
    if not timed:
        return ModelProfile(name, backend, counts[0], counts[1], directory_bytes(model_dir), accuracy, None, None,
                            None, "not timed")
    inputs = to_model_input(validation.images[:256], spec)
    p50, p99, throughput = time_model(module, inputs, settings.latency_runs, settings.throughput_runs)
    return ModelProfile(name, backend, counts[0], counts[1], directory_bytes(model_dir), accuracy, p50, p99,
                        throughput, runtime)


def could_pass_size_gate(candidate_dir: Path, teacher_dir: Path, gate: GateConfig) -> bool:
    """Timing a candidate (compiling an int8 one first) costs seconds; one the size gate rejects anyway need not be."""
    return directory_bytes(teacher_dir) / directory_bytes(candidate_dir) >= gate.min_size_ratio


# ---- the stage ----

def compress(config: AimassConfig, teacher_dir: Path, splits_dir: Path, output_dir: Path) -> list[ModelProfile]:
    """Build every configured candidate into `output_dir/<method>/`, profile them and the teacher, and write
    `output_dir/profiles.json`. Returns the profiles, teacher first."""
    settings = config.compress
    splits, _ = load_image_sets(splits_dir)
    teacher_loaded = load_model(teacher_dir)
    teacher_card = teacher_loaded.card
    train, validation = splits["train"], splits["validation"]
    signature = teacher_loaded.signature
    teacher_shape = ModelConfig.model_validate(teacher_card["architecture"])  # as trained, whatever this config says
    calibration = to_model_input(train.images[:settings.calibration_images], signature.input_spec)
    fresh_teacher = lambda: load_model(teacher_dir).module  # noqa: E731 (each method mutates its own copy)
    built: dict[str, tuple[Path, tuple[int, int]]] = {}

    def save_float(name: str, model: nn.Module, shape: ModelConfig) -> nn.Module:
        save_model(output_dir / name, model, shape, signature, _candidate_card(teacher_card, name, FLOAT_BACKEND))
        built[name] = (output_dir / name, count_parameters(model))
        return model

    def save_float_program(name: str, model: nn.Module) -> None:
        """A float model whose layers match no config (a pruned checkpoint): saved as an exported program."""
        program = _export(model.eval(), calibration[:2])
        save_exported_model(output_dir / name, program, teacher_shape, signature,
                            _candidate_card(teacher_card, name, FLOAT_BACKEND))
        built[name] = (output_dir / name, count_parameters(model))

    def save_int8(name: str, model: nn.Module, shape: ModelConfig, dynamic: bool = False) -> None:
        program, backend = quantize_int8(model, calibration, dynamic)
        save_exported_model(output_dir / name, program, shape, signature,
                            _candidate_card(teacher_card, name, backend))
        built[name] = (output_dir / name, count_parameters(model))

    output_dir.mkdir(parents=True, exist_ok=True)
    student: tuple[nn.Module, ModelConfig] | None = None
    failures: dict[str, str] = {}
    for number, method in enumerate(settings.methods, 1):
        report_progress(f"candidate {number}/{len(settings.methods)}: {method}")
        started = time.perf_counter()
        try:
            if method == "prune_unstructured":
                masked = prune_unstructured(fresh_teacher(), settings.unstructured_sparsity)
                tuned = finalize_unstructured(fine_tune(masked, config, train, validation, signature.input_spec,
                                                        settings.finetune_epochs))
                save_float(method, tuned, teacher_shape)
            elif method == "prune_channels":
                slim, shape = prune_channels(fresh_teacher(), settings.channel_sparsity, signature)
                tuned = fine_tune(slim, config, train, validation, signature.input_spec, settings.finetune_epochs)
                if shape is not None:
                    save_float(method, tuned, shape)
                else:
                    save_float_program(method, tuned)
            elif method in ("quantize_int8", "quantize_dynamic_int8"):
                save_int8(method, fresh_teacher(), teacher_shape, dynamic=method == "quantize_dynamic_int8")
            elif method in ("distill", "distill_int8"):
                student = student or distill(fresh_teacher(), config, train, validation, signature)
                if method == "distill":
                    save_float(method, *student)
                else:
                    save_int8(method, *student)
        except Exception as error:  # noqa: BLE001 - any technique may fail on some model; the others go on
            failures[method] = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
            log.warning("candidate %s failed: %s", method, failures[method])
            shutil.rmtree(output_dir / method, ignore_errors=True)
            built.pop(method, None)
            continue
        log.info("built %s in %.1f s", method, time.perf_counter() - started)

    report_progress(f"profiling the teacher and {len(built)} candidates")
    teacher_profile = profile_model(TEACHER, teacher_dir, count_parameters(teacher_loaded.module), validation,
                                    settings)
    profiles = [teacher_profile] + [
        profile_model(name, path, counts, validation, settings,
                      timed=settings.time_every_candidate or could_pass_size_gate(path, teacher_dir, config.gate))
        for name, (path, counts) in built.items()]
    (output_dir / PROFILES_FILE).write_text(json.dumps([asdict(p) for p in profiles], indent=2) + "\n")
    (output_dir / FAILURES_FILE).write_text(json.dumps(failures, indent=2, sort_keys=True) + "\n")
    write_manifest(output_dir, {"kind": "aimass-compression-candidates"})
    return profiles


def _candidate_card(teacher_card: dict, method: str, backend: str) -> dict:
    return {
        "dataset": teacher_card["dataset"],
        "data_profile": teacher_card["data_profile"],
        "lineage": {**teacher_card["lineage"]},
        "compression": {"method": method, "backend": backend},
        "teacher_training": teacher_card.get("training", {}),
        "config": teacher_card.get("config", {}),
    }


def read_profiles(candidates_dir: Path) -> list[ModelProfile]:
    """The profiles written by `compress`, after verifying the candidates' sha256 manifest."""
    read_verified_manifest(candidates_dir)
    return [ModelProfile(**entry) for entry in json.loads((candidates_dir / PROFILES_FILE).read_text())]


def read_failures(candidates_dir: Path) -> dict[str, str]:
    """Candidate -> why its technique failed (the manifest covers the file; read_profiles verified it)."""
    path = candidates_dir / FAILURES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def failures_markdown(failures: dict[str, str]) -> str:
    if not failures:
        return ""
    return "\n## Failed candidates\n\n" + markdown_table(["candidate", "why"], sorted(failures.items()))


def profiles_markdown(profiles: list[ModelProfile]) -> str:
    teacher = profiles[0]
    def timing(value: float | None, form: str) -> str:
        return "—" if value is None else format(value, form)  # not timed: the size gate rules it out

    speed_up = {p.name: p.throughput_b64 / teacher.throughput_b64 if p.throughput_b64 else None for p in profiles}
    rows = [(p.name, p.backend, p.parameters, p.nonzero_parameters, f"{p.size_bytes / 1024:.0f}",
             f"{teacher.size_bytes / p.size_bytes:.2f}x", f"{p.accuracy:.4f}", timing(p.latency_p50_ms, ".3f"),
             timing(p.latency_p99_ms, ".3f"), timing(p.throughput_b64, ".0f"), timing(speed_up[p.name], ".2f"),
             p.runtime) for p in profiles]
    headers = ["model", "backend", "params", "non-zero", "KiB", "smaller", "val. accuracy", "p50 ms (b1)", "p99 ms (b1)",
               "img/s (b64)", "speed-up (b64, x)", "runtime"]
    return "# Compression candidates\n\n" + markdown_table(headers, rows)


@project_component
def compress_component(config_json: str, model: Input[Model], splits: Input[Dataset], candidates: Output[Model],
                       metrics: Output[Metrics], report: Output[Markdown]):
    """Build pruned, quantized and distilled candidates and profile each beside the teacher.

    Args:
        config_json: the resolved AimassConfig as JSON (methods and settings under `compress`).
        model: the trained teacher.
        splits: the ingest output (train for fine-tuning and calibration, validation for the profiles).
        candidates: one model directory per candidate plus profiles.json, under one sha256 manifest.
        metrics: accuracy, size, latency and throughput per model.
        report: the side-by-side table as Markdown.
    """
    import logging
    from pathlib import Path

    from aimass.components.compress import compress, failures_markdown, profiles_markdown, read_failures
    from aimass.config import AimassConfig

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # each candidate's build time and any failure
    profiles = compress(AimassConfig.from_json(config_json), Path(model.path), Path(splits.path),
                        Path(candidates.path))
    for profile in profiles:
        for field in ("accuracy", "size_bytes", "latency_p50_ms", "latency_p99_ms", "throughput_b64"):
            if getattr(profile, field) is not None:  # not timed: ruled out by its size
                metrics.log_metric(f"{profile.name}_{field}", getattr(profile, field))
    Path(report.path).write_text(profiles_markdown(profiles) + failures_markdown(read_failures(Path(candidates.path))))
    candidates.metadata.update({**model.metadata, "candidates": [p.name for p in profiles[1:]]})
