"""The compression-aware choice: the smallest candidate within every limit, else the teacher, with reasons."""
from aimass.compression.profiles import ModelProfile
from aimass.gates import choose_candidate
from aimass.config import GateConfig

GATE = GateConfig(max_accuracy_drop=0.005, min_size_ratio=4.0, max_latency_ratio=1.0)


def profile(name, accuracy=0.92, size_bytes=1_000_000, latency=1.0):
    return ModelProfile(name=name, backend="float32", parameters=1, nonzero_parameters=1, size_bytes=size_bytes,
                        accuracy=accuracy, latency_p50_ms=latency, latency_p99_ms=latency, throughput_b64=1.0,
                        runtime="eager")


TEACHER = profile("teacher", accuracy=0.92, size_bytes=8_000_000, latency=1.0)


def test_the_smallest_qualifying_candidate_is_chosen():
    choice = choose_candidate(TEACHER, [profile("a", size_bytes=2_000_000), profile("b", size_bytes=500_000)], GATE)
    assert choice.chosen == "b"
    assert choice.verdicts["b"][0].startswith("chosen") and choice.verdicts["a"][0].startswith("qualifies")


def test_a_candidate_losing_too_much_accuracy_is_rejected_with_the_drop():
    choice = choose_candidate(TEACHER, [profile("lossy", accuracy=0.91)], GATE)
    assert choice.chosen == "teacher"
    assert choice.verdicts["lossy"] == ["rejected: accuracy drop 1.00 points exceeds 0.50"]


def test_a_candidate_not_small_enough_is_rejected_with_its_ratio():
    choice = choose_candidate(TEACHER, [profile("big", size_bytes=4_000_000)], GATE)
    assert choice.verdicts["big"] == ["rejected: only 2.00x smaller, needs 4.00x"]


def test_a_candidate_slower_than_the_teacher_is_rejected():
    choice = choose_candidate(TEACHER, [profile("slow", latency=1.5)], GATE)
    assert choice.chosen == "teacher" and "1.50x the teacher's" in choice.verdicts["slow"][0]


def test_every_broken_limit_is_listed():
    choice = choose_candidate(TEACHER, [profile("bad", accuracy=0.5, size_bytes=8_000_000, latency=3.0)], GATE)
    assert len(choice.verdicts["bad"]) == 3


def test_the_teacher_is_kept_when_there_are_no_candidates():
    assert choose_candidate(TEACHER, [], GATE).chosen == "teacher"
