"""bless: the gate's choice, verified, becomes the blessed artifact; nothing is blessed from altered files."""
import shutil

import pytest

from aimass.evaluation.blessing import bless
from aimass.errors import ArtifactIntegrityError
from aimass.models.card import CARD_FILE, TEACHER, WEIGHTS_FILE


@pytest.fixture
def teacher_copy(tiny_teacher, tmp_path):
    return shutil.copytree(tiny_teacher[0], tmp_path / "teacher")


def test_the_chosen_teacher_is_copied_whole_and_its_card_returned(teacher_copy, tmp_path):
    card = bless(teacher_copy, tmp_path / "candidates", TEACHER, tmp_path / "blessed")
    assert card.to_json() == (teacher_copy / CARD_FILE).read_text()  # the card as written, read back whole
    assert sorted(path.name for path in (tmp_path / "blessed").iterdir()) == sorted(
        path.name for path in teacher_copy.iterdir())


def test_a_chosen_candidate_is_taken_from_the_candidates(teacher_copy, tmp_path):
    shutil.copytree(teacher_copy, tmp_path / "candidates" / "distill")
    bless(tmp_path / "no-teacher-here", tmp_path / "candidates", "distill", tmp_path / "blessed")
    assert (tmp_path / "blessed" / WEIGHTS_FILE).is_file()


def test_weights_that_differ_from_the_manifest_are_not_blessed(teacher_copy, tmp_path):
    weights = teacher_copy / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArtifactIntegrityError, match=WEIGHTS_FILE):
        bless(teacher_copy, tmp_path / "candidates", TEACHER, tmp_path / "blessed")
    assert not (tmp_path / "blessed").exists()
