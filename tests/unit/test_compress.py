import subprocess
import sys

import numpy as np
import pytest
import torch

from aimass.models.architecture import build_classifier, predict_probabilities
from aimass.compression.distillation import distillation_loss
from aimass.compression.profiles import read_profiles
from aimass.compression.pruning import prunable_layers, prune_channels, prune_unstructured
from aimass.compression.quantization import DYNAMIC_INT8_BACKEND, _dynamic_int8, quantize_int8
from aimass.compression.stage import compress
from aimass.config import ModelConfig, load_config
from aimass.data.arrays import load_image_sets
from aimass.errors import ArtifactIntegrityError, ConfigError
from aimass.integrity import write_manifest
from aimass.data.preprocess import to_model_input
from aimass.models.artifact import load_model, save_exported_model
from aimass.models.card import (EXPORT_FORMAT, PROGRAM_FILE, CompressionRecord, DatasetRecord, ModelCard,
                                ModelProvenance)
from conftest import FORBID_UNPICKLING, GREY_28_TEN_CLASSES


def quantized_provenance(backend: str) -> ModelProvenance:
    return ModelProvenance(dataset=DatasetRecord(name="test", data_md5="0" * 32),
                           compression=CompressionRecord(method="quantize_int8", backend=backend))


@pytest.fixture(scope="module")
def test_images(tiny_splits_dir):
    return load_image_sets(tiny_splits_dir)[0]["test"].images


def quantized_provenance(backend: str) -> ModelProvenance:
    return ModelProvenance(dataset=DatasetRecord(name="test", data_md5="0" * 32),
                           compression=CompressionRecord(method="quantize_int8", backend=backend))


@pytest.fixture(scope="module")
def int8_teacher_dir(tiny_teacher, test_images, tiny_signature, tmp_path_factory):
    teacher = load_model(tiny_teacher[0]).module
    program, backend = quantize_int8(teacher, to_model_input(test_images[:128], tiny_signature.input_spec))
    directory = tmp_path_factory.mktemp("int8")
    save_exported_model(directory, program, ModelConfig(), tiny_signature, quantized_provenance(backend))
    return directory


@pytest.mark.parametrize("sparsity", [0.5, 0.8])
def test_global_magnitude_pruning_reaches_the_requested_sparsity(sparsity):
    model = prune_unstructured(build_classifier(ModelConfig(), GREY_28_TEN_CLASSES), sparsity)
    weights = [layer.weight for layer in prunable_layers(model)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(sparsity, abs=1e-3)


def test_channel_pruning_really_shrinks_the_network():
    slim, shape = prune_channels(build_classifier(ModelConfig(), GREY_28_TEN_CLASSES), 0.5, GREY_28_TEN_CLASSES)
    assert shape == ModelConfig(channels=(16, 32, 64), hidden_units=128)
    assert sum(p.numel() for p in slim.parameters()) < 0.3 * sum(p.numel() for p in build_classifier(ModelConfig(), GREY_28_TEN_CLASSES).parameters())
    assert slim(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_int8_model_agrees_with_the_float_model_on_most_test_images(tiny_teacher, int8_teacher_dir, test_images,
                                                                   tiny_signature):
    spec = tiny_signature.input_spec
    float_predictions = predict_probabilities(load_model(tiny_teacher[0]).module, test_images, spec).argmax(1)
    int8_predictions = predict_probabilities(load_model(int8_teacher_dir).module, test_images, spec).argmax(1)
    assert (float_predictions == int8_predictions).mean() >= 0.95


def test_static_int8_is_recorded_as_its_backend_and_stores_int8_weights(int8_teacher_dir):
    card = load_model(int8_teacher_dir).card
    assert card.compression.backend == "pt2e-x86-inductor-static-int8"
    assert (int8_teacher_dir / PROGRAM_FILE).stat().st_size < 0.3 * 1_701_578 * 4  # fp32 would be 6.8 MB


def test_int8_artifact_reloads_in_a_fresh_process_without_pickle(int8_teacher_dir, test_images, tmp_path):
    np.save(tmp_path / "images.npy", test_images[:16])
    script = (
        "import pickle, sys, numpy as np\n"
        "import torch\n"
        + FORBID_UNPICKLING +
        "from pathlib import Path\n"
        "from aimass.models.artifact import load_model\n"
        "from aimass.models.architecture import predict_probabilities\n"
        "loaded = load_model(Path(sys.argv[1]))\n"
        "images = np.load(sys.argv[2], allow_pickle=False)\n"
        "probabilities = predict_probabilities(loaded.module, images, loaded.signature.input_spec)\n"
        "print(' '.join(map(str, probabilities.argmax(1).tolist())))\n"
    )
    output = subprocess.run([sys.executable, "-c", script, str(int8_teacher_dir), str(tmp_path / "images.npy")],
                            capture_output=True, text=True, check=True).stdout.split()
    loaded = load_model(int8_teacher_dir)
    expected = predict_probabilities(loaded.module, test_images[:16], loaded.signature.input_spec).argmax(1)
    assert list(map(int, output)) == expected.tolist()


def test_an_export_archive_with_pickled_example_inputs_is_refused(tmp_path):
    model = build_classifier(ModelConfig(), GREY_28_TEN_CLASSES).eval()
    torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 28, 28),)), str(tmp_path / PROGRAM_FILE))
    card = ModelCard(**dict(quantized_provenance("float32")), weights_format=EXPORT_FORMAT, architecture=ModelConfig(),
                     input=GREY_28_TEN_CLASSES.input_spec.to_dict(), class_names=GREY_28_TEN_CLASSES.class_names)
    (tmp_path / "model.json").write_text(card.to_json())
    write_manifest(tmp_path, {})
    with pytest.raises(ArtifactIntegrityError, match="pickled example inputs"):
        load_model(tmp_path)


def test_dynamic_int8_saves_without_pickle_and_reloads(tmp_path):
    model = build_classifier(ModelConfig(), GREY_28_TEN_CLASSES).eval()
    program = _dynamic_int8(model, torch.zeros(2, 1, 28, 28))
    save_exported_model(tmp_path, program, ModelConfig(), GREY_28_TEN_CLASSES,
                        quantized_provenance(DYNAMIC_INT8_BACKEND))
    reloaded = load_model(tmp_path).module
    inputs = torch.randn(4, 1, 28, 28)
    assert torch.allclose(reloaded(inputs), model(inputs), atol=0.05)


def test_distillation_loss_without_soft_targets_is_cross_entropy():
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    loss = distillation_loss(torch.randn(8, 10), temperature=4.0, soft_weight=0.0)
    assert torch.allclose(loss(logits, labels, torch.arange(8)), torch.nn.functional.cross_entropy(logits, labels))


def test_distillation_loss_is_zero_when_the_student_copies_the_teacher():
    teacher_logits = torch.randn(8, 10)
    loss = distillation_loss(teacher_logits, temperature=2.0, soft_weight=1.0)
    assert loss(teacher_logits.clone(), torch.zeros(8, dtype=torch.long), torch.arange(8)).abs() < 1e-6


def quantized_provenance(backend: str) -> ModelProvenance:
    return ModelProvenance(dataset=DatasetRecord(name="test", data_md5="0" * 32),
                           compression=CompressionRecord(method="quantize_int8", backend=backend))


@pytest.fixture(scope="module")
def every_candidate(tiny_config, tiny_teacher, tiny_splits_dir, tmp_path_factory):
    config = load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}", "compress.distill_epochs=1"])
    output = tmp_path_factory.mktemp("every-candidate") / "candidates"
    return config, compress(config, tiny_teacher[0], tiny_splits_dir, output), output


def test_compress_builds_and_profiles_every_method_beside_the_teacher(every_candidate):
    config, profiles, output = every_candidate
    assert [p.name for p in profiles] == ["teacher", *config.compress.methods]
    assert read_profiles(output) == profiles
    by_name = {p.name: p for p in profiles}
    assert by_name["prune_unstructured"].nonzero_parameters < 0.25 * by_name["teacher"].parameters
    assert by_name["distill_int8"].size_bytes < by_name["teacher"].size_bytes / 8
    for name in config.compress.methods:
        load_model(output / name)  # every candidate verifies and loads


def test_only_candidates_that_can_pass_the_size_gate_are_timed(every_candidate):
    _, profiles, _ = every_candidate
    by_name = {p.name: p for p in profiles}
    dense = by_name["prune_unstructured"]  # zeros stored densely: as large as the teacher
    assert (dense.latency_p50_ms, dense.throughput_b64, dense.runtime) == (None, None, "not timed")
    assert dense.accuracy > 0  # still scored, for the report
    assert by_name["distill_int8"].latency_p50_ms > 0 and by_name["teacher"].latency_p50_ms > 0


@pytest.mark.parametrize("override, message", [
    ("compress.unstructured_sparsity=1.0", "compress.unstructured_sparsity: Input should be less than 1"),
    ("compress.channel_sparsity=-0.1", "compress.channel_sparsity"),
    ("compress.methods=[prune,distill]", "compress.methods.0: Input should be 'prune_unstructured'"),
    ("compress.student_channels=[64,64,256]", "must be smaller than the teacher"),
])
def test_bad_compression_settings_are_rejected_when_the_config_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_a_served_int8_model_is_compiled_and_answers_as_the_eager_one(int8_teacher_dir, test_images):
    from aimass.serving import load_served_model

    compiled = load_served_model("m", "v1", None, int8_teacher_dir, compile_quantized=True)
    eager = load_served_model("m", "v1", None, int8_teacher_dir, compile_quantized=False)
    assert type(compiled.module.program).__name__ == "OptimizedModule"
    agreement = (compiled.predict(test_images[:64]).argmax(1) == eager.predict(test_images[:64]).argmax(1)).mean()
    assert agreement >= 0.98  # int8 kernels round differently from the reference ops on a few borderline images


def test_a_process_loading_model_after_model_keeps_compiling_each_one(int8_teacher_dir, monkeypatch):
    import torch._dynamo
    from torch._dynamo.utils import counters

    from aimass.serving import load_served_model

    # dynamo compiles one function at most recompile_limit times, then runs it eagerly: were every model's forward
    # the same function, a server following releases would fall back to eager int8 (~10x slower) after a few
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2)
    torch._dynamo.reset()
    for version in range(3):
        load_served_model("m", f"v{version}", None, int8_teacher_dir, compile_quantized=True)
    assert counters["stats"]["unique_graphs"] >= 3 * 2  # batch 1, and every other batch size, for each model


def test_a_failing_technique_is_reported_with_its_reason_and_the_others_go_on(tiny_config, tiny_teacher,
                                                                             tiny_splits_dir, tmp_path, monkeypatch):
    from aimass.compression import quantization
    from aimass.compression.profiles import read_failures

    def refuse(model, calibration):
        raise RuntimeError("torch.export cannot capture this model\nmore detail")

    monkeypatch.setattr(quantization, "_static_int8", refuse)  # stands in for a model the PT2E flow cannot export
    config = load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}",
                                  "compress.methods=[quantize_int8,quantize_dynamic_int8]"])
    profiles = compress(config, tiny_teacher[0], tiny_splits_dir, tmp_path / "candidates")
    assert [p.name for p in profiles] == ["teacher", "quantize_dynamic_int8"]  # no silent fallback for the static one
    assert read_failures(tmp_path / "candidates") == {
        "quantize_int8": "RuntimeError: torch.export cannot capture this model"}
    assert not (tmp_path / "candidates" / "quantize_int8").exists()


def test_the_gate_lists_a_failed_candidate_with_its_reason():
    from aimass.gates import choose_candidate
    from aimass.compression.profiles import ModelProfile
    from aimass.config import GateConfig

    teacher = ModelProfile("teacher", "float32", 10, 10, 1000, 0.9, 1.0, 2.0, 100.0, "eager")
    choice = choose_candidate(teacher, [], GateConfig(), {"quantize_int8": "RuntimeError: no"})
    assert choice.chosen == "teacher" and choice.verdicts == {"quantize_int8": ["failed: RuntimeError: no"]}
