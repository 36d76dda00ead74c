"""Pure-torch references of the fused separable conv, of the depthwise channel mean and of the
squeeze-excitation block, and their CPU fallbacks.

y = act2(pw(act_after_gate(act1(dw(x) + b1) [* gate])) + b2) [+ residual], computed exactly as the unfused
chain (depthwise conv2d -> act1 -> [SE scale] -> act_after_gate -> 1x1 conv2d -> act2 -> add) computes it,
for any kh x kw depthwise kernel and per-axis padding (ph, pw), in x's dtype and memory
format (float64 is accepted too). Run it on float64 copies of the operands to get the ground truth the kernels are
measured against.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from kernels.activations import activation
from kernels.checks import DTYPES, check_gate, padding_pair
from kernels.sep_conv.checks import check_sep_conv_args


def sep_conv_reference(x: torch.Tensor, dw_w: torch.Tensor, dw_b: Optional[torch.Tensor],
                       pw_w: torch.Tensor, pw_b: Optional[torch.Tensor], stride: int, padding,
                       act1: str = "none", act2: str = "none",
                       residual: Optional[torch.Tensor] = None, gate: Optional[torch.Tensor] = None,
                       act_after_gate: str = "none") -> torch.Tensor:
    g = check_sep_conv_args(x, dw_w, dw_b, pw_w, pw_b, stride, padding, act1, act2, residual,
                            dtypes=DTYPES + (torch.float64,), act_after_gate=act_after_gate)
    check_gate(gate, g, x.device)
    y = activation(act1)(F.conv2d(x, dw_w, dw_b, stride, (g.pad_h, g.pad_w), groups=g.channels))
    if gate is not None:
        y = y * gate.to(y.dtype)[:, :, None, None]
    y = activation(act2)(F.conv2d(activation(act_after_gate)(y), pw_w.reshape(g.out_channels, -1, 1, 1), pw_b))
    return y if residual is None else y + residual


def dw_channel_mean_reference(x: torch.Tensor, dw_w: torch.Tensor, dw_b: Optional[torch.Tensor], stride: int,
                              padding, act1: str = "none") -> torch.Tensor:
    """float32 (float64 for float64 x) [B, C*r]: the spatial mean of act1(dw(x) + b1)."""
    a = activation(act1)(F.conv2d(x, dw_w, dw_b, stride, padding_pair(padding), groups=x.shape[1]))
    return a.to(torch.float64 if x.dtype == torch.float64 else torch.float32).mean((2, 3))


SE_GATE_FUNCTIONS = {"sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid}


def excitation_reference(means: torch.Tensor, w1: torch.Tensor, c1: torch.Tensor, w2: torch.Tensor,
                         c2: torch.Tensor, se_act: str, se_gate: str) -> torch.Tensor:
    """The excitation MLP gate(W2 se_act(W1 m + c1) + c2) on channel means [B, K], in the means' dtype."""
    d = means.dtype
    z = activation(se_act)(F.linear(means, w1.reshape(w1.shape[0], -1).to(d), c1.to(d)))
    return SE_GATE_FUNCTIONS[se_gate](F.linear(z, w2.reshape(w2.shape[0], -1).to(d), c2.to(d)))


def sep_conv_se_reference(x, dw_w, dw_b, pw_w, pw_b, w1, c1, w2, c2, stride: int, padding, act1: str, act2: str,
                          se_act: str, se_gate: str, act_after_gate: str = "none",
                          residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The squeeze-excitation block of kernels/sep_conv/sep_conv_se.py in torch: the gate from the channel
    means of act1(dw(x) + b1) (fp32; float64 for float64 x), then sep_conv_reference with it."""
    gate = excitation_reference(dw_channel_mean_reference(x, dw_w, dw_b, stride, padding, act1), w1, c1, w2, c2,
                                se_act, se_gate)
    return sep_conv_reference(x, dw_w, dw_b, pw_w, pw_b, stride, padding, act1, act2, residual, gate, act_after_gate)
