"""The typed model card: one reader and one writer for model.json, which still reads the cards earlier aimass wrote."""
import json
from pathlib import Path

import pytest

from aimass.errors import ArtifactIntegrityError
from aimass.models.card import ModelCard

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "model_cards"


@pytest.mark.parametrize("name", ["teacher-format2.json", "int8-candidate-format2.json"])
def test_a_card_written_before_the_card_was_typed_loads_and_writes_back_byte_for_byte(name):
    text = (FIXTURES / name).read_text()
    assert ModelCard.parse(text, name).to_json() == text


def test_a_teacher_card_reads_as_its_fields():
    card = ModelCard.parse((FIXTURES / "teacher-format2.json").read_text(), "teacher")
    assert card.dataset.name == "fashion-mnist" and len(card.class_names) == 10
    assert card.input_spec.shape == (1, 28, 28) and card.architecture.is_built_in
    assert not card.is_quantized and card.compression is None
    assert card.validation_accuracy == card.training["best_validation_accuracy"]
    assert card.validation_accuracy_of == "this model"


def test_a_quantized_candidate_reports_its_teachers_validation_accuracy_as_its_teachers():
    card = ModelCard.parse((FIXTURES / "int8-candidate-format2.json").read_text(), "candidate")
    assert card.is_quantized and card.compression.method == "quantize_int8"
    assert card.training is None and card.validation_accuracy == card.teacher_training["best_validation_accuracy"]
    assert card.validation_accuracy_of == "its teacher"


def test_a_candidate_carries_its_teachers_data_and_lineage_and_its_own_compression():
    teacher = ModelCard.parse((FIXTURES / "teacher-format2.json").read_text(), "teacher")
    candidate = teacher.for_candidate("prune_channels", "float32")
    assert (candidate.dataset, candidate.lineage, candidate.data_profile) == (teacher.dataset, teacher.lineage,
                                                                              teacher.data_profile)
    assert candidate.training is None and candidate.teacher_training == teacher.training
    assert (candidate.compression.method, candidate.compression.backend) == ("prune_channels", "float32")


def test_a_card_of_another_format_is_refused_saying_what_to_do():
    values = json.loads((FIXTURES / "teacher-format2.json").read_text())
    with pytest.raises(ArtifactIntegrityError, match="card format 1, this aimass reads 2: train the model again"):
        ModelCard.parse(json.dumps({**values, "format_version": 1}), "old/model.json")


def test_a_misspelt_or_missing_field_is_refused_naming_it():
    values = json.loads((FIXTURES / "teacher-format2.json").read_text())
    values["linage"] = values.pop("lineage")
    with pytest.raises(ArtifactIntegrityError, match="linage"):
        ModelCard.parse(json.dumps(values), "model.json")
    del values["class_names"]
    with pytest.raises(ArtifactIntegrityError, match="class_names"):
        ModelCard.parse(json.dumps(values), "model.json")


def test_text_that_is_not_json_is_refused_naming_the_file():
    with pytest.raises(ArtifactIntegrityError, match="broken/model.json is not a JSON model card"):
        ModelCard.parse("{not json", "broken/model.json")
