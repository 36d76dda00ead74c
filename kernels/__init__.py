"""Triton kernels for depthwise-separable convs, their custom ops and nn.Modules.

``import kernels`` never imports Triton: the launcher is loaded on first use, as
``kernels.fused_sep_conv_triton`` (``kernels.fused_sep_conv`` is the submodule's name).
"""
from kernels.activations import ACTIVATIONS
from kernels.block_modules import FusedInvertedResidual2d, FusedInvertedResidualSE2d, FusedMBConv2d
from kernels.block_reference import fused_mbconv_reference, inverted_residual_reference, inverted_residual_se_reference
from kernels.modules import FusedSepConv2d, FusedSepConvSE2d
from kernels.reference import sep_conv_reference

__all__ = ["ACTIVATIONS", "FusedSepConv2d", "FusedSepConvSE2d", "sep_conv_reference", "fused_sep_conv_triton",
           "FusedInvertedResidual2d", "FusedInvertedResidualSE2d", "FusedMBConv2d", "inverted_residual_reference",
           "inverted_residual_se_reference", "fused_mbconv_reference"]


def __getattr__(name):
    if name == "fused_sep_conv_triton":
        from kernels.fused_sep_conv import fused_sep_conv
        return fused_sep_conv
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")
