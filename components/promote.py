"""bless_model and reject_model: the KFP wrappers of aimass/evaluation/blessing.py (the two ends of the gate)."""
from kfp.dsl import Input, Model, Output

from aimass.components.base import project_component


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

    from aimass.evaluation.blessing import bless

    card = bless(Path(teacher.path), Path(candidates.path), chosen, Path(blessed.path))
    blessed.metadata.update({**card.lineage, "blessed": True, "chosen": chosen,
                             "weights_format": card.weights_format, "gate_reasons": json.loads(reasons)})


@project_component
def reject_model_component(reasons: str):
    """Fail the run with the gate's reasons (runs only under dsl.Else)."""
    import json

    from aimass.evaluation.blessing import reject

    reject(json.loads(reasons))
