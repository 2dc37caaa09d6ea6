"""A pipeline step's own process, as KFP starts it (`_KFP_RUNTIME=true`): what it pays for before and after its
work. Every step of every run pays this, so what a stage imports is part of its contract."""
import os
import subprocess
import sys

import pytest

# What a step's process imports: the component's module, then (in the component's body) the library module that
# does the stage's work.
STAGE_MODULES = {
    "ingest": "aimass.ingestion.stage",
    "validate_data": "aimass.validation.stage",
    "augment": "aimass.augmentation.stage",
    "train": "aimass.training.stage",
    "compress": "aimass.compression.stage",
    "evaluate": "aimass.evaluation.stage",
    "promote": "aimass.evaluation.blessing",
    "deploy": "aimass.deployment.stage",
    "hpo": "aimass.training.hpo",
}
# The stages whose work needs neither torch nor scikit-learn: importing them must not pull either in.
LIGHT_STAGES = ("ingest", "validate_data", "augment", "promote")
ALL_STAGES = tuple(STAGE_MODULES)


def run_in_a_step(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "_KFP_RUNTIME": "true"})
    assert result.returncode == 0, result.stderr
    return result.stdout


HEAVY = ("torch", "sklearn", "kornia", "matplotlib")


@pytest.fixture(scope="module")
def heavy_imports() -> dict[str, set[str]]:
    """stage -> which of HEAVY importing it in a fresh step process pulls in (one process per stage)."""
    return {stage: set(run_in_a_step(f"import sys, aimass.components.{stage}, {STAGE_MODULES[stage]}\n"
                                     f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))").split())
            for stage in ALL_STAGES}


@pytest.mark.parametrize("stage", LIGHT_STAGES)
def test_a_stage_that_needs_no_torch_does_not_import_it(stage, heavy_imports):
    assert heavy_imports[stage] == set()


def test_no_stage_imports_matplotlib_before_it_draws(heavy_imports):
    assert [stage for stage, modules in heavy_imports.items() if "matplotlib" in modules] == []


def test_only_evaluate_imports_scikit_learn_up_front(heavy_imports):
    assert [stage for stage, modules in heavy_imports.items() if "sklearn" in modules] == ["evaluate"]


def test_a_step_process_skips_the_garbage_collection_of_its_shutdown():
    # atexit runs handlers last-registered first: this one, registered before the stage, sees the state after
    # the stage's own handler has run.
    output = run_in_a_step("import atexit, gc\n"
                           "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
                           "import aimass.components.promote\n")
    assert output.strip() == "frozen True"


def test_outside_a_step_nothing_is_frozen_at_exit():
    result = subprocess.run([sys.executable, "-c", "import atexit, gc\n"
                             "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
                             "import aimass.components.promote\n"], capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "_KFP_RUNTIME"})
    assert result.stdout.strip() == "frozen False"
