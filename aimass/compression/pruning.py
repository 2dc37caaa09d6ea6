"""Pruning: global magnitude pruning of conv/linear weights (torch.nn.utils.prune), and structured pruning of
channels, hidden units and residual groups through torch-pruning's dependency graph, the output layer kept."""
from __future__ import annotations

import torch
from torch import nn

from aimass.config import ModelConfig
from aimass.models.architecture import CNNClassifier, Signature, build_classifier, example_input


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


def prune_unstructured(model: nn.Module, sparsity: float) -> nn.Module:
    """Zero the globally smallest-magnitude `sparsity` share of conv/linear weights; masks stay until `finalize`."""
    import torch.nn.utils.prune as prune

    prune.global_unstructured([(layer, "weight") for layer in prunable_layers(model)],
                              pruning_method=prune.L1Unstructured, amount=sparsity)
    return model


def finalize_unstructured(model: nn.Module) -> nn.Module:
    import torch.nn.utils.prune as prune

    for layer in prunable_layers(model):
        prune.remove(layer, "weight")  # bake the mask into the weight tensor
    return model


_PROJECTION_NAMES = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))


def attention_projections(model: nn.Module) -> list[tuple[nn.Module, tuple[nn.Linear, nn.Linear, nn.Linear]]]:
    """Multi-head attention modules (transformers' naming) with their query, key and value projections: pruned by
    whole heads, so the per-head width the attention reshapes by stays valid."""
    found = []
    for module in model.modules():
        for names in _PROJECTION_NAMES:
            if hasattr(module, "num_attention_heads") and all(isinstance(getattr(module, name, None), nn.Linear)
                                                              for name in names):
                found.append((module, tuple(getattr(module, name) for name in names)))
    return found


def prune_channels(model: nn.Module, sparsity: float, signature: Signature) -> tuple[nn.Module, ModelConfig | None]:
    """Remove the `sparsity` share of channels/hidden units with the smallest L2 norm (the output layer kept).

    torch-pruning traces the model into a dependency graph, so layers coupled by a residual addition or a
    concatenation lose the same channels, and attention loses whole heads. Returns the pruned model and, for the built-in CNN, its new widths (it
    is rebuilt as a plain CNN of that shape); any other architecture returns None: its layers no longer match
    any config, and it is saved as an exported program.
    """
    import torch_pruning as tp

    example = example_input(signature)
    classifier = prunable_layers(model)[-1]
    attention = attention_projections(model)
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=sparsity, ignored_layers=[classifier],
                                  num_heads={projection: module.num_attention_heads
                                             for module, projections in attention for projection in projections},
                                  prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=sparsity)
    pruner.step()
    for module, (query, _, _) in attention:
        module.num_attention_heads = pruner.num_heads[query]  # whole heads went; each keeps its width
    with torch.no_grad():
        model.eval()(example)  # a graph torch-pruning could not follow fails here, not in a server
    if not isinstance(model, CNNClassifier):
        return model, None
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    hidden = prunable_layers(model)[-2]
    shape = ModelConfig(channels=tuple(conv.out_channels for conv in convs), hidden_units=hidden.out_features)
    rebuilt = build_classifier(shape, signature)  # a plain network of the new shape, so it saves and loads like any other
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt, shape
