"""Compile the training pipeline to the YAML the Kubeflow UI uploads."""
from pathlib import Path

from kfp import compiler

from aimass.config import AimassConfig
from aimass.pipelines.training import build_training_pipeline

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPILED_PIPELINE = REPO_ROOT / "pipelines" / "compiled" / "training_pipeline.yaml"


def compile_pipeline(config: AimassConfig, output: Path = COMPILED_PIPELINE) -> Path:
    """Write the pipeline spec for `config` (its defaults and cluster settings) to `output`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_training_pipeline(config), package_path=str(output))
    return output
