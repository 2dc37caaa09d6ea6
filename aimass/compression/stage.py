"""The compress stage's work: build every configured candidate from the teacher, profile them beside it, and write
them under one sha256 manifest. A candidate whose technique fails is recorded with its reason; the others go on."""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from torch import nn

from aimass.compression.distillation import distill
from aimass.compression.fine_tuning import fine_tune
from aimass.compression.measurement import count_parameters, directory_bytes, profile_model
from aimass.compression.profiles import FAILURES_FILE, PROFILES_FILE, ModelProfile
from aimass.compression.pruning import finalize_unstructured, prune_channels, prune_unstructured
from aimass.compression.quantization import export_program, quantize_int8
from aimass.config import AimassConfig, GateConfig, ModelConfig
from aimass.data.arrays import load_image_sets
from aimass.data.preprocess import to_model_input
from aimass.integrity import write_manifest
from aimass.models.artifact import load_model, save_exported_model, save_model
from aimass.models.card import FLOAT_BACKEND, TEACHER
from aimass.progress import report as report_progress

log = logging.getLogger(__name__)


def could_pass_size_gate(candidate_dir: Path, teacher_dir: Path, gate: GateConfig) -> bool:
    """Timing a candidate (compiling an int8 one first) costs seconds; one the size gate rejects anyway need not be."""
    return directory_bytes(teacher_dir) / directory_bytes(candidate_dir) >= gate.min_size_ratio


def compress(config: AimassConfig, teacher_dir: Path, splits_dir: Path, output_dir: Path) -> list[ModelProfile]:
    """Build every configured candidate into `output_dir/<method>/`, profile them and the teacher, and write
    `output_dir/profiles.json`. Returns the profiles, teacher first."""
    settings = config.compress
    splits, _ = load_image_sets(splits_dir)
    teacher_loaded = load_model(teacher_dir)
    teacher_card = teacher_loaded.card
    train, validation = splits["train"], splits["validation"]
    signature = teacher_loaded.signature
    teacher_shape = teacher_card.architecture  # as trained, whatever this config says
    calibration = to_model_input(train.images[:settings.calibration_images], signature.input_spec)
    fresh_teacher = lambda: load_model(teacher_dir).module  # noqa: E731 (each method mutates its own copy)
    built: dict[str, tuple[Path, tuple[int, int]]] = {}

    def save_float(name: str, model: nn.Module, shape: ModelConfig) -> nn.Module:
        save_model(output_dir / name, model, shape, signature, teacher_card.for_candidate(name, FLOAT_BACKEND))
        built[name] = (output_dir / name, count_parameters(model))
        return model

    def save_float_program(name: str, model: nn.Module) -> None:
        """A float model whose layers match no config (a pruned checkpoint): saved as an exported program."""
        program = export_program(model.eval(), calibration[:2])
        save_exported_model(output_dir / name, program, teacher_shape, signature,
                            teacher_card.for_candidate(name, FLOAT_BACKEND))
        built[name] = (output_dir / name, count_parameters(model))

    def save_int8(name: str, model: nn.Module, shape: ModelConfig, dynamic: bool = False) -> None:
        program, backend = quantize_int8(model, calibration, dynamic)
        save_exported_model(output_dir / name, program, shape, signature,
                            teacher_card.for_candidate(name, backend))
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
                                    settings, evaluate=config.evaluate)
    profiles = [teacher_profile] + [
        profile_model(name, path, counts, validation, settings,
                      timed=settings.time_every_candidate or could_pass_size_gate(path, teacher_dir, config.gate),
                      evaluate=config.evaluate)
        for name, (path, counts) in built.items()]
    (output_dir / PROFILES_FILE).write_text(json.dumps([asdict(p) for p in profiles], indent=2) + "\n")
    (output_dir / FAILURES_FILE).write_text(json.dumps(failures, indent=2, sort_keys=True) + "\n")
    write_manifest(output_dir, {"kind": "aimass-compression-candidates"})
    return profiles

