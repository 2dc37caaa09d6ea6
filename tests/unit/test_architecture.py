"""Which part of aimass may import which: the layers contract in pyproject.toml ([tool.importlinter]), checked by
import-linter on the layout pip installs, where components/ and pipelines/ are aimass.components and
aimass.pipelines (the source tree alone hides them from any import graph)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.fixture
def installed_layout(tmp_path: Path) -> Path:
    """The aimass package as setuptools installs it (pyproject.toml's package-dir), copied under `tmp_path`."""
    package = tmp_path / "aimass"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "aimass", package, ignore=ignore)
    shutil.copytree(ROOT / "components", package / "components", ignore=ignore)
    shutil.copytree(ROOT / "pipelines", package / "pipelines", ignore=ignore)
    return tmp_path


def lint_imports(layout: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH puts the copy ahead of the editable install, whose finder maps aimass back to the source tree.
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=layout,
                          env={"PYTHONPATH": str(layout), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=120)


def test_the_installed_layout_keeps_the_layers_contract(installed_layout):
    linted = lint_imports(installed_layout)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "1 kept, 0 broken" in linted.stdout


def test_a_library_module_importing_a_stage_breaks_the_contract(installed_layout):
    registry = installed_layout / "aimass" / "registry.py"
    # A function-local import counts as much as one at the top of the module.
    registry.write_text(registry.read_text() + "\n\ndef _uses_a_stage():\n    from aimass.components.train import "
                                                "train_component\n    return train_component\n")
    linted = lint_imports(installed_layout)
    assert linted.returncode != 0
    assert "aimass.registry is not allowed to import aimass.components" in linted.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(installed_layout):
    preprocess = installed_layout / "aimass" / "data" / "preprocess.py"
    preprocess.write_text(preprocess.read_text() + "\n\ndef _loads_a_model():\n    from aimass.models.artifact import "
                                                    "load_model\n    return load_model\n")
    linted = lint_imports(installed_layout)
    assert linted.returncode != 0
    assert "aimass.data is not allowed to import aimass.models" in linted.stdout


def test_a_new_module_has_to_take_a_place_in_the_layers(installed_layout):
    (installed_layout / "aimass" / "newconcern.py").write_text('"""Not named in the contract yet."""\n')
    linted = lint_imports(installed_layout)
    assert linted.returncode != 0
    assert "aimass.newconcern" in linted.stdout
