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

Shared by the torch reference, the Triton launcher, the custom op's fake implementation and
``FusedSepConv2d``, so every path refuses the same inputs with the same message. Only metadata
(shape, dtype, device) is read, so the checks run unchanged on fake tensors.
"""
import os
from typing import NamedTuple, Optional

import torch

from kernels.activations import ACTIVATIONS

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_KERNEL = 7     # 1 <= kh, kw <= MAX_KERNEL: the tap loops are unrolled over a row (kw) of the kernel
STRIDES = (1, 2)


class Geometry(NamedTuple):
    batch: int
    channels: int      # C
    mult: int          # r: depthwise channel multiplier, K = C * r
    kh: int            # kernel height
    kw: int            # kernel width
    pad_h: int         # zero padding above and below
    pad_w: int         # zero padding left and right
    height: int
    width: int
    out_channels: int  # N
    out_h: int
    out_w: int
    dtype: torch.dtype


def out_size(size: int, ksize: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - ksize) // stride + 1


def padding_pair(padding) -> tuple:
    """(ph, pw) of a padding given as an int p (both axes) or a pair; ValueError otherwise."""
    pads = (padding, padding) if not isinstance(padding, (tuple, list)) else tuple(padding)
    if len(pads) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in pads):
        raise ValueError(f"padding must be an int >= 0 or a pair (ph, pw) of them, got {padding!r}")
    return pads


def _check_tensor(name: str, t, ndims, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dims, got shape {tuple(t.shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but x has {dtype}; all operands must share x's dtype")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but x is on {device}")


def check_sep_conv_args(x, dw_w, dw_b: Optional[torch.Tensor], pw_w, pw_b: Optional[torch.Tensor],
                        stride: int, padding, act1: str, act2: str,
                        residual: Optional[torch.Tensor] = None, dtypes=DTYPES,
                        act_after_gate: str = "none") -> Geometry:
    """Validate the operands (TypeError for types/dtypes, ValueError otherwise); return the geometry."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise TypeError(f"x has dtype {x.dtype}; supported: {', '.join(str(d) for d in dtypes)}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [B, C, H, W], got shape {tuple(x.shape)}")
    _check_tensor("dw_w", dw_w, (4,), x.dtype, x.device)
    _check_tensor("pw_w", pw_w, (2, 4), x.dtype, x.device)
    for act_name, act in (("act1", act1), ("act2", act2), ("act_after_gate", act_after_gate)):
        if act not in ACTIVATIONS:
            raise ValueError(f"{act_name}={act!r} is not supported; expected one of {ACTIVATIONS}")
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


def check_output(x, kh: int, kw: int, ph: int, pw: int, stride: int, N: int, residual) -> tuple[int, int]:
    """(Ho, Wo) of a kh x kw conv of x [B, C, H, W] with padding (ph, pw) and `stride`, checked
    non-empty, and the residual (or None) checked to be the [B, N, Ho, Wo] output's shape."""
    B, _, H, W = x.shape
    Ho, Wo = out_size(H, kh, stride, ph), out_size(W, kw, stride, pw)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"input {H}x{W} is smaller than the {kh}x{kw} kernel with padding {(ph, pw)}")
    if residual is not None:
        _check_tensor("residual", residual, (4,), x.dtype, x.device)
        if tuple(residual.shape) != (B, N, Ho, Wo):
            raise ValueError(f"residual must have the output's shape {(B, N, Ho, Wo)}, got {tuple(residual.shape)}")
    return Ho, Wo


def check_gate(gate: Optional[torch.Tensor], g: Geometry, device: torch.device) -> None:
    """A squeeze-excitation gate is a float32 [B, C*r] tensor on x's device (or None; float64
    goes with float64 x, for references)."""
    if gate is None:
        return
    if not isinstance(gate, torch.Tensor):
        raise TypeError(f"gate must be a torch.Tensor, got {type(gate).__name__}")
    if gate.dtype != (torch.float64 if g.dtype == torch.float64 else torch.float32):
        raise TypeError(f"gate must be float32 (the kernel scales in fp32), got {gate.dtype}")
    if tuple(gate.shape) != (g.batch, g.channels * g.mult):
        raise ValueError(f"gate must have shape {(g.batch, g.channels * g.mult)}, got {tuple(gate.shape)}")
    if gate.device != device:
        raise ValueError(f"gate is on {gate.device} but x is on {device}")


def check_se_weights(w1: torch.Tensor, c1: torch.Tensor, w2: torch.Tensor, c2: torch.Tensor, K: int) -> int:
    """The squeeze-excitation weights map K -> S -> K channels: W1 [S, K], c1 [S], W2 [K, S], c2 [K]
    (1x1-conv shapes accepted); returns S."""
    squeeze = w1.shape[0]
    if w1.numel() != squeeze * K or w2.numel() != K * squeeze or w2.shape[0] != K:
        raise ValueError(f"squeeze-excitation weights {tuple(w1.shape)} / {tuple(w2.shape)} do not map "
                         f"{K} -> S -> {K} channels")
    for name, b, n in (("se_reduce_bias", c1, squeeze), ("se_expand_bias", c2, K)):
        if not isinstance(b, torch.Tensor) or tuple(b.shape) != (n,):
            raise ValueError(f"{name} must be a [{n}] tensor")
    return squeeze


def triton_interpreting() -> bool:
    """True when TRITON_INTERPRET asks for Triton's CPU interpreter (read as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")


def output_format(x: torch.Tensor) -> torch.memory_format:
    """The fused op's output layout, chosen as a conv chooses it: x's own (NHWC or NCHW)."""
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
