"""The two ends of the gate: bless the candidate when it passed, fail the run loudly when it did not.

`bless_model` produces the artifact later stages (registry push, deployment) consume, so nothing downstream can
pick up a model the gate did not pass.
"""
import shutil
from pathlib import Path

from kfp.dsl import Input, Model, Output

from aimass.components.base import project_component
from aimass.errors import GateRejectedError
from aimass.model_artifact import load_model


def bless(candidate_dir: Path, blessed_dir: Path) -> dict:
    """Copy a verified candidate to `blessed_dir` and return its model card."""
    card = load_model(candidate_dir).card  # verifies every sha256 before the copy is trusted
    shutil.copytree(candidate_dir, blessed_dir, dirs_exist_ok=True)
    return card


def reject(reasons: list[str]) -> None:
    raise GateRejectedError("the evaluation gate rejected the model: " + "; ".join(reasons))


@project_component
def bless_model_component(candidate: Input[Model], reasons: str, blessed: Output[Model]):
    """Pass a gate-approved model on as the blessed artifact (runs only under dsl.If(passed)).

    Args:
        candidate: the trained model.
        reasons: JSON list of the gate's sentences.
        blessed: the same files; metadata carries the lineage and the gate's reasons.
    """
    import json
    from pathlib import Path

    from aimass.components.promote import bless

    card = bless(Path(candidate.path), Path(blessed.path))
    blessed.metadata.update({**card["lineage"], "blessed": True, "gate_reasons": json.loads(reasons)})


@project_component
def reject_model_component(reasons: str):
    """Fail the run with the gate's reasons (runs only under dsl.Else)."""
    import json

    from aimass.components.promote import reject

    reject(json.loads(reasons))
