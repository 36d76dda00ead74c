"""A depthwise conv, a squeeze-excitation and a pointwise conv in three launches, the depthwise
result computed once:

    a    = act1(dw(x) + b1)                                   [B, Ho, Wo, K]  in x's dtype
    s[b] = gate(W2 · se_act(W1 · mean_hw(a[b]) + c1) + c2)    [B, K]          fp32
    y    = act2(pw(act_after_gate(a ⊙ s)) + b2) [+ residual]  [B, N, Ho, Wo]

The gate needs the mean of the whole depthwise map before any output pixel can be finished, so
one kernel cannot do it all. The earlier form ran the depthwise conv twice (once for the means,
once inside the fused dw+pw kernel) and the excitation MLP as four torch launches. Here:

  1. ``_dw_stage_kernel``  program (b · T + t, j): the depthwise tile [BLOCK_P pixels of image b,
     BLOCK_K channels] in fp32 registers (kernels.tiles.dw_row: vector loads along NHWC channels,
     zero padding as the mask), + b1, act1; writes the tile to ``a`` (x's dtype, channels-last,
     rounded once as the unfused block rounds it) and its fp32 column sums to part[b, t, :].
  2. ``_excite_kernel``     program b: mean = Σ_t part[b, t, :] / (Ho·Wo); z = se_act(W1 mean + c1)
     ([S], reduced over K in BLOCK_K chunks); s = gate(W2 z + c2) (K in BLOCK_K chunks); fp32.
  3. ``_gated_pw_kernel``   the 1x1 conv as a GEMM out[M, N] = (a ⊙ s)[M, K] · pwᵀ[K, N] over the
     M = B·Ho·Wo pixels: per K step the A tile is loaded, scaled by the gate rows of its images
     in fp32 registers, act_after_gate applied (ReXNet's ReLU6 after its squeeze-excitation), rounded to the operand dtype and fed to the tensor cores; the B tile is a
     plain load the pipeliner prefetches (num_stages = 3, cp.async on sm_90). Epilogue: + b2,
     act2, + residual, one rounding, store in the output's layout.

Traffic: x read once (its k² reuse hits L1/L2), a written once and read once (2·M·K elements: at
the small maps where squeeze-excitation blocks live, 7² to 28², a batch-64 fp16 ``a`` is 2-12 MB
and stays in the 50 MB L2 of an H100/H200 between launches), y written once. Three launches in
all, the excitation MLP included. Importing this module imports Triton; under TRITON_INTERPRET=1
(set before the first import) the kernels run on CPU tensors in Triton's interpreter. As in
kernels/sep_conv/fused_sep_conv.py the kernels call only builtins of triton.language.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels.activations import SE_GATES
from kernels.activations import activation as activation_fn
from kernels.checks import check_se_weights, output_format, triton_interpreting
from kernels.sep_conv.checks import check_sep_conv_args
from kernels.sep_conv.tiles import Tile
from kernels.tiles import activation, aligned, dot_acc, dw_row, output_tile, pointwise_epilogue, pow2_divisor

_INTERPRETED = triton_interpreting()
# the depthwise stage is one read of x and one write of a (memory bound): channel vectors of 64,
# enough pixels per program to amortise the weight loads; the interpreter gets small blocks
STAGE = dict(BLOCK_P=16, BLOCK_K=16, num_warps=4) if _INTERPRETED else dict(BLOCK_P=64, BLOCK_K=64, num_warps=4)
EXCITE_BLOCK_K = 16 if _INTERPRETED else 64
GEMM_STAGES = 3


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _gate(x, GATE: tl.constexpr):
    """The squeeze-excitation gates of kernels.activations.SE_GATES, on an fp32 block."""
    if GATE == "sigmoid":
        x = 1.0 / (1.0 + tl.exp(-x))
    else:  # hardsigmoid: relu6(x + 3) / 6
        x = tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0
    return x


@triton.jit(do_not_specialize=["H", "W", "Ho", "Wo", "TILES"])
def _dw_stage_kernel(
    x_ptr, dw_w_ptr, dw_b_ptr, a_ptr, part_ptr,  # x NHWC; a [B, Ho, Wo, K] x's dtype; part fp32 [B, TILES, K]
    H, W, C, Ho, Wo, K, TILES,
    stride_dw_k, stride_dw_h, stride_dw_w,
    KH: tl.constexpr, KW: tl.constexpr, STRIDE: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    R: tl.constexpr, ACT1: tl.constexpr, HAS_B1: tl.constexpr, X_ALIGN: tl.constexpr, DW_ALIGN: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):
    C = aligned(C, X_ALIGN)
    K = aligned(K, X_ALIGN)
    stride_dw_h = aligned(stride_dw_h, DW_ALIGN)
    stride_dw_w = aligned(stride_dw_w, DW_ALIGN)
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
    a = activation(a, ACT1)
    pix = img.to(tl.int64) * Ho * Wo + offs_p
    ok = p_ok[:, None] & k_ok[None, :]
    tl.store(a_ptr + pix[:, None] * K + offs_k[None, :], a.to(a_ptr.dtype.element_ty), mask=ok)
    a = tl.where(ok, a, 0.0)  # act1(b1) != 0 on rows past the image
    tl.store(part_ptr + pid.to(tl.int64) * K + offs_k, tl.reduce(a, 0, _add), mask=k_ok)


@triton.jit
def _excite_kernel(
    part_ptr, w1_ptr, c1_ptr, w2_ptr, c2_ptr, gate_ptr,  # part [B, TILES, K]; w1 [S, K]; w2 [K, S]; gate [B, K]
    K, S, TILES, inv_pixels,
    SE_ACT: tl.constexpr, GATE: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr,
):
    img = tl.program_id(0).to(tl.int64)
    offs_s = tl.arange(0, BLOCK_S)
    s_ok = offs_s < S
    z = tl.full((BLOCK_S,), 0.0, tl.float32)
    for k0 in range(0, K, BLOCK_K):                     # z = W1 · mean
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        total = tl.full((BLOCK_K,), 0.0, tl.float32)
        for t in range(TILES):
            total += tl.load(part_ptr + (img * TILES + t) * K + offs_k, mask=k_ok, other=0.0)
        w1 = tl.load(w1_ptr + offs_s[:, None] * K + offs_k[None, :], mask=s_ok[:, None] & k_ok[None, :], other=0.0)
        z += tl.reduce(w1.to(tl.float32) * (total * inv_pixels)[None, :], 1, _add)
    z = activation(z + tl.load(c1_ptr + offs_s, mask=s_ok, other=0.0).to(tl.float32), SE_ACT)
    z = tl.where(s_ok, z, 0.0)
    for k0 in range(0, K, BLOCK_K):                     # s = gate(W2 · z + c2)
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        w2 = tl.load(w2_ptr + offs_k[:, None] * S + offs_s[None, :], mask=k_ok[:, None] & s_ok[None, :], other=0.0)
        g = tl.reduce(w2.to(tl.float32) * z[None, :], 1, _add)
        g += tl.load(c2_ptr + offs_k, mask=k_ok, other=0.0).to(tl.float32)
        tl.store(gate_ptr + img * K + offs_k, _gate(g, GATE), mask=k_ok)


@triton.jit(do_not_specialize=["M", "Ho", "Wo"])
def _gated_pw_kernel(
    a_ptr, gate_ptr, pw_w_ptr, pw_b_ptr, res_ptr, out_ptr,  # a [M, K]; gate fp32 [B, K]; pw [N, K]
    M, Ho, Wo, K, N,
    stride_pw_n, stride_ob, stride_oc, stride_oh, stride_ow, stride_rb, stride_rc, stride_rh, stride_rw,
    ACT_AFTER_GATE: tl.constexpr, ACT2: tl.constexpr, HAS_B2: tl.constexpr, HAS_RES: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    K_ALIGN: tl.constexpr, N_ALIGN: tl.constexpr, PW_ALIGN: tl.constexpr, OUT_ALIGN: tl.constexpr,
    RES_ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[m, n] = act2(b2[n] + Σ_k act_after_gate(a[m, k] · s[b(m), k]) · pw[n, k]) (+ res[m, n]);
    m = (b·Ho + oh)·Wo + ow."""
    K = aligned(K, K_ALIGN)
    N = aligned(N, N_ALIGN)
    stride_pw_n = aligned(stride_pw_n, PW_ALIGN)
    offs_m, m_ok, img, oh, ow, offs_n, n_ok = output_tile(M, N, Ho, Wo, BLOCK_M, BLOCK_N)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    a_rows = a_ptr + offs_m.to(tl.int64)[:, None] * K
    gate_rows = gate_ptr + img.to(tl.int64)[:, None] * K
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        ok = m_ok[:, None] & k_ok[None, :]
        a = tl.load(a_rows + offs_k[None, :], mask=ok, other=0.0)
        gated = a.to(tl.float32) * tl.load(gate_rows + offs_k[None, :], mask=ok, other=0.0)
        a = activation(gated, ACT_AFTER_GATE).to(a.dtype)
        b = tl.load(pw_w_ptr + offs_k[:, None] + offs_n[None, :] * stride_pw_n,
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = dot_acc(a, b, acc, DOT_PRECISION, UPCAST_DOT)
    pointwise_epilogue(acc, pw_b_ptr, res_ptr, out_ptr, offs_n, n_ok, m_ok, img, oh, ow,
                       stride_ob, stride_oc, stride_oh, stride_ow, stride_rb, stride_rc, stride_rh, stride_rw,
                       ACT2, HAS_B2, HAS_RES, OUT_ALIGN, RES_ALIGN)


def gemm_tile(n: int) -> Tile:
    """The gated GEMM's tile: 128 pixels, N up to 128 in one tile (a wider N splits), K steps of 64
    (32 in the interpreter: small blocks run fastest there); unroll_taps is unused."""
    if _INTERPRETED:
        return Tile(32, 32, 16, 4, False)
    block_n = min(128, max(32, 1 << max(0, n - 1).bit_length()))
    return Tile(128, block_n, 64, 8 if block_n == 128 else 4, False)


def sep_conv_se(x: torch.Tensor, dw_w: torch.Tensor, dw_b: Optional[torch.Tensor], pw_w: torch.Tensor,
                pw_b: Optional[torch.Tensor], w1: torch.Tensor, c1: torch.Tensor, w2: torch.Tensor,
                c2: torch.Tensor, *, stride: int, padding, act1: str = "none", act2: str = "none",
                se_act: str = "relu", se_gate: str = "sigmoid", act_after_gate: str = "none",
                residual: Optional[torch.Tensor] = None, allow_tf32: bool = False) -> torch.Tensor:
    """y = act2(pw(act_after_gate(a ⊙ s)) + b2) [+ residual], a = act1(dw(x) + b1), s the excitation gate of a's
    channel means (see the module docstring), in three launches. Operands as in kernels.checks
    (padding p or (ph, pw));
    the squeeze-excitation weights any float dtype (the MLP runs in fp32). The output takes x's
    memory format."""
    g = check_sep_conv_args(x, dw_w, dw_b, pw_w, pw_b, stride, padding, act1, act2, residual,
                            act_after_gate=act_after_gate)
    K, N = g.channels * g.mult, g.out_channels
    squeeze = check_se_weights(w1, c1, w2, c2, K)
    activation_fn(se_act)  # a ValueError names the valid choices
    if se_gate not in SE_GATES:
        raise ValueError(f"se_gate={se_gate!r} is not supported; expected one of {SE_GATES}")
    if not x.is_cuda and not _INTERPRETED:
        raise ValueError(f"sep_conv_se runs on CUDA tensors (x is on {x.device}); for CPU tensors set "
                         "TRITON_INTERPRET=1 before kernels.sep_conv.sep_conv_se is first imported")
    out = torch.empty((g.batch, N, g.out_h, g.out_w), dtype=x.dtype, device=x.device, memory_format=output_format(x))
    M, pixels = g.batch * g.out_h * g.out_w, g.out_h * g.out_w
    if M == 0:
        return out
    x = x.contiguous(memory_format=torch.channels_last)
    tiles = triton.cdiv(pixels, STAGE["BLOCK_P"])
    a = torch.empty((M, K), dtype=x.dtype, device=x.device)
    part = torch.empty((g.batch, tiles, K), dtype=torch.float32, device=x.device)
    gate = torch.empty((g.batch, K), dtype=torch.float32, device=x.device)
    pw = pw_w.reshape(N, K).contiguous()  # the GEMM reads pw rows with unit stride along K
    res = out if residual is None else residual
    tile = gemm_tile(N)
    with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
        _dw_stage_kernel[(g.batch * tiles, triton.cdiv(K, STAGE["BLOCK_K"]))](
            x, dw_w, x if dw_b is None else dw_b.contiguous(), a, part,
            g.height, g.width, g.channels, g.out_h, g.out_w, K, tiles,
            dw_w.stride(0), dw_w.stride(2), dw_w.stride(3),
            KH=g.kh, KW=g.kw, STRIDE=stride, PH=g.pad_h, PW=g.pad_w, R=g.mult, ACT1=act1, HAS_B1=dw_b is not None,
            X_ALIGN=pow2_divisor(g.channels), DW_ALIGN=pow2_divisor(*dw_w.stride()[2:]), **STAGE)
        _excite_kernel[(g.batch,)](
            part, w1.reshape(squeeze, K).contiguous(), c1.contiguous(), w2.reshape(K, squeeze).contiguous(),
            c2.contiguous(), gate, K, squeeze, tiles, 1.0 / pixels,
            SE_ACT=se_act, GATE=se_gate, BLOCK_S=max(16, triton.next_power_of_2(squeeze)),
            BLOCK_K=EXCITE_BLOCK_K, num_warps=4)
        _gated_pw_kernel[(triton.cdiv(M, tile.block_m) * triton.cdiv(N, tile.block_n),)](
            a, gate, pw, x if pw_b is None else pw_b.contiguous(), res, out,
            M, g.out_h, g.out_w, K, N, pw.stride(0), *out.stride(), *res.stride(),
            ACT_AFTER_GATE=act_after_gate, ACT2=act2, HAS_B2=pw_b is not None, HAS_RES=residual is not None,
            DOT_PRECISION="tf32" if (allow_tf32 or x.dtype != torch.float32) else "ieee",
            UPCAST_DOT=_INTERPRETED and x.dtype == torch.bfloat16,
            K_ALIGN=pow2_divisor(K), N_ALIGN=pow2_divisor(N), PW_ALIGN=pow2_divisor(pw.stride(0)),
            OUT_ALIGN=pow2_divisor(*out.stride()[::2], out.stride(3)),
            RES_ALIGN=pow2_divisor(*res.stride()[::2], res.stride(3)),
            BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k,
            num_warps=tile.num_warps, num_stages=GEMM_STAGES)
    return out


def gemm_hopper_build(pixels: int, K: int, N: int, dtype: torch.dtype, *, residual: bool = False,
                      act_after_gate: str = "none"):
    """Compile the gated GEMM for sm_90 as sep_conv_se launches it (channels-last output of
    `pixels` = B·Ho·Wo pixels, here one image of pixels x 1), without a GPU: a
    kernels.hopper.HopperBuild."""
    from kernels.hopper import build_sm90

    tile = gemm_tile(N)
    out_strides = (pixels * N, 1, N, N)  # [1, N, pixels, 1] channels-last
    args = dict(a_ptr=dtype, gate_ptr=torch.float32, pw_w_ptr=dtype, pw_b_ptr=dtype, res_ptr=dtype, out_ptr=dtype,
                M=pixels, Ho=pixels, Wo=1, K=K, N=N, stride_pw_n=K,
                **dict(zip(("stride_ob", "stride_oc", "stride_oh", "stride_ow"), out_strides)),
                **dict(zip(("stride_rb", "stride_rc", "stride_rh", "stride_rw"), out_strides)))
    constexprs = dict(ACT_AFTER_GATE=act_after_gate, ACT2="none", HAS_B2=True, HAS_RES=residual,
                      DOT_PRECISION="tf32", UPCAST_DOT=False,  # as a launch passes for fp16 / bf16 (and tf32)
                      K_ALIGN=pow2_divisor(K), N_ALIGN=pow2_divisor(N), PW_ALIGN=pow2_divisor(K),
                      OUT_ALIGN=pow2_divisor(*out_strides[::2], out_strides[3]),
                      RES_ALIGN=pow2_divisor(*out_strides[::2], out_strides[3]),
                      BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k)
    return build_sm90(_gated_pw_kernel, args, constexprs, num_warps=tile.num_warps, num_stages=GEMM_STAGES)
