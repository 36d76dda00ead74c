"""Argument checks and output geometry of the whole-block kernels (kernels/block/inverted_residual.py,
kernels/block/fused_mbconv.py), shared by their references, launchers, custom ops' fake implementations
and modules so that every path refuses the same inputs with the same message.

Inverted residual (MobileNetV2/V3, EfficientNet, MNASNet, MobileNetV4 IB):

    x         [B, C, H, W]                fp32 / fp16 / bf16 (float64 for the references), any memory format
    ex_w      [Hd, C] or [Hd, C, 1, 1]    1x1 expansion (Hd = C * e), ex_b [Hd] or None
    dw_w      [Hd, 1, kh, kw]             depthwise, 1 <= kh, kw <= 7, dw_b [Hd] or None
    pw_w      [N, Hd] or [N, Hd, 1, 1]    1x1 projection, pw_b [N] or None
    residual  [B, N, Ho, Wo] or None      Ho = (H + 2 ph - kh) // s + 1, Wo likewise

Fused-MBConv (EfficientNetV2, MobileNetV4 FusedIB): conv_w [Hd, C, kh, kw] (dense), conv_b [Hd]
or None, then pw_w / pw_b / residual as above. The stride s (1 or 2) is one value for both axes;
the zero padding (ph, pw) is per axis (an int p means (p, p)). Only metadata is read, so the
checks run unchanged on fake and meta tensors.
"""
from typing import NamedTuple, Optional

import torch

from kernels.checks import (DTYPES, MAX_KERNEL, STRIDES, Geometry, _check_tensor, check_acts, check_input,
                            check_output, padding_pair)


class BlockGeometry(NamedTuple):
    batch: int
    channels: int      # C, the block's input channels
    hidden: int        # Hd, the expanded channels
    kh: int
    kw: int
    pad_h: int
    pad_w: int
    height: int
    width: int
    out_channels: int  # N
    out_h: int
    out_w: int
    dtype: torch.dtype

    @property
    def tail(self) -> Geometry:
        """The geometry of the block's dw + pw part alone, on an [B, Hd, H, W] input (what
        kernels.checks.check_gate and the separable-conv references take)."""
        return Geometry(self.batch, self.hidden, 1, self.kh, self.kw, self.pad_h, self.pad_w, self.height,
                        self.width, self.out_channels, self.out_h, self.out_w, self.dtype)


def _check_common(x, dtypes, stride, padding, acts: dict) -> tuple:
    check_input(x, dtypes)
    check_acts(acts)
    if isinstance(stride, bool) or stride not in STRIDES:
        raise ValueError(f"stride must be one of {STRIDES}, got {stride!r}")
    return padding_pair(padding)


def _check_1x1(name: str, w, n_in: int, what: str) -> int:
    """A 1x1 conv weight [n_out, n_in] or [n_out, n_in, 1, 1]; returns n_out."""
    if (w.dim() == 4 and tuple(w.shape[2:]) != (1, 1)) or w.shape[1] != n_in or w.shape[0] == 0:
        raise ValueError(f"{name} must be [n, {n_in}] or [n, {n_in}, 1, 1] (n >= 1) to take {what}, "
                         f"got {tuple(w.shape)}")
    return w.shape[0]


def _check_bias(x, name: str, b, n: int) -> None:
    if b is not None:
        _check_tensor(name, b, (1,), x.dtype, x.device)
        if b.shape[0] != n:
            raise ValueError(f"{name} must have shape [{n}], got {tuple(b.shape)}")


def _check_kernel(kh: int, kw: int) -> None:
    if not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL):
        raise ValueError(f"kernel {kh}x{kw} is not supported; expected 1 <= kh, kw <= {MAX_KERNEL}")


def _finish(x, hidden, kh, kw, ph, pw, stride, N, residual) -> BlockGeometry:
    B, C, H, W = x.shape
    Ho, Wo = check_output(x, kh, kw, ph, pw, stride, N, residual)
    return BlockGeometry(B, C, hidden, kh, kw, ph, pw, H, W, N, Ho, Wo, x.dtype)


def check_inverted_residual_args(x, ex_w, ex_b: Optional[torch.Tensor], dw_w, dw_b: Optional[torch.Tensor], pw_w,
                                 pw_b: Optional[torch.Tensor], stride: int, padding, act0: str, act1: str,
                                 act2: str, residual: Optional[torch.Tensor] = None, act_after_gate: str = "none",
                                 dtypes=DTYPES) -> BlockGeometry:
    """Validate an inverted residual block's operands (TypeError for types / dtypes, ValueError
    otherwise); return its geometry."""
    ph, pw = _check_common(x, dtypes, stride, padding,
                           dict(act0=act0, act1=act1, act2=act2, act_after_gate=act_after_gate))
    _check_tensor("ex_w", ex_w, (2, 4), x.dtype, x.device)
    _check_tensor("dw_w", dw_w, (4,), x.dtype, x.device)
    _check_tensor("pw_w", pw_w, (2, 4), x.dtype, x.device)
    C = x.shape[1]
    if C == 0:
        raise ValueError("x has no channels")
    hidden = _check_1x1("ex_w", ex_w, C, f"x's {C} channels")
    Hd, one, kh, kw = dw_w.shape
    if one != 1 or Hd != hidden:
        raise ValueError(f"dw_w must be [{hidden}, 1, kh, kw] (depthwise over the {hidden} expanded channels), "
                         f"got {tuple(dw_w.shape)}")
    _check_kernel(kh, kw)
    N = _check_1x1("pw_w", pw_w, hidden, f"the {hidden} expanded channels")
    for name, b, n in (("ex_b", ex_b, hidden), ("dw_b", dw_b, hidden), ("pw_b", pw_b, N)):
        _check_bias(x, name, b, n)
    return _finish(x, hidden, kh, kw, ph, pw, stride, N, residual)


def check_fused_mbconv_args(x, conv_w, conv_b: Optional[torch.Tensor], pw_w, pw_b: Optional[torch.Tensor],
                            stride: int, padding, act1: str, act2: str, residual: Optional[torch.Tensor] = None,
                            dtypes=DTYPES) -> BlockGeometry:
    """Validate a Fused-MBConv block's operands (dense kh x kw conv C -> Hd, 1x1 Hd -> N); return
    its geometry."""
    ph, pw = _check_common(x, dtypes, stride, padding, dict(act1=act1, act2=act2))
    _check_tensor("conv_w", conv_w, (4,), x.dtype, x.device)
    _check_tensor("pw_w", pw_w, (2, 4), x.dtype, x.device)
    C = x.shape[1]
    hidden, c_in, kh, kw = conv_w.shape
    if C == 0 or c_in != C or hidden == 0:
        raise ValueError(f"conv_w must be [Hd, {C}, kh, kw] (Hd >= 1, a dense conv of x's {C} channels), "
                         f"got {tuple(conv_w.shape)}")
    _check_kernel(kh, kw)
    N = _check_1x1("pw_w", pw_w, hidden, f"conv_w's {hidden} channels")
    _check_bias(x, "conv_b", conv_b, hidden)
    _check_bias(x, "pw_b", pw_b, N)
    return _finish(x, hidden, kh, kw, ph, pw, stride, N, residual)
