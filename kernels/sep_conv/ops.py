"""The fused separable conv and the depthwise channel mean as torch.library custom ops:
``torch.ops.dwsep.fused_sep_conv`` and ``torch.ops.dwsep.sep_conv_se`` (the squeeze-excitation block).

Registered so that torch.compile, torch.export and FX treat each as one opaque op with a known
output (the fake implementations give shape, dtype and strides). Dispatch: CUDA tensors -> the
Triton launcher; CPU tensors -> the Triton launcher under TRITON_INTERPRET=1 (so tests run the
real kernel), the torch reference otherwise. Importing this module does not import Triton.
Inference only: no autograd formula is registered. ``padding`` is the per-axis pair [ph, pw]
(a schema takes no int-or-list; the launchers, references and modules also take an int).
"""
from typing import List, Optional

import torch

from kernels.checks import check_gate, check_se_weights, output_format, triton_interpreting
from kernels.launch import triton_launcher
from kernels.sep_conv.checks import check_sep_conv_args
from kernels.sep_conv.reference import sep_conv_reference, sep_conv_se_reference


@torch.library.custom_op("dwsep::fused_sep_conv", mutates_args=())
def fused_sep_conv_op(x: torch.Tensor, dw_w: torch.Tensor, dw_b: Optional[torch.Tensor], pw_w: torch.Tensor,
                      pw_b: Optional[torch.Tensor], stride: int, padding: List[int], act1: str, act2: str,
                      residual: Optional[torch.Tensor], allow_tf32: bool,
                      gate: Optional[torch.Tensor] = None, act_after_gate: str = "none") -> torch.Tensor:
    """y = act2(pw(act_after_gate(act1(dw(x) + b1) [* gate])) + b2) [+ residual], in x's memory format
    (see kernels.sep_conv.checks)."""
    padding = tuple(padding)
    launch = triton_launcher("kernels.sep_conv.fused_sep_conv", "fused_sep_conv") if (x.is_cuda or triton_interpreting()) else None
    if launch is not None:
        return launch(x, dw_w, dw_b, pw_w, pw_b, stride=stride, padding=padding, act1=act1, act2=act2,
                      residual=residual, allow_tf32=allow_tf32, gate=gate, act_after_gate=act_after_gate)
    y = sep_conv_reference(x, dw_w, dw_b, pw_w, pw_b, stride, padding, act1, act2, residual, gate, act_after_gate)
    return torch.empty_like(y, memory_format=output_format(x)).copy_(y)


@fused_sep_conv_op.register_fake
def _fused_sep_conv_fake(x, dw_w, dw_b, pw_w, pw_b, stride, padding, act1, act2, residual, allow_tf32, gate=None,
                         act_after_gate="none"):
    g = check_sep_conv_args(x, dw_w, dw_b, pw_w, pw_b, stride, tuple(padding), act1, act2, residual,
                            act_after_gate=act_after_gate)
    check_gate(gate, g, x.device)
    return torch.empty((g.batch, g.out_channels, g.out_h, g.out_w), dtype=x.dtype, device=x.device,
                       memory_format=output_format(x))


@torch.library.custom_op("dwsep::sep_conv_se", mutates_args=())
def sep_conv_se_op(x: torch.Tensor, dw_w: torch.Tensor, dw_b: Optional[torch.Tensor], pw_w: torch.Tensor,
                   pw_b: Optional[torch.Tensor], w1: torch.Tensor, c1: torch.Tensor, w2: torch.Tensor, c2: torch.Tensor,
                   stride: int, padding: List[int], act1: str, act2: str, se_act: str, se_gate: str,
                   act_after_gate: str, residual: Optional[torch.Tensor], allow_tf32: bool) -> torch.Tensor:
    """The squeeze-excitation block y = act2(pw(act_after_gate(a ⊙ s)) + b2) [+ residual] (see
    kernels.sep_conv.sep_conv_se: three launches on CUDA), in x's memory format."""
    padding = tuple(padding)
    launch = triton_launcher("kernels.sep_conv.sep_conv_se", "sep_conv_se") if (x.is_cuda or triton_interpreting()) else None
    if launch is not None:
        return launch(x, dw_w, dw_b, pw_w, pw_b, w1, c1, w2, c2, stride=stride, padding=padding, act1=act1,
                      act2=act2, se_act=se_act, se_gate=se_gate, act_after_gate=act_after_gate, residual=residual,
                      allow_tf32=allow_tf32)
    y = sep_conv_se_reference(x, dw_w, dw_b, pw_w, pw_b, w1, c1, w2, c2, stride, padding, act1, act2, se_act, se_gate,
                              act_after_gate, residual)
    return torch.empty_like(y, memory_format=output_format(x)).copy_(y)


@sep_conv_se_op.register_fake
def _sep_conv_se_fake(x, dw_w, dw_b, pw_w, pw_b, w1, c1, w2, c2, stride, padding, act1, act2, se_act, se_gate,
                      act_after_gate, residual, allow_tf32):
    g = check_sep_conv_args(x, dw_w, dw_b, pw_w, pw_b, stride, tuple(padding), act1, act2, residual,
                            act_after_gate=act_after_gate)
    check_se_weights(w1, c1, w2, c2, g.channels * g.mult)
    return torch.empty((g.batch, g.out_channels, g.out_h, g.out_w), dtype=x.dtype, device=x.device,
                       memory_format=output_format(x))
