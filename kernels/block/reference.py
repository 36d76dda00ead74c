"""Pure-torch references of whole inverted-residual and Fused-MBConv blocks, and their CPU fallbacks.

    inverted residual   h = act0(x @ We^T + be)                       1x1 expansion C -> Hd
                        y = sep_conv_reference(h, dw, pw, ...)          dw k x k (zero padding of h),
                                                                        [SE gate], 1x1 Hd -> N, + residual
    Fused-MBConv        y = act2(pw(act1(conv_kxk(x) + b1)) + b2) [+ residual]

Each is computed as the unfused torch chain computes it, in x's dtype with the same rounding
points (h and the depthwise output are rounded to x's dtype as the separate convs write them),
in x's memory format; float64 x gives the ground truth the kernels are measured against.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from kernels.activations import activation
from kernels.block.checks import check_fused_mbconv_args, check_inverted_residual_args
from kernels.checks import DTYPES, check_gate
from kernels.sep_conv.reference import sep_conv_reference, sep_conv_se_reference

_ALL = DTYPES + (torch.float64,)


def expansion_reference(x: torch.Tensor, ex_w: torch.Tensor, ex_b: Optional[torch.Tensor], act0: str) -> torch.Tensor:
    """h = act0(conv1x1(x, ex_w) + ex_b) [B, Hd, H, W] in x's dtype: the block's expanded tensor."""
    return activation(act0)(F.conv2d(x, ex_w.reshape(ex_w.shape[0], -1, 1, 1), ex_b))


def inverted_residual_reference(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, stride: int, padding, act0: str = "none",
                                act1: str = "none", act2: str = "none", residual: Optional[torch.Tensor] = None,
                                gate: Optional[torch.Tensor] = None, act_after_gate: str = "none") -> torch.Tensor:
    """y = act2(pw(act_after_gate(act1(dw(h) + dw_b) [* gate])) + pw_b) [+ residual], h the expansion;
    gate: an optional float32 (float64 for float64 x) [B, Hd] scale of the depthwise output."""
    g = check_inverted_residual_args(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, stride, padding, act0, act1, act2,
                                     residual, act_after_gate, dtypes=_ALL)
    check_gate(gate, g.tail, x.device)
    h = expansion_reference(x, ex_w, ex_b, act0)
    return sep_conv_reference(h, dw_w, dw_b, pw_w, pw_b, stride, (g.pad_h, g.pad_w), act1, act2, residual, gate,
                              act_after_gate)


def inverted_residual_se_reference(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, w1, c1, w2, c2, stride: int, padding,
                                   act0: str, act1: str, act2: str, se_act: str, se_gate: str,
                                   act_after_gate: str = "none",
                                   residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The block with its squeeze-excitation: s = se_gate(W2 se_act(W1 mean_hw(a) + c1) + c2) from
    the channel means of a = act1(dw(h) + dw_b) (in fp32; float64 for float64 x), then
    y = act2(pw(act_after_gate(a * s)) + pw_b) [+ residual]."""
    g = check_inverted_residual_args(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, stride, padding, act0, act1, act2,
                                     residual, act_after_gate, dtypes=_ALL)
    h = expansion_reference(x, ex_w, ex_b, act0)
    return sep_conv_se_reference(h, dw_w, dw_b, pw_w, pw_b, w1, c1, w2, c2, stride, (g.pad_h, g.pad_w), act1, act2,
                                 se_act, se_gate, act_after_gate, residual)


def fused_mbconv_reference(x, conv_w, conv_b, pw_w, pw_b, stride: int, padding, act1: str = "none",
                           act2: str = "none", residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y = act2(pw(act1(conv_kxk(x) + conv_b)) + pw_b) [+ residual], the dense conv's output
    rounded to x's dtype as the unfused chain writes it."""
    g = check_fused_mbconv_args(x, conv_w, conv_b, pw_w, pw_b, stride, padding, act1, act2, residual, dtypes=_ALL)
    a = activation(act1)(F.conv2d(x, conv_w, conv_b, stride, (g.pad_h, g.pad_w)))
    y = activation(act2)(F.conv2d(a, pw_w.reshape(g.out_channels, g.hidden, 1, 1), pw_b))
    return y if residual is None else y + residual
