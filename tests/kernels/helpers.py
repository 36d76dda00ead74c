"""Operands and error measure shared by the kernels' tests."""
import torch

from kernels.checks import out_size, padding_pair
from kernels.sep_conv.reference import sep_conv_reference

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def operands(B=2, C=6, r=1, H=9, W=7, k=3, stride=1, padding=None, N=40, *, dtype=torch.float32,
             bias=True, residual=False, channels_last=True, act1="relu", act2="none"):
    """Fresh random (never zero) operands of a fused sep conv, as the kwargs of the launcher.
    k: an int (square) or (kh, kw); padding: None (k // 2 per axis), an int or (ph, pw)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    padding = (kh // 2, kw // 2) if padding is None else padding
    ph, pw = padding_pair(padding)
    K = C * r
    x = torch.randn(B, C, H, W)
    Ho, Wo = out_size(H, kh, stride, ph), out_size(W, kw, stride, pw)
    args = dict(
        x=x.contiguous(memory_format=torch.channels_last) if channels_last else x,
        dw_w=torch.randn(K, 1, kh, kw) / (kh * kw) ** 0.5,
        dw_b=torch.randn(K) * 0.5 if bias else None,
        pw_w=torch.randn(N, K) / K ** 0.5,
        pw_b=torch.randn(N) * 0.5 if bias else None,
        residual=torch.randn(B, N, Ho, Wo) if residual else None,  # NCHW strides: read as they are
        stride=stride, padding=padding, act1=act1, act2=act2,
    )
    return {name: v.to(dtype) if isinstance(v, torch.Tensor) else v for name, v in args.items()}


def reference64(a):
    """The float64 reference of the launcher kwargs ``a`` (operands already rounded to their dtype)."""
    d = lambda t: None if t is None else t.double()  # noqa: E731
    return sep_conv_reference(d(a["x"]), d(a["dw_w"]), d(a["dw_b"]), d(a["pw_w"]), d(a["pw_b"]), a["stride"],
                              a["padding"], a["act1"], a["act2"], d(a["residual"]))


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """max |y - ref| / max |ref|; inf when y has a NaN or inf (NaN never passes)."""
    if not torch.isfinite(y).all():
        return float("inf")
    return ((y.double() - ref).abs().max() / ref.abs().max()).item()


def poisoned_out(a, channels_last=True):
    """A NaN-filled output buffer (channels_last, or NCHW) for the launcher kwargs ``a``."""
    x, (kh, kw), (ph, pw) = a["x"], a["dw_w"].shape[2:], padding_pair(a["padding"])
    shape = (x.shape[0], a["pw_w"].shape[0], out_size(x.shape[2], kh, a["stride"], ph),
             out_size(x.shape[3], kw, a["stride"], pw))
    out = torch.full(shape, float("nan"), dtype=x.dtype)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
