"""A Fused-MBConv block (EfficientNetV2, MobileNetV4's FusedIB) in one Triton launch:

    a = act1(conv_kxk(x) + b1)              dense kh x kw conv C -> Hd, stride 1/2, zero padding of x
    y = act2(a @ Wp^T + b2) [+ residual]    1x1 projection Hd -> N

BatchNorm is folded beforehand; the expanded tensor a never reaches global memory. Blocked
algorithm in the kernel's docstring. Importing this module imports Triton; under
``TRITON_INTERPRET=1`` (set before the first import) the kernel runs on CPU tensors in Triton's
interpreter. Only builtins of triton.language are called (one source for Triton 3.6 and 3.8).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels.block.checks import BlockGeometry, check_fused_mbconv_args
from kernels.checks import output_format, triton_interpreting
from kernels.block.inverted_residual import INTERPRETER_TILE, BlockTile, _next_pow2, _tile
from kernels.tiles import activation, aligned, dot_acc, output_tile, pointwise_epilogue, pow2_divisor

_INTERPRETED = triton_interpreting()


def tile_for(g: BlockGeometry) -> BlockTile:
    """The tile by regime (no timing): BLOCK_M = 64 (wgmma), BLOCK_N = next power of two of N in
    [32, 256] (one N tile for N <= 256: the dense conv is done once per pixel block), BLOCK_C =
    next power of two of C in [16, 64] (the implicit GEMM's K step; Fused-MBConv stages have
    C = 16..64), BLOCK_H = 64, or 32 beside a 256-wide accumulator; 8 warps from BLOCK_N = 128;
    three stages: the (tap, C chunk) loop is one flat loop whose x and weight tiles the pipeliner
    prefetches with cp.async two steps ahead."""
    block_n = min(256, max(32, _next_pow2(g.out_channels)))
    block_c = min(64, max(16, _next_pow2(g.channels)))
    return BlockTile(64, block_n, 32 if block_n == 256 else 64, block_c, 8 if block_n >= 128 else 4, 3)


@triton.jit(do_not_specialize=["M", "H", "W", "Ho", "Wo"])  # alignment comes from C, Hd, N only
def _fused_mbconv_kernel(
    # x [B, H, W, C] NHWC; conv_w[j, c, kh, kw] at j * stride_cw_j + c * stride_cw_c + kh * stride_cw_kh
    # + kw * stride_cw_kw (channels_last weights: stride_cw_c == 1, vector loads along c); pw [N, Hd]
    # with unit stride along Hd; out / res [B, N, Ho, Wo] any strides
    x_ptr, conv_w_ptr, conv_b_ptr, pw_w_ptr, pw_b_ptr, res_ptr, out_ptr,
    M, H, W, C, Ho, Wo, HD, N,
    stride_cw_j, stride_cw_c, stride_cw_kh, stride_cw_kw, stride_pw_n,
    stride_ob, stride_oc, stride_oh, stride_ow, stride_rb, stride_rc, stride_rh, stride_rw,
    KH: tl.constexpr, KW: tl.constexpr, STRIDE: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    ACT1: tl.constexpr, ACT2: tl.constexpr, HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, HAS_RES: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    # powers of two (<= 16) the host found to divide C, Hd, N, conv_w's j / tap strides, pw's row
    # stride and the output's / residual's pixel strides
    X_ALIGN: tl.constexpr, HD_ALIGN: tl.constexpr, N_ALIGN: tl.constexpr, CW_ALIGN: tl.constexpr,
    PW_ALIGN: tl.constexpr, OUT_ALIGN: tl.constexpr, RES_ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out[m, n] = act2(b2[n] + sum_j A[m, j] * Wp[n, j]) (+ res[m, n]), where for output pixel
    m = (b, oh, ow)

        A[m, j] = act1(b1[j] + sum_{kh, kw, c} x[b, oh*S - PH + kh, ow*S - PW + kw, c] * Wc[j, c, kh, kw])

    (x zero outside the image). Blocked algorithm: program p owns out[BLOCK_M pixels (flattened
    over (b, oh, ow)), BLOCK_N channels]. For each BLOCK_H chunk of the Hd hidden channels:
      1. the dense conv as an implicit GEMM, A[BLOCK_M, BLOCK_H] = sum over the KH * KW taps and
         the C / BLOCK_C channel chunks (one flat loop) of x_tap[BLOCK_M, BLOCK_C] (masked loads:
         the zero padding; channels contiguous) @ Wc[tap][BLOCK_C, BLOCK_H] on the tensor cores;
      2. + b1, act1, rounded to the operand dtype (as the unfused chain writes the conv's output),
         acc[BLOCK_M, BLOCK_N] += A @ Wp^T[BLOCK_H, BLOCK_N].
    Epilogue (kernels.tiles.pointwise_epilogue): + b2, act2, + residual, one rounding, the store.

    Per output pixel: HBM e * (C + N) bytes (the KH * KW re-reads of x hit L1/L2) against
    e * (C + 2 Hd + N) unfused (Hd = 4C: 2.3x less at C = N); FLOPs 2 * (KH*KW * C * Hd + Hd * N),
    the same as the unfused convs, all on the tensor cores. The conv is redone once per N tile,
    i.e. never for N <= 256.
    """
    C = aligned(C, X_ALIGN)
    HD = aligned(HD, HD_ALIGN)
    N = aligned(N, N_ALIGN)
    stride_cw_j = aligned(stride_cw_j, CW_ALIGN)
    stride_cw_kh = aligned(stride_cw_kh, CW_ALIGN)
    stride_cw_kw = aligned(stride_cw_kw, CW_ALIGN)
    stride_pw_n = aligned(stride_pw_n, PW_ALIGN)

    offs_m, m_ok, img, oh, ow, offs_n, n_ok = output_tile(M, N, Ho, Wo, BLOCK_M, BLOCK_N)
    ih0 = oh * STRIDE - PH
    iw0 = ow * STRIDE - PW
    x_pix0 = ((img.to(tl.int64) * H + ih0) * W + iw0) * C  # tap (0, 0); off x only where masked
    offs_c = tl.arange(0, BLOCK_C)
    c_chunks = (C + BLOCK_C - 1) // BLOCK_C
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)

    for h0 in range(0, HD, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        h_ok = offs_h < HD
        w_cols = conv_w_ptr + offs_h[None, :] * stride_cw_j

        # 1. the dense conv, one (tap, channel chunk) step at a time
        a = tl.full((BLOCK_M, BLOCK_H), 0.0, tl.float32)
        for step in range(KH * KW * c_chunks):
            tap = step // c_chunks
            cc = (step % c_chunks) * BLOCK_C + offs_c
            cc_ok = cc < C
            kh = tap // KW
            kw = tap % KW
            ih = ih0 + kh
            iw = iw0 + kw
            ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            xv = tl.load(x_ptr + (x_pix0 + (kh * W + kw) * C)[:, None] + cc[None, :],
                         mask=ok[:, None] & cc_ok[None, :], other=0.0)
            wv = tl.load(w_cols + cc[:, None] * stride_cw_c + kh * stride_cw_kh + kw * stride_cw_kw,
                         mask=cc_ok[:, None] & h_ok[None, :], other=0.0)
            a = dot_acc(xv, wv, a, DOT_PRECISION, UPCAST_DOT)

        # 2. + b1, act1, then the projection
        if HAS_B1:
            a += tl.load(conv_b_ptr + offs_h, mask=h_ok, other=0.0).to(tl.float32)[None, :]
        a = activation(a, ACT1)
        b = tl.load(pw_w_ptr + offs_h[:, None] + offs_n[None, :] * stride_pw_n,
                    mask=h_ok[:, None] & n_ok[None, :], other=0.0)
        acc = dot_acc(a.to(b.dtype), b, acc, DOT_PRECISION, UPCAST_DOT)

    pointwise_epilogue(acc, pw_b_ptr, res_ptr, out_ptr, offs_n, n_ok, m_ok, img, oh, ow,
                       stride_ob, stride_oc, stride_oh, stride_ow, stride_rb, stride_rc, stride_rh, stride_rw,
                       ACT2, HAS_B2, HAS_RES, OUT_ALIGN, RES_ALIGN)


def kernel_arguments(x, conv_w, conv_b, pw, pw_b, res, out, g: BlockGeometry, stride: int, act1: str, act2: str,
                     has_res: bool, allow_tf32: bool) -> tuple:
    """The kernel's runtime arguments (by name, in order) and its constexprs except the tile's.
    Tensors may be meta tensors (the static builds)."""
    args = dict(
        x_ptr=x, conv_w_ptr=conv_w, conv_b_ptr=x if conv_b is None else conv_b.contiguous(), pw_w_ptr=pw,
        pw_b_ptr=x if pw_b is None else pw_b.contiguous(), res_ptr=res, out_ptr=out,
        M=g.batch * g.out_h * g.out_w, H=g.height, W=g.width, C=g.channels, Ho=g.out_h, Wo=g.out_w, HD=g.hidden,
        N=g.out_channels,
        **dict(zip(("stride_cw_j", "stride_cw_c", "stride_cw_kh", "stride_cw_kw"), conv_w.stride())),
        stride_pw_n=pw.stride(0),
        **dict(zip(("stride_ob", "stride_oc", "stride_oh", "stride_ow"), out.stride())),
        **dict(zip(("stride_rb", "stride_rc", "stride_rh", "stride_rw"), res.stride())),
    )
    cw = conv_w.stride()
    constexprs = dict(
        KH=g.kh, KW=g.kw, STRIDE=stride, PH=g.pad_h, PW=g.pad_w, ACT1=act1, ACT2=act2,
        HAS_B1=conv_b is not None, HAS_B2=pw_b is not None, HAS_RES=has_res,
        DOT_PRECISION="tf32" if (allow_tf32 or x.dtype != torch.float32) else "ieee",
        UPCAST_DOT=_INTERPRETED and x.dtype == torch.bfloat16,
        X_ALIGN=pow2_divisor(g.channels), HD_ALIGN=pow2_divisor(g.hidden), N_ALIGN=pow2_divisor(g.out_channels),
        CW_ALIGN=pow2_divisor(cw[0], cw[2], cw[3]), PW_ALIGN=pow2_divisor(pw.stride(0)),
        OUT_ALIGN=pow2_divisor(*out.stride()[::2], out.stride(3)),
        RES_ALIGN=pow2_divisor(*res.stride()[::2], res.stride(3)),
    )
    return args, constexprs


def fused_mbconv(x: torch.Tensor, conv_w: torch.Tensor, conv_b: Optional[torch.Tensor], pw_w: torch.Tensor,
                 pw_b: Optional[torch.Tensor], *, stride: int, padding, act1: str = "none", act2: str = "none",
                 residual: Optional[torch.Tensor] = None, allow_tf32: bool = False,
                 config: Optional[dict] = None) -> torch.Tensor:
    """y = act2(pw(act1(conv_kxk(x) + conv_b)) + pw_b) [+ residual] in one launch.

    Operands as in kernels.block.checks, all of x's dtype (fp32, fp16, bf16) and device; x is read
    channels_last (other layouts are converted first), conv_w any strides (channels_last, as
    FusedMBConv2d stores it, reads fastest); the output takes x's memory format. fp32 is exact
    fp32 unless ``allow_tf32``. ``config``: this tile rather than ``tile_for``'s (keys BLOCK_M,
    BLOCK_N, BLOCK_H, BLOCK_C, optionally num_warps / num_stages).
    """
    g = check_fused_mbconv_args(x, conv_w, conv_b, pw_w, pw_b, stride, padding, act1, act2, residual)
    if not isinstance(allow_tf32, bool):
        raise TypeError(f"allow_tf32 must be a bool, got {type(allow_tf32).__name__}")
    if not x.is_cuda and not _INTERPRETED:
        raise ValueError(f"fused_mbconv runs on CUDA tensors (x is on {x.device}); for CPU tensors set "
                         "TRITON_INTERPRET=1 before kernels.block.fused_mbconv is first imported, or call "
                         "kernels.fused_mbconv_reference")
    tile = _tile(g, config) if config is not None else (INTERPRETER_TILE if _INTERPRETED else tile_for(g)).config()
    out = torch.empty((g.batch, g.out_channels, g.out_h, g.out_w), dtype=x.dtype, device=x.device,
                      memory_format=output_format(x))
    if out.numel() == 0:
        return out
    x = x.contiguous(memory_format=torch.channels_last)
    pw = pw_w.reshape(g.out_channels, g.hidden).contiguous()
    res = out if residual is None else residual
    args, constexprs = kernel_arguments(x, conv_w, conv_b, pw, pw_b, res, out, g, stride, act1, act2,
                                        residual is not None, allow_tf32)
    grid = (triton.cdiv(args["M"], tile["BLOCK_M"]) * triton.cdiv(g.out_channels, tile["BLOCK_N"]),)
    with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
        _fused_mbconv_kernel[grid](*args.values(), **constexprs, **tile)
    return out


def hopper_build(g: BlockGeometry, stride: int, tile: Optional[BlockTile] = None, *, act1: str = "silu",
                 act2: str = "none", residual: bool = False, allow_tf32: bool = False):
    """Compile the kernel for sm_90 as FusedMBConv2d would launch it on this geometry (channels_last
    x, output and conv weights, biases) with this tile (default ``tile_for(g)``), without a GPU: a
    kernels.hopper.HopperBuild."""
    from kernels.hopper import build_sm90

    tile = tile or tile_for(g)
    meta = dict(device="meta", dtype=g.dtype)
    Hd, N = g.hidden, g.out_channels
    x = torch.empty((g.batch, g.channels, g.height, g.width), **meta).contiguous(memory_format=torch.channels_last)
    conv_w = torch.empty((Hd, g.channels, g.kh, g.kw), **meta).contiguous(memory_format=torch.channels_last)
    out = torch.empty((g.batch, N, g.out_h, g.out_w), **meta).contiguous(memory_format=torch.channels_last)
    args, constexprs = kernel_arguments(x, conv_w, torch.empty(Hd, **meta), torch.empty((N, Hd), **meta),
                                        torch.empty(N, **meta), out, out, g, stride, act1, act2, residual, allow_tf32)
    config = tile.config()
    warps, stages = config.pop("num_warps"), config.pop("num_stages")
    return build_sm90(_fused_mbconv_kernel, {n: (v.dtype if isinstance(v, torch.Tensor) else v)
                                             for n, v in args.items()},
                      {**constexprs, **config}, num_warps=warps, num_stages=stages)
