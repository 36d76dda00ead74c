"""Whole blocks as torch.library custom ops: ``torch.ops.dwsep.inverted_residual``,
``torch.ops.dwsep.inverted_residual_se`` and ``torch.ops.dwsep.fused_mbconv``.

As in kernels/sep_conv/ops.py (the separable conv's ops): torch.compile, torch.export and FX see each as one opaque op whose fake
implementation gives the output's shape, dtype and strides (x's memory format). Dispatch: CUDA
tensors -> the Triton launcher; CPU tensors -> the Triton launcher under TRITON_INTERPRET=1 (so
tests run the real kernel), the torch reference otherwise. Importing this module does not import
Triton. Inference only. ``padding`` is the per-axis pair [ph, pw].
"""
from typing import List, Optional

import torch

from kernels.block.checks import check_fused_mbconv_args, check_inverted_residual_args
from kernels.block.reference import (fused_mbconv_reference, inverted_residual_reference,
                                     inverted_residual_se_reference)
from kernels.checks import check_gate, check_se_weights, output_format, triton_interpreting
from kernels.launch import triton_launcher

# op -> (its kernel module, its Triton launcher)
_LAUNCHERS = {"inverted_residual": ("kernels.block.inverted_residual", "inverted_residual"),
              "inverted_residual_se": ("kernels.block.inverted_residual", "inverted_residual_se"),
              "fused_mbconv": ("kernels.block.fused_mbconv", "fused_mbconv")}


def _launch(op: str, x: torch.Tensor):
    """The Triton launcher for this call, or None for the torch reference."""
    return triton_launcher(*_LAUNCHERS[op]) if (x.is_cuda or triton_interpreting()) else None


def _in_format(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(y, memory_format=output_format(x)).copy_(y)


def _empty_output(x: torch.Tensor, g) -> torch.Tensor:
    return torch.empty((g.batch, g.out_channels, g.out_h, g.out_w), dtype=x.dtype, device=x.device,
                       memory_format=output_format(x))


@torch.library.custom_op("dwsep::inverted_residual", mutates_args=())
def inverted_residual_op(x: torch.Tensor, ex_w: torch.Tensor, ex_b: Optional[torch.Tensor], dw_w: torch.Tensor,
                         dw_b: Optional[torch.Tensor], pw_w: torch.Tensor, pw_b: Optional[torch.Tensor], stride: int,
                         padding: List[int], act0: str, act1: str, act2: str, residual: Optional[torch.Tensor],
                         allow_tf32: bool, gate: Optional[torch.Tensor] = None,
                         act_after_gate: str = "none") -> torch.Tensor:
    """y = act2(pw(act_after_gate(act1(dw(act0(ex(x) + ex_b)) + dw_b) [* gate])) + pw_b) [+ residual]."""
    padding = tuple(padding)
    launch = _launch("inverted_residual", x)
    if launch is not None:
        return launch(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, stride=stride, padding=padding, act0=act0, act1=act1,
                      act2=act2, residual=residual, gate=gate, act_after_gate=act_after_gate, allow_tf32=allow_tf32)
    return _in_format(inverted_residual_reference(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, stride, padding, act0, act1,
                                                  act2, residual, gate, act_after_gate), x)


@inverted_residual_op.register_fake
def _inverted_residual_fake(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, stride, padding, act0, act1, act2, residual,
                            allow_tf32, gate=None, act_after_gate="none"):
    g = check_inverted_residual_args(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, stride, tuple(padding), act0, act1, act2,
                                     residual, act_after_gate)
    check_gate(gate, g.tail, x.device)
    return _empty_output(x, g)


@torch.library.custom_op("dwsep::inverted_residual_se", mutates_args=())
def inverted_residual_se_op(x: torch.Tensor, ex_w: torch.Tensor, ex_b: Optional[torch.Tensor], dw_w: torch.Tensor,
                            dw_b: Optional[torch.Tensor], pw_w: torch.Tensor, pw_b: Optional[torch.Tensor],
                            w1: torch.Tensor, c1: torch.Tensor, w2: torch.Tensor, c2: torch.Tensor, stride: int,
                            padding: List[int], act0: str, act1: str, act2: str, se_act: str, se_gate: str,
                            act_after_gate: str, residual: Optional[torch.Tensor], allow_tf32: bool) -> torch.Tensor:
    """The block with its squeeze-excitation (see kernels.block.reference.inverted_residual_se_reference)."""
    padding = tuple(padding)
    launch = _launch("inverted_residual_se", x)
    if launch is not None:
        return launch(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, w1, c1, w2, c2, stride=stride, padding=padding,
                      act0=act0, act1=act1, act2=act2, se_act=se_act, se_gate=se_gate,
                      act_after_gate=act_after_gate, residual=residual, allow_tf32=allow_tf32)
    return _in_format(inverted_residual_se_reference(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, w1, c1, w2, c2, stride,
                                                     padding, act0, act1, act2, se_act, se_gate, act_after_gate,
                                                     residual), x)


@inverted_residual_se_op.register_fake
def _inverted_residual_se_fake(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, w1, c1, w2, c2, stride, padding, act0, act1,
                               act2, se_act, se_gate, act_after_gate, residual, allow_tf32):
    g = check_inverted_residual_args(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, stride, tuple(padding), act0, act1, act2,
                                     residual, act_after_gate)
    check_se_weights(w1, c1, w2, c2, g.hidden)
    return _empty_output(x, g)


@torch.library.custom_op("dwsep::fused_mbconv", mutates_args=())
def fused_mbconv_op(x: torch.Tensor, conv_w: torch.Tensor, conv_b: Optional[torch.Tensor], pw_w: torch.Tensor,
                    pw_b: Optional[torch.Tensor], stride: int, padding: List[int], act1: str, act2: str,
                    residual: Optional[torch.Tensor], allow_tf32: bool) -> torch.Tensor:
    """y = act2(pw(act1(conv_kxk(x) + conv_b)) + pw_b) [+ residual]."""
    padding = tuple(padding)
    launch = _launch("fused_mbconv", x)
    if launch is not None:
        return launch(x, conv_w, conv_b, pw_w, pw_b, stride=stride, padding=padding, act1=act1, act2=act2,
                      residual=residual, allow_tf32=allow_tf32)
    return _in_format(fused_mbconv_reference(x, conv_w, conv_b, pw_w, pw_b, stride, padding, act1, act2, residual), x)


@fused_mbconv_op.register_fake
def _fused_mbconv_fake(x, conv_w, conv_b, pw_w, pw_b, stride, padding, act1, act2, residual, allow_tf32):
    return _empty_output(x, check_fused_mbconv_args(x, conv_w, conv_b, pw_w, pw_b, stride, tuple(padding), act1, act2,
                                                    residual))
