"""The fused separable conv as a torch.library custom op: ``torch.ops.dwsep.fused_sep_conv``.

Registered so that torch.compile, torch.export and FX treat it as one opaque op with a known
output (the fake implementation gives shape, dtype and strides: x's memory format). Dispatch:
CUDA tensors -> the Triton launcher; CPU tensors -> the Triton launcher under TRITON_INTERPRET=1
(so tests run the real kernel), the torch reference otherwise. Importing this module does not
import Triton. Inference only: no autograd formula is registered.
"""
import warnings
from typing import Optional

import torch

from kernels.checks import check_sep_conv_args, output_format, triton_interpreting
from kernels.reference import sep_conv_reference


def _launcher():
    """The Triton launcher, or None (with a warning, once) when Triton is not installed."""
    try:
        from kernels.fused_sep_conv import fused_sep_conv
    except ImportError as e:
        warnings.warn(f"Triton is unavailable ({e}); dwsep::fused_sep_conv falls back to the torch reference")
        return None
    return fused_sep_conv


@torch.library.custom_op("dwsep::fused_sep_conv", mutates_args=())
def fused_sep_conv_op(x: torch.Tensor, dw_w: torch.Tensor, dw_b: Optional[torch.Tensor], pw_w: torch.Tensor,
                      pw_b: Optional[torch.Tensor], stride: int, padding: int, act1: str, act2: str,
                      residual: Optional[torch.Tensor], allow_tf32: bool) -> torch.Tensor:
    """y = act2(pw(act1(dw(x) + b1)) + b2) [+ residual], in x's memory format (see kernels.checks)."""
    launch = _launcher() if (x.is_cuda or triton_interpreting()) else None
    if launch is not None:
        return launch(x, dw_w, dw_b, pw_w, pw_b, stride=stride, padding=padding, act1=act1, act2=act2,
                      residual=residual, allow_tf32=allow_tf32)
    y = sep_conv_reference(x, dw_w, dw_b, pw_w, pw_b, stride, padding, act1, act2, residual)
    return torch.empty_like(y, memory_format=output_format(x)).copy_(y)


@fused_sep_conv_op.register_fake
def _fused_sep_conv_fake(x, dw_w, dw_b, pw_w, pw_b, stride, padding, act1, act2, residual, allow_tf32):
    g = check_sep_conv_args(x, dw_w, dw_b, pw_w, pw_b, stride, padding, act1, act2, residual)
    return torch.empty((g.batch, g.out_channels, g.out_h, g.out_w), dtype=x.dtype, device=x.device,
                       memory_format=output_format(x))
