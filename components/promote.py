"""The two ends of the gate: bless the candidate when it passed, fail the run loudly when it did not.

`bless_model` produces the artifact later stages (registry push, deployment) consume, so nothing downstream can
pick up a model the gate did not pass.
"""
import shutil
from pathlib import Path

from kfp.dsl import Input, Model, Output

from aimass.components.base import project_component
from aimass.errors import GateRejectedError
from aimass.models.card import chosen_model_dir, read_model_card


def bless(teacher_dir: Path, candidates_dir: Path, chosen: str, blessed_dir: Path) -> dict:
    """Copy the chosen model (the teacher or a candidate), verified, to `blessed_dir`; returns its model card."""
    source = chosen_model_dir(teacher_dir, candidates_dir, chosen)
    card = read_model_card(source)  # verifies every sha256 before the copy is trusted
    shutil.copytree(source, blessed_dir, dirs_exist_ok=True)
    return card


def reject(reasons: list[str]) -> None:
    raise GateRejectedError("the evaluation gate rejected the model: " + "; ".join(reasons))


@project_component
def bless_model_component(teacher: Input[Model], candidates: Input[Model], chosen: str, reasons: str,
                          blessed: Output[Model]):
    """Pass the gate-approved model on as the blessed artifact (runs only under dsl.If(passed)).

    Args:
        teacher: the trained model.
        candidates: the compress output.
        chosen: "teacher" or the candidate evaluate chose.
        reasons: JSON list of the gate's sentences.
        blessed: the chosen model's files; metadata carries the lineage, the choice and the gate's reasons.
    """
    import json
    from pathlib import Path

    from aimass.components.promote import bless

    card = bless(Path(teacher.path), Path(candidates.path), chosen, Path(blessed.path))
    blessed.metadata.update({**card["lineage"], "blessed": True, "chosen": chosen,
                             "weights_format": card["weights_format"], "gate_reasons": json.loads(reasons)})


@project_component
def reject_model_component(reasons: str):
    """Fail the run with the gate's reasons (runs only under dsl.Else)."""
    import json

    from aimass.components.promote import reject

    reject(json.loads(reasons))
