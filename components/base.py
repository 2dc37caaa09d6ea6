"""The decorator every aimass stage uses to become a KFP component.

Components are lightweight Python components whose bodies only import the stage function from the installed aimass
package: the project image already holds aimass and its pinned dependencies, so nothing is pip-installed at run time
(`install_kfp_package=False`), and kfp.local runs the very same code in the current environment.

Modules that define components must not use `from __future__ import annotations`: KFP reads the annotation
objects (`Output[Dataset]`) to build the interface.
"""
from __future__ import annotations

import atexit
import functools
import gc

from kfp import dsl

from aimass.config import PROJECT_IMAGE


def _runtime_passthrough(func):
    return func


# Inside a running component (KFP sets _KFP_RUNTIME=true) kfp.dsl is trimmed to the artifact types and has no
# `component`; the stage modules are then imported for their plain functions only, so the wrapper is left undecorated.
IN_A_STEP = not hasattr(dsl, "component")
project_component = (
    _runtime_passthrough if IN_A_STEP
    else functools.partial(dsl.component, base_image=PROJECT_IMAGE, install_kfp_package=False)
)

if IN_A_STEP:
    # A step's process exits once its one call returns. Python's shutdown then runs full garbage collections over
    # every object torch, dynamo and inductor created: 1 to 2.6 s a step (docs/PERFORMANCE.md). Frozen objects are
    # skipped; the operating system takes the memory back anyway. Artifacts are written and closed by then.
    atexit.register(gc.freeze)
