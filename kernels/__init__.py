"""Triton kernels for depthwise-separable CNNs, their custom ops and nn.Modules, in two families:

    kernels/sep_conv/   dw + pw (+ SE) in one op: FusedSepConv2d, FusedSepConvSE2d
    kernels/block/      whole blocks in one op: FusedInvertedResidual2d, FusedInvertedResidualSE2d,
                        FusedMBConv2d (built on the first family: a block's tail is a separable conv)

and what both use at this level: activations.py (the activation names and formulas), checks.py
(the argument checks they share), tiles.py (Triton device functions), parameters.py (the modules'
parameters), launch.py (the custom ops' way to a launcher), hopper.py (compiling for sm_90
without a GPU), disk.py (JSON files written whole).

``import kernels`` never imports Triton: the launcher is loaded on first use, as
``kernels.fused_sep_conv_triton`` (``kernels.sep_conv.fused_sep_conv`` is the submodule's name).
No module below imports this file's names: each imports the exact submodule it needs.
"""
from kernels.activations import ACTIVATIONS
from kernels.block.modules import FusedInvertedResidual2d, FusedInvertedResidualSE2d, FusedMBConv2d
from kernels.block.reference import fused_mbconv_reference, inverted_residual_reference, inverted_residual_se_reference
from kernels.sep_conv.modules import FusedSepConv2d, FusedSepConvSE2d
from kernels.sep_conv.reference import sep_conv_reference

__all__ = ["ACTIVATIONS", "FusedSepConv2d", "FusedSepConvSE2d", "sep_conv_reference", "fused_sep_conv_triton",
           "FusedInvertedResidual2d", "FusedInvertedResidualSE2d", "FusedMBConv2d", "inverted_residual_reference",
           "inverted_residual_se_reference", "fused_mbconv_reference"]


def __getattr__(name):
    if name == "fused_sep_conv_triton":
        from kernels.sep_conv.fused_sep_conv import fused_sep_conv
        return fused_sep_conv
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")
