"""Capture the real activations that reach each conv, for the on-the-spot numerics checks.

One forward pass over the example inputs with forward pre-hooks on every conv module records
the tensor each conv receives; it is attached to the conv's FX node (meta[INPUT_KEY]). A conv
module that runs more than once in that pass is reported as shared.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .graph import INPUT_KEY


def capture_conv_inputs(model: nn.Module, example_inputs: tuple, regions) -> set[int]:
    """Run the model once; attach inputs to conv nodes. Returns ids of modules called > 1 time."""
    seen: dict[int, torch.Tensor] = {}
    calls: dict[int, int] = {}

    def hook(module, args):
        calls[id(module)] = calls.get(id(module), 0) + 1
        seen[id(module)] = args[0].detach().clone()  # an in-place op later must not change it

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    for region in regions:
        for node in region.module.graph.nodes:
            if node.op == "call_module":
                module = region.module.get_submodule(node.target)
                if id(module) in seen:
                    node.meta[INPUT_KEY] = seen[id(module)]
    return {key for key, n in calls.items() if n > 1}
