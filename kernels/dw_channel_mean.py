"""Per-image channel means of a depthwise conv's activated output, without writing that output.

    mean[b, j] = 1/(Ho*Wo) * sum_{oh, ow} act1(b1[j] + sum_{kh < KH, kw < KW} x[b, oh*S-PH+kh, ow*S-PW+kw, j // R]
                                                                            * dw[j, kh, kw])

This is the "squeeze" of a squeeze-excitation block that sits between a depthwise and a pointwise
conv. With it the block runs as two passes over x: this kernel (read x, write B x K means), a few
tiny torch ops for the excitation MLP, then the fused sep-conv kernel with the gate (read x again,
write y). The depthwise output a = act1(dw(x)) never reaches memory, where the unfused block
writes it, reads it for the mean, reads it and writes a * gate, and reads that for the 1x1 conv.

Tiling: program (b * TILES + t, pid_k) computes the depthwise tile [BLOCK_P pixels of image b,
BLOCK_K channels] in fp32 registers with the fused kernel's own tap loop (kernels.tiles.dw_row:
vector loads along NHWC channels, zero padding as the mask), zeroes the rows past the image, and
writes the tile's column sums to partial[b, t, :]; torch adds the TILES partial sums
(deterministic, unlike atomics). Tiles never straddle two images.
"""
from contextlib import nullcontext
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels.checks import check_dw_args, triton_interpreting
from kernels.tiles import activation, dw_row

# The pass is one read of x (memory bound): a fixed tile with channel vectors of 64 and enough
# pixels per program to amortise the weight loads; the interpreter gets a small one.
_TILE = dict(BLOCK_P=16, BLOCK_K=16, num_warps=4) if triton_interpreting() else dict(BLOCK_P=64, BLOCK_K=64, num_warps=4)


@triton.jit
def _add(a, b):
    return a + b


# tl.reduce with an own combine function rather than tl.sum, which is itself @triton.jit and so
# fails under the interpreter when Triton was first imported without it (see fused_sep_conv.py)
@triton.jit(do_not_specialize=["H", "W", "Ho", "Wo", "TILES"])
def _dw_channel_sum_kernel(
    x_ptr, dw_w_ptr, dw_b_ptr, part_ptr,  # x NHWC; part fp32 [B, TILES, K]
    H, W, C, Ho, Wo, K, TILES,
    stride_dw_k, stride_dw_h, stride_dw_w,
    KH: tl.constexpr, KW: tl.constexpr, STRIDE: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    R: tl.constexpr,
    ACT1: tl.constexpr, HAS_B1: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    img = pid // TILES
    offs_p = (pid % TILES) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < Ho * Wo
    oh = offs_p // Wo
    ow = offs_p % Wo
    ih0 = oh * STRIDE - PH
    iw0 = ow * STRIDE - PW
    x_pix0 = ((img.to(tl.int64) * H + ih0) * W + iw0) * C

    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    k_ok = offs_k < K
    a = tl.full((BLOCK_P, BLOCK_K), 0.0, tl.float32)
    for kh in range(KH):
        a = dw_row(a, kh, x_ptr, x_pix0, ih0, iw0, p_ok, offs_k // R, dw_w_ptr + offs_k * stride_dw_k, k_ok,
                    stride_dw_h, stride_dw_w, H, W, C, KW)
    if HAS_B1:
        a += tl.load(dw_b_ptr + offs_k, mask=k_ok, other=0.0).to(tl.float32)[None, :]
    a = tl.where(p_ok[:, None], activation(a, ACT1), 0.0)  # act1(b1) != 0 on rows past the image
    tl.store(part_ptr + pid.to(tl.int64) * K + offs_k, tl.reduce(a, 0, _add), mask=k_ok)


def dw_channel_mean(x: torch.Tensor, dw_w: torch.Tensor, dw_b: Optional[torch.Tensor], *, stride: int,
                    padding, act1: str = "none") -> torch.Tensor:
    """float32 [B, C*r]: the spatial mean of act1(dw(x) + b1) per image and channel (see module doc).

    Operands as in kernels.checks (any kh x kw kernel up to 7x7, padding p or (ph, pw); x read as
    channels_last: a copy when it is not)."""
    g = check_dw_args(x, dw_w, dw_b, stride, padding, act1)
    if not x.is_cuda and not triton_interpreting():
        raise ValueError(f"dw_channel_mean runs on CUDA tensors (x is on {x.device}); for CPU tensors set "
                         "TRITON_INTERPRET=1 before kernels.dw_channel_mean is first imported")
    K, pixels = g.channels * g.mult, g.out_h * g.out_w
    tiles = triton.cdiv(pixels, _TILE["BLOCK_P"])
    part = torch.empty((g.batch, tiles, K), dtype=torch.float32, device=x.device)
    if g.batch:
        x = x.contiguous(memory_format=torch.channels_last)
        grid = (g.batch * tiles, triton.cdiv(K, _TILE["BLOCK_K"]))
        with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
            _dw_channel_sum_kernel[grid](
                x, dw_w, x if dw_b is None else dw_b.contiguous(), part,
                g.height, g.width, g.channels, g.out_h, g.out_w, K, tiles,
                dw_w.stride(0), dw_w.stride(2), dw_w.stride(3),
                KH=g.kh, KW=g.kw, STRIDE=stride, PH=g.pad_h, PW=g.pad_w, R=g.mult, ACT1=act1, HAS_B1=dw_b is not None,
                **_TILE,
            )
    return part.sum(1) / pixels
