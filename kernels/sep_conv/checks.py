"""Argument checks and output geometry of the fused separable conv.

y = act2(pw(act_after_gate(act1(dw(x) + b1) [* gate])) + b2) [+ residual]

    x         [B, C, H, W]         fp32 / fp16 / bf16, any memory format
    dw_w      [C*r, 1, kh, kw]     depthwise weight, channel multiplier r >= 1, 1 <= kh, kw <= 7
    dw_b      [C*r] or None
    pw_w      [N, C*r] or [N, C*r, 1, 1]
    pw_b      [N] or None
    residual  [B, N, Ho, Wo] or None,   Ho = (H + 2 ph - kh) // s + 1,  Wo = (W + 2 pw - kw) // s + 1

The stride s (1 or 2) is one value for both axes; the zero padding is (ph, pw) per axis, the
same on both sides of an axis (an int p means (p, p)).

Shared by the torch reference (reference.py), the Triton launchers (fused_sep_conv.py,
sep_conv_se.py), the custom ops' fake implementations (ops.py) and ``FusedSepConv2d``
(modules.py), so every path refuses the same inputs with the same message; what both kernel
families check alike is in kernels/checks.py. Only metadata (shape, dtype, device) is read, so
the checks run unchanged on fake tensors.
"""
from typing import Optional

import torch

from kernels.checks import (DTYPES, MAX_KERNEL, STRIDES, Geometry, _check_tensor, check_acts, check_input,
                            check_output, padding_pair)


def check_sep_conv_args(x, dw_w, dw_b: Optional[torch.Tensor], pw_w, pw_b: Optional[torch.Tensor],
                        stride: int, padding, act1: str, act2: str,
                        residual: Optional[torch.Tensor] = None, dtypes=DTYPES,
                        act_after_gate: str = "none") -> Geometry:
    """Validate the operands (TypeError for types/dtypes, ValueError otherwise); return the geometry."""
    check_input(x, dtypes)
    _check_tensor("dw_w", dw_w, (4,), x.dtype, x.device)
    _check_tensor("pw_w", pw_w, (2, 4), x.dtype, x.device)
    check_acts({"act1": act1, "act2": act2, "act_after_gate": act_after_gate})
    if isinstance(stride, bool) or stride not in STRIDES:
        raise ValueError(f"stride must be one of {STRIDES}, got {stride!r}")
    ph, pw = padding_pair(padding)

    B, C, H, W = x.shape
    K, one, kh, kw = dw_w.shape
    if one != 1:
        raise ValueError(f"dw_w must be [C*r, 1, kh, kw] (depthwise), got {tuple(dw_w.shape)}")
    if not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL):
        raise ValueError(f"depthwise kernel {kh}x{kw} is not supported; expected 1 <= kh, kw <= {MAX_KERNEL}")
    if C == 0 or K == 0 or K % C != 0:
        raise ValueError(f"dw_w has {K} output channels, not a positive multiple of x's {C} channels")
    if pw_w.dim() == 4 and tuple(pw_w.shape[2:]) != (1, 1):
        raise ValueError(f"pw_w must be [N, C*r] or [N, C*r, 1, 1], got {tuple(pw_w.shape)}")
    N = pw_w.shape[0]
    if pw_w.shape[1] != K or N == 0:
        raise ValueError(f"pw_w {tuple(pw_w.shape)} must be [N, {K}] (N >= 1) to follow dw_w's {K} channels")
    for name, b, n in (("dw_b", dw_b, K), ("pw_b", pw_b, N)):
        if b is not None:
            _check_tensor(name, b, (1,), x.dtype, x.device)
            if b.shape[0] != n:
                raise ValueError(f"{name} must have shape [{n}], got {tuple(b.shape)}")

    Ho, Wo = check_output(x, kh, kw, ph, pw, stride, N, residual)
    return Geometry(B, C, K // C, kh, kw, ph, pw, H, W, N, Ho, Wo, x.dtype)
