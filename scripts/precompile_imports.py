#!/usr/bin/env python3
"""Write bytecode into the image for the dependency modules aimass's steps and server import, and for no others.

pip compiles every module it installs; in this image that is 476 MB of .pyc, most of it for modules nothing imports
(transformers' hundreds of model families, test suites). Without bytecode a step's imports take twice as long (26 s
against 10 s here for the stages' dependencies), so the Dockerfile installs with --no-compile and then imports
what the stages import, letting Python write exactly that bytecode. A module missing here still works; it is
compiled in memory each time a container imports it (unless the source layer's pass, which imports every aimass
module, reaches it). tests/k8s/test_manifests.py checks this list covers every dependency package aimass imports.

Usage (in the image build; each writes .pyc beside the modules it imports):
  python scripts/precompile_imports.py             # the dependencies' layer: MODULES
  python scripts/precompile_imports.py --project   # the source's layer: every aimass module, and what they import
"""
import argparse
import importlib
import pkgutil
import sys

# Each stage's dependencies, deep enough to reach the modules its functions import lazily.
MODULES = (
    "torch", "torch._dynamo", "torch._inductor.compile_fx", "torch._inductor.codecache", "torch.export",
    "torch.distributed", "torch.nn.parallel", "torch.nn.utils.prune", "torch.utils.data",
    "torchao.quantization", "torchao.quantization.pt2e.quantize_pt2e",
    "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer", "torch_pruning",
    "transformers", "transformers.models.auto.modeling_auto", "transformers.models.auto.configuration_auto",
    "transformers.modeling_utils", "safetensors.torch", "huggingface_hub",
    "kfp.dsl", "kfp.compiler", "kfp.local", "kfp.kubernetes", "kubernetes.client", "kubernetes.config",
    "dvc.repo", "dvc.exceptions", "dvc_s3",
    "great_expectations", "great_expectations.data_context.types.base",
    "great_expectations.expectations.row_conditions",
    "kornia.augmentation", "sklearn.metrics", "sklearn.model_selection", "scipy.spatial.distance", "optuna",
    "numpy", "pandas", "PIL.Image", "matplotlib.figure", "matplotlib.backends.backend_agg",
    "minio", "urllib3", "httpx", "docker", "pydantic", "annotated_types", "yaml", "orjson",
    "rich.progress", "rich.table", "rich.live",
    "starlette.applications", "starlette.routing", "uvicorn", "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "prometheus_client", "prometheus_client.parser",
    "grafana_foundation_sdk.builders.dashboard", "grafana_foundation_sdk.builders.timeseries",
    "grafana_foundation_sdk.builders.prometheus",
)


def project_modules() -> list[str]:
    """Every module of the installed aimass package, less `__main__` entry points (importing one runs it)."""
    import aimass

    return ["aimass", *(module.name for module in pkgutil.walk_packages(aimass.__path__, "aimass.")
                        if not module.name.endswith(".__main__"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", action="store_true", help="aimass's own modules instead of MODULES")
    names = project_modules() if parser.parse_args().project else MODULES
    sys.dont_write_bytecode = False
    for name in names:
        importlib.import_module(name)
    print(f"bytecode written for {len(names)} modules and the {len(sys.modules)} they import")


if __name__ == "__main__":
    main()
