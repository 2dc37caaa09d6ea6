"""int8: static post-training quantization of conv and linear layers with torchao's PT2E flow (x86 inductor
quantizer, calibrated on training images), or dynamic int8 linear layers (torchao)."""
from __future__ import annotations

import torch
from torch import nn

STATIC_INT8_BACKEND = "pt2e-x86-inductor-static-int8"
DYNAMIC_INT8_BACKEND = "torchao-dynamic-int8-linear"


def quantize_int8(model: nn.Module, calibration: torch.Tensor,
                  dynamic: bool = False) -> tuple[torch.export.ExportedProgram, str]:
    """The model in int8 (static PT2E, or `dynamic` int8 of linear layers), exported with a dynamic batch
    dimension; returns the program and the backend used. A failure raises: the caller reports it."""
    if dynamic:
        return _dynamic_int8(model, calibration[:2]), DYNAMIC_INT8_BACKEND
    return _static_int8(model, calibration), STATIC_INT8_BACKEND


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=65_536)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def _static_int8(model: nn.Module, calibration: torch.Tensor) -> torch.export.ExportedProgram:
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(export_program(model.eval(), calibration[:2]).module(), quantizer)
    with torch.no_grad():
        for start in range(0, len(calibration), 256):
            prepared(calibration[start:start + 256])
    converted = convert_pt2e(prepared)
    _drop_unused_attributes(converted)
    return export_program(converted, calibration[:2])


def _drop_unused_attributes(graph_module: torch.fx.GraphModule) -> None:
    """convert_pt2e folds int8 weights into new constants but keeps the float originals as attributes; without this
    the saved program would carry both and be larger than the float model."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    for name in [name for name, _ in [*graph_module.named_parameters(), *graph_module.named_buffers()]]:
        if name not in used:
            owner_path, _, attribute = name.rpartition(".")
            owner = graph_module.get_submodule(owner_path) if owner_path else graph_module
            delattr(owner, attribute)


def _dynamic_int8(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    import copy

    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    from torchao.utils import unwrap_tensor_subclass

    quantized = copy.deepcopy(model).eval()
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())  # Linear layers only
    return export_program(unwrap_tensor_subclass(quantized), example)  # plain tensors: the archive needs no pickle
