"""Argument checks both kernel families share, and the geometry of the dw + pw part.

    DTYPES, MAX_KERNEL, STRIDES   what the kernels accept: fp32 / fp16 / bf16, 1 <= kh, kw <= 7, stride 1 or 2
    Geometry                      the dw + pw problem's sizes (a whole block's tail is one too:
                                  kernels.block.checks.BlockGeometry.tail)
    padding_pair, out_size, check_output, _check_tensor
                                  padding (ph, pw), output size, the residual's shape, an operand's dims / dtype / device
    check_input, check_acts       the activation x [B, C, H, W] of a supported dtype; activation names
    check_gate, check_se_weights  a squeeze-excitation's gate [B, K] and weights K -> S -> K
    triton_interpreting, output_format
                                  TRITON_INTERPRET as Triton reads it; the fused ops' output layout (x's own)

Each family checks its own operands on top of these: kernels/sep_conv/checks.py (the separable
conv), kernels/block/checks.py (whole blocks), so that the torch references, the Triton launchers,
the custom ops' fake implementations and the modules refuse the same inputs with the same message.
Only metadata (shape, dtype, device) is read, so the checks run unchanged on fake tensors.
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


def check_input(x, dtypes) -> None:
    """x is a 4-D [B, C, H, W] tensor of one of `dtypes` (TypeError for type or dtype, ValueError for rank)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise TypeError(f"x has dtype {x.dtype}; supported: {', '.join(str(d) for d in dtypes)}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [B, C, H, W], got shape {tuple(x.shape)}")


def check_acts(acts: dict) -> None:
    """Every {argument name: activation} names one the kernels compute (ValueError otherwise)."""
    for act_name, act in acts.items():
        if act not in ACTIVATIONS:
            raise ValueError(f"{act_name}={act!r} is not supported; expected one of {ACTIVATIONS}")


def _check_tensor(name: str, t, ndims, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dims, got shape {tuple(t.shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but x has {dtype}; all operands must share x's dtype")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but x is on {device}")


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
