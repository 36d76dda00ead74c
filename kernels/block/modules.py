"""Whole inverted-residual blocks as modules:

    FusedInvertedResidual2d     1x1 expansion -> act0 -> depthwise kh x kw -> act1 -> 1x1 projection -> act2
                                (+ residual): MobileNetV2/V3, EfficientNet, MNASNet, MobileNetV4's IB
    FusedInvertedResidualSE2d   the same with a squeeze-excitation (and optionally an activation
                                after its gate) between the depthwise conv and the projection
    FusedMBConv2d               dense kh x kw conv -> act1 -> 1x1 projection -> act2 (+ residual):
                                EfficientNetV2's Fused-MBConv, MobileNetV4's FusedIB

BatchNorm is folded into the weights beforehand. Built like kernels/sep_conv/modules.py's FusedSepConv2d:
parameters with requires_grad=False (inference only), the arguments checked at construction, the
forward of fp32 / fp16 / bf16 inputs through one custom op of kernels/block/ops.py (so
torch.compile / torch.export keep one node; the op runs Triton on CUDA and under
TRITON_INTERPRET=1, the torch reference on CPU otherwise), float64 inputs through the torch
reference. Depthwise weights are stored tap-major and the dense conv's weight channels_last
(channels innermost), the layouts the kernels read fastest; .to() keeps them.
"""
from typing import Optional

import torch
from torch import nn

import kernels.block.ops  # noqa: F401  (registers torch.ops.dwsep.inverted_residual, ..._se, fused_mbconv)
from kernels.block.checks import check_fused_mbconv_args, check_inverted_residual_args
from kernels.block.reference import (fused_mbconv_reference, inverted_residual_reference,
                                     inverted_residual_se_reference)
from kernels.checks import DTYPES, padding_pair
from kernels.parameters import SqueezeExciteParameters, _is_tap_major, _param, _tap_major, check_flag

_ALL = DTYPES + (torch.float64,)


def _weight(name: str, w, dims: tuple) -> None:
    if not isinstance(w, torch.Tensor) or w.dim() not in dims:
        raise ValueError(f"{name} must be a {' or '.join(f'{d}-d' for d in dims)} tensor, got "
                         f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}")


class FusedInvertedResidual2d(nn.Module):
    """y = act2(pw(act1(dw(act0(ex(x) + expand_bias)) + dw_bias)) + pw_bias) [+ residual].

    expand_weight [Hd, C] or [Hd, C, 1, 1], dw_weight [Hd, 1, kh, kw] (1 <= kh, kw <= 7; zero padding
    (ph, pw) of the expanded tensor, stride 1 or 2), pw_weight [N, Hd] or [N, Hd, 1, 1]; biases
    optional. ``allow_tf32`` lets fp32 inputs use tf32 on the tensor cores (GPU).
    """

    def __init__(self, expand_weight: torch.Tensor, expand_bias: Optional[torch.Tensor], dw_weight: torch.Tensor,
                 dw_bias: Optional[torch.Tensor], pw_weight: torch.Tensor, pw_bias: Optional[torch.Tensor], *,
                 stride: int, padding, act0: str = "none", act1: str = "none", act2: str = "none",
                 allow_tf32: bool = False):
        super().__init__()
        _weight("expand_weight", expand_weight, (2, 4))
        _weight("dw_weight", dw_weight, (4,))
        _weight("pw_weight", pw_weight, (2, 4))
        check_flag(allow_tf32)
        Hd, C = expand_weight.shape[:2]
        kh, kw = dw_weight.shape[2:]
        probe = expand_weight.new_empty((1, C, kh, kw))  # the smallest input every padding accepts
        check_inverted_residual_args(probe, expand_weight, expand_bias, dw_weight, dw_bias, pw_weight, pw_bias,
                                     stride, padding, act0, act1, act2, dtypes=_ALL)
        self.expand_weight = _param(expand_weight.reshape(Hd, C))
        self.expand_bias = _param(expand_bias)
        self.dw_weight = _param(_tap_major(dw_weight))
        self.dw_bias = _param(dw_bias)
        self.pw_weight = _param(pw_weight.reshape(pw_weight.shape[0], Hd))
        self.pw_bias = _param(pw_bias)
        self.stride, self.padding, self.allow_tf32 = stride, padding_pair(padding), allow_tf32
        self.act0, self.act1, self.act2 = act0, act1, act2

    def _apply(self, fn, recurse=True):
        # model.to(memory_format=torch.channels_last) would re-stride dw_weight; restore tap-major
        super()._apply(fn, recurse)
        if not _is_tap_major(self.dw_weight):
            self.dw_weight.data = _tap_major(self.dw_weight.data)
        return self

    def weights(self) -> tuple:
        return (self.expand_weight, self.expand_bias, self.dw_weight, self.dw_bias, self.pw_weight, self.pw_bias)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dtype in DTYPES:
            return torch.ops.dwsep.inverted_residual(x, *self.weights(), self.stride, list(self.padding), self.act0,
                                                     self.act1, self.act2, residual, self.allow_tf32)
        return inverted_residual_reference(x, *self.weights(), self.stride, self.padding, self.act0, self.act1,
                                           self.act2, residual)

    def extra_repr(self) -> str:
        (Hd, C), N = self.expand_weight.shape, self.pw_weight.shape[0]
        return (f"{C}, {Hd}, {N}, kernel_size={tuple(self.dw_weight.shape[2:])}, stride={self.stride}, "
                f"padding={self.padding}, act0={self.act0}, act1={self.act1}, act2={self.act2}, "
                f"bias=({self.expand_bias is not None}, {self.dw_bias is not None}, {self.pw_bias is not None}), "
                f"allow_tf32={self.allow_tf32}")


class FusedInvertedResidualSE2d(SqueezeExciteParameters, FusedInvertedResidual2d):
    """The inverted residual block with a squeeze-excitation on the depthwise output a:
    s[b] = se_gate(W2 se_act(W1 mean_hw(a[b]) + c1) + c2), y = act2(pw(act_after_gate(a * s)) + pw_bias)
    [+ residual]. se_reduce_weight [S, Hd] (or 4-d), se_expand_weight [Hd, S] (or 4-d), their
    biases [S] / [Hd]; se_gate "sigmoid" or "hardsigmoid". One custom op,
    ``dwsep::inverted_residual_se`` (three launches on the GPU, kernels/block/inverted_residual.py).
    """

    def __init__(self, expand_weight, expand_bias, dw_weight, dw_bias, pw_weight, pw_bias, se_reduce_weight,
                 se_reduce_bias, se_expand_weight, se_expand_bias, *, se_act: str = "relu",
                 se_gate: str = "sigmoid", act_after_gate: str = "none", stride: int, padding, act0: str = "none",
                 act1: str = "none", act2: str = "none", allow_tf32: bool = False):
        super().__init__(expand_weight, expand_bias, dw_weight, dw_bias, pw_weight, pw_bias, stride=stride,
                         padding=padding, act0=act0, act1=act1, act2=act2, allow_tf32=allow_tf32)
        self._init_se(se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias, self.dw_weight.shape[0],
                      se_act, se_gate, act_after_gate)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        args = (x, *self.weights(), *self.se_weights(), self.stride)
        acts = (self.act0, self.act1, self.act2, self.se_act, self.se_gate, self.act_after_gate)
        if x.dtype in DTYPES:
            return torch.ops.dwsep.inverted_residual_se(*args, list(self.padding), *acts, residual, self.allow_tf32)
        return inverted_residual_se_reference(*args, self.padding, *acts, residual)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, se={self.se_reduce_weight.shape[0]}, se_act={self.se_act}, "
                f"se_gate={self.se_gate}, act_after_gate={self.act_after_gate}")


class FusedMBConv2d(nn.Module):
    """y = act2(pw(act1(conv(x) + conv_bias)) + pw_bias) [+ residual]: conv_weight [Hd, C, kh, kw] a
    dense conv (1 <= kh, kw <= 7, zero padding (ph, pw) of x, stride 1 or 2), pw_weight [N, Hd] or
    [N, Hd, 1, 1]; biases optional. conv_weight is stored channels_last (the kernel reads its
    channels as vectors)."""

    def __init__(self, conv_weight: torch.Tensor, conv_bias: Optional[torch.Tensor], pw_weight: torch.Tensor,
                 pw_bias: Optional[torch.Tensor], *, stride: int, padding, act1: str = "none", act2: str = "none",
                 allow_tf32: bool = False):
        super().__init__()
        _weight("conv_weight", conv_weight, (4,))
        _weight("pw_weight", pw_weight, (2, 4))
        check_flag(allow_tf32)
        Hd, C, kh, kw = conv_weight.shape
        probe = conv_weight.new_empty((1, C, kh, kw))
        check_fused_mbconv_args(probe, conv_weight, conv_bias, pw_weight, pw_bias, stride, padding, act1, act2,
                                dtypes=_ALL)
        self.conv_weight = _param(conv_weight.contiguous(memory_format=torch.channels_last))
        self.conv_bias = _param(conv_bias)
        self.pw_weight = _param(pw_weight.reshape(pw_weight.shape[0], Hd))
        self.pw_bias = _param(pw_bias)
        self.stride, self.padding, self.act1, self.act2 = stride, padding_pair(padding), act1, act2
        self.allow_tf32 = allow_tf32

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if not self.conv_weight.is_contiguous(memory_format=torch.channels_last):
            self.conv_weight.data = self.conv_weight.data.contiguous(memory_format=torch.channels_last)
        return self

    def weights(self) -> tuple:
        return self.conv_weight, self.conv_bias, self.pw_weight, self.pw_bias

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dtype in DTYPES:
            return torch.ops.dwsep.fused_mbconv(x, *self.weights(), self.stride, list(self.padding), self.act1,
                                                self.act2, residual, self.allow_tf32)
        return fused_mbconv_reference(x, *self.weights(), self.stride, self.padding, self.act1, self.act2, residual)

    def extra_repr(self) -> str:
        Hd, C, kh, kw = self.conv_weight.shape
        return (f"{C}, {Hd}, {self.pw_weight.shape[0]}, kernel_size={(kh, kw)}, stride={self.stride}, "
                f"padding={self.padding}, act1={self.act1}, act2={self.act2}, "
                f"bias=({self.conv_bias is not None}, {self.pw_bias is not None}), allow_tf32={self.allow_tf32}")
