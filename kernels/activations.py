"""Activations the fused separable-conv kernels can apply, by name.

The names are the contract between the graph passes, the torch reference and the Triton
epilogues (``kernels/sep_conv/fused_sep_conv.py`` implements each name with the same formula):

    none       x
    relu       max(x, 0)
    relu6      min(max(x, 0), 6)
    silu       x * sigmoid(x)
    hardswish  x * min(max(x + 3, 0), 6) / 6
    gelu       x * (1 + erf(x / sqrt(2))) / 2      (exact erf form, nn.GELU() default)
"""
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("none", "relu", "relu6", "silu", "hardswish", "gelu")
SE_GATES = ("sigmoid", "hardsigmoid")    # the squeeze-excitation gates FusedSepConvSE2d applies

_FUNCTIONS = {
    "none": lambda x: x,
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "hardswish": F.hardswish,
    "gelu": F.gelu,
}


def activation(name: str):
    """The torch function for activation ``name`` (a ValueError names the valid choices)."""
    if name not in _FUNCTIONS:
        raise ValueError(f"unsupported activation {name!r}; expected one of {ACTIVATIONS}")
    return _FUNCTIONS[name]


def activation_name(module: nn.Module):
    """The name of an activation module (``nn.ReLU()`` -> ``"relu"``), or None when it has none.

    Lets a graph pass turn the activation module it matched into the ``act1``/``act2`` argument.
    ``nn.GELU(approximate="tanh")`` has no name: the kernels implement the exact erf form only.
    """
    if isinstance(module, nn.Identity):
        return "none"
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else None
    for cls, name in ((nn.ReLU, "relu"), (nn.ReLU6, "relu6"), (nn.SiLU, "silu"), (nn.Hardswish, "hardswish")):
        if isinstance(module, cls):
            return name
    return None
