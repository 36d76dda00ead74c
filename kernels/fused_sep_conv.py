"""Fused depthwise + pointwise (+ activations, + SE gate, + residual) convolution in one Triton launch.

    y = act2(pw(act_after_gate(act1(dw(x) + b1) * gate)) + b2) [+ residual]

(gate[b, j]: an optional squeeze-excitation scale per image and depthwise channel, computed
beforehand from kernels/dw_channel_mean.py's means; act_after_gate: an activation after it, as
ReXNet applies its ReLU6 after the squeeze-excitation. dw is any kh x kw kernel, 1 <= kh, kw <= 7.)
BatchNorm is folded into the weights and biases beforehand; the depthwise result never reaches
global memory. The tiling maths is in the kernel's docstring. Importing this module imports
Triton (``import kernels`` does not); under ``TRITON_INTERPRET=1`` (set before this module is
first imported) the kernel runs on CPU tensors in Triton's interpreter. The kernels call only
builtins of triton.language (tl.full, not the @jit tl.zeros / tl.cdiv / tl.sigmoid), so that
works even when Triton itself was imported without the interpreter.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels.checks import check_gate, check_sep_conv_args, output_format, triton_interpreting
from kernels.tiles import activation, dw_row

_INTERPRETED = triton_interpreting()  # triton.jit below makes the same choice, once, at import


# ---------------------------------------------------------------------------------------------
# Autotune configs: (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, UNROLL_TAPS).
# - BLOCK_N reaches 256 so the depthwise recompute factor ceil(N / BLOCK_N) stays <= 4 on the
#   1024-channel layers; narrow BLOCK_N with tall BLOCK_M serves the memory-bound small-N
#   projection layers (N = 24 ... 96); BLOCK_M = 32 gives 7x7 layers more programs.
# - UNROLL_TAPS=True unrolls all KSIZE^2 taps and runs with num_stages=2: Triton's pipeliner then
#   prefetches the next K chunk's tap tiles into shared memory with cp.async, costing
#   ~(KSIZE^2 * BLOCK_M * BLOCK_K + 2 * BLOCK_K * BLOCK_N) elements of shared memory (pruned when
#   too big, so k = 7 gets none). UNROLL_TAPS=False keeps the kernel row kh a loop (num_stages=1,
#   nothing to pipeline across it): plain vectorised loads, KSIZE of them in flight, far fewer
#   registers. Fully unrolled *without* pipelining was measured (ptxas) to spill: not offered.
#   Deeper pipelines (num_stages 3, 4) multiply the tap buffers again: not offered either.
# The list is the set of tiles that won at least one layer of the DESIGN.md suite (fp16 and tf32,
# batch 64) on an H100 (results/gpu/2026-11-25, first campaign); eight others that never won were
# dropped: each candidate costs a compile (~3 s) per specialisation the first time a model runs.
# The interpreter gets one small config: autotuning there is slow and pointless.
# ---------------------------------------------------------------------------------------------
_TILES = [  # ptxas (sm_90, fp16, k=3): 114-201 registers, no spills
    (64, 64, 32, 4, False), (64, 128, 32, 4, False), (64, 256, 64, 8, False), (32, 256, 32, 4, False),
    (128, 32, 32, 8, False),
    (64, 32, 32, 4, True), (64, 64, 32, 4, True), (64, 128, 32, 4, True),
]
_INTERPRETER_TILE = (32, 32, 16, 4, False)
_SMEM_BUDGET = 160 * 1024  # bytes; an H100 block can have 227 KB, leave room for a second block


def _config(bm, bn, bk, warps, unroll):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "UNROLL_TAPS": unroll},
                         num_warps=warps, num_stages=2 if unroll else 1)


def _prune(configs, named_args, **kwargs):
    """Drop tiles far wider than the problem (BLOCK_N / BLOCK_K past the next power of two of
    N / K: pure padding), BLOCK_N under a quarter of min(N, 256) (recomputes dw too often), and
    unrolled configs whose tap buffers overflow the shared-memory budget or that gather (R > 1:
    channel j reads j // R, no vector loads; ptxas spills there)."""
    n, k = triton.next_power_of_2(named_args["N"]), triton.next_power_of_2(named_args["K"])
    taps, size = kwargs.get("KH", 7) * kwargs.get("KW", 7), named_args["x_ptr"].element_size()

    def ok(c):
        bm, bn, bk = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]
        unrolled_fits = (taps * bm * bk + 2 * bk * bn) * size <= _SMEM_BUDGET and kwargs.get("R", 1) == 1
        return (bn <= max(32, n) and bk <= max(32, k) and 4 * bn >= min(n, 256)
                and (unrolled_fits or not c.kwargs["UNROLL_TAPS"]))

    kept = [c for c in configs if ok(c)] or [c for c in configs if not c.kwargs["UNROLL_TAPS"]][:1]
    if not _INTERPRETED and len(kept) > 1 and os.environ.get("DWSEP_PARALLEL_COMPILE", "1") != "0":
        _precompile(kept, named_args, kwargs)
    return kept


def _precompile(configs, named_args, constexprs):
    """Build every candidate tile at once before the autotuner's serial loop times them.

    The autotuner compiles each candidate as it first launches it, one after another (~3 s each
    on an H100 host); in threads the compiles overlap (ptxas runs as a subprocess and much of
    LLVM outside the GIL: 1.6x on 2 cores, more with more). Prune runs once per new autotune key,
    so this costs nothing once tuned. Best effort: a failure here leaves the serial path to try
    again and report it.
    """
    jit = _fused_sep_conv_kernel.fn

    def build(config):
        jit.warmup(grid=(1,), **named_args, **constexprs, **config.all_kwargs())

    global precompile_error
    try:
        with ThreadPoolExecutor(max_workers=min(len(configs), os.cpu_count() or 1)) as pool:
            list(pool.map(build, configs))
    except Exception as exc:  # noqa: BLE001 - the autotuner compiles (and raises) on its own below
        precompile_error = exc


precompile_error = None  # the last failure of _precompile, for diagnostics (tests/benchmarks/compile_time.py)


# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------
# Tuned per shape and dtype (the autotuner adds the tensors' dtypes to the key). M is in the key
# because the batch sets the grid, hence the best tile: a tile tuned on a batch-2 verification run
# must not be reused at batch 64.
@triton.autotune(configs=[_config(*t) for t in ([_INTERPRETER_TILE] if _INTERPRETED else _TILES)],
                 key=["M", "K", "N", "H", "W", "KH", "KW", "STRIDE", "R", "DOT_PRECISION"],
                 prune_configs_by={"early_config_prune": _prune})
@triton.jit(do_not_specialize=["M", "H", "W", "Ho", "Wo"])  # alignment comes from C, K, N only
def _fused_sep_conv_kernel(
    # tensors: x [B, H, W, C] is NHWC (channels contiguous); out / res [B, N, Ho, Wo] have any
    # strides (channels_last gives stride_oc == 1, which Triton specialises: vector stores);
    # dw[j, kh, kw] is at j * stride_dw_k + kh * stride_dw_h + kw * stride_dw_w (tap-major, i.e.
    # stride_dw_k == 1, makes each tap's weights one vector load), pw[n, j] likewise
    x_ptr, dw_w_ptr, dw_b_ptr, pw_w_ptr, pw_b_ptr, res_ptr, out_ptr,
    gate_ptr,  # fp32 [B, K], contiguous: A[m, j] is scaled by gate[b(m), j] (squeeze-excitation)
    # sizes: M = B * Ho * Wo output pixels, K = C * R depthwise channels, N output channels
    M, H, W, C, Ho, Wo, K, N,
    stride_dw_k, stride_dw_h, stride_dw_w, stride_pw_n, stride_pw_k,
    stride_ob, stride_oc, stride_oh, stride_ow, stride_rb, stride_rc, stride_rh, stride_rw,
    # depthwise conv: kernel height and width, stride (both axes), zero padding per axis (the
    # same on both sides of it), channel multiplier
    KH: tl.constexpr, KW: tl.constexpr, STRIDE: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    R: tl.constexpr,
    # fused prologue / epilogue: activation names (ACT_AFTER_GATE: after the gate's scale), which
    # optional operands exist
    ACT1: tl.constexpr, ACT_AFTER_GATE: tl.constexpr, ACT2: tl.constexpr,
    HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, HAS_RES: tl.constexpr, HAS_GATE: tl.constexpr,
    # tl.dot input precision: "ieee" (exact fp32) or "tf32"; ignored for fp16 / bf16 operands.
    # UPCAST_DOT: multiply the (already rounded) operands in fp32 -- set only in the interpreter,
    # which multiplies bf16 blocks as their raw uint16 bits; bf16 products are exact in fp32.
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    # tile sizes and tap-loop structure (autotuned)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UNROLL_TAPS: tl.constexpr,
):
    """out[m, n] = act2(b2[n] + sum_j A[m, j] * pw[n, j]) (+ res[m, n]), where

        A[m, j] = act_after_gate(act1(b1[j] + sum_{kh < KH, kw < KW} x[b, oh*S - PH + kh, ow*S - PW + kw, j // R]
                                                                     * dw[j, kh, kw])
                                 [* gate[b, j]])

    and m = (b * Ho + oh) * Wo + ow is the flattened NHWC output pixel. The pointwise conv is the
    GEMM out[M, N] = A[M, K] @ pw^T[K, N]; its A operand, the depthwise output, is made on the fly.

    Tiling: program p owns out[BLOCK_M pixels, BLOCK_N channels]; the N tiles of one M tile are
    consecutive program ids (pid_n = p % ceil(N / BLOCK_N)), so they run together and read the
    same x halo from L2, while pw (K * N elements, a few MB at most) stays L2-resident. Pixels
    are flattened over (b, oh, ow), so 7x7 maps fill a tile as well as 112x112 ones. For each
    BLOCK_K chunk of K:
      1. A tile [BLOCK_M, BLOCK_K] in fp32 registers: KH * KW masked loads of x, each one
         [BLOCK_M, BLOCK_K] block contiguous along channels (vectorised); the mask is the zero
         padding. Only the scalar (kh * W + kw) * C changes between taps. Then + b1, act1,
         * gate (a [BLOCK_M, BLOCK_K] load, rows repeating per image: L1 hits), act_after_gate.
      2. A is rounded to the operand dtype (fp16 / bf16 as the unfused chain rounds its
         intermediate; fp32 stays fp32, tf32 on the tensor cores only if DOT_PRECISION says so)
         and acc[BLOCK_M, BLOCK_N] += A @ pw^T[BLOCK_K, BLOCK_N] with fp32 accumulation.
    Epilogue on the fp32 accumulator: + b2, act2, + residual, one rounding, store.

    Work per chunk: KH * KW * BLOCK_M * BLOCK_K loads + FMAs on the CUDA cores (mostly L1 hits:
    for stride 1, tap (kh, kw + 1) of pixel m is tap (kh, kw) of pixel m + 1) against
    BLOCK_M * BLOCK_K * BLOCK_N tensor-core MACs, so a wide BLOCK_N amortises the depthwise part
    and divides how often it is recomputed: ceil(N / BLOCK_N) times in total. Padded K columns
    contribute nothing (their pw rows load as 0); offsets into x / out are int64.
    """
    pid = tl.program_id(0)
    num_pid_n = (N + BLOCK_N - 1) // BLOCK_N
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n

    # this tile's output pixels, and the top-left input pixel of each receptive field
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    ow = offs_m % Wo
    oh = (offs_m // Wo) % Ho
    img = offs_m // (Wo * Ho)
    ih0 = oh * STRIDE - PH
    iw0 = ow * STRIDE - PW
    x_pix0 = ((img.to(tl.int64) * H + ih0) * W + iw0) * C  # tap (0, 0); off x only where masked

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)

    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        cin = offs_k // R  # grouped-conv convention: depthwise channel j reads input channel j // R

        # 1. depthwise tile, fp32 (UNROLL_TAPS: see the config notes at the top of the file)
        a = tl.full((BLOCK_M, BLOCK_K), 0.0, tl.float32)
        if UNROLL_TAPS:
            for kh in tl.static_range(KH):
                a = dw_row(a, kh, x_ptr, x_pix0, ih0, iw0, m_ok, cin, dw_w_ptr + offs_k * stride_dw_k, k_ok,
                            stride_dw_h, stride_dw_w, H, W, C, KW)
        else:
            for kh in range(KH):
                a = dw_row(a, kh, x_ptr, x_pix0, ih0, iw0, m_ok, cin, dw_w_ptr + offs_k * stride_dw_k, k_ok,
                            stride_dw_h, stride_dw_w, H, W, C, KW)
        if HAS_B1:
            a += tl.load(dw_b_ptr + offs_k, mask=k_ok, other=0.0).to(tl.float32)[None, :]
        a = activation(a, ACT1)
        if HAS_GATE:
            a *= tl.load(gate_ptr + img.to(tl.int64)[:, None] * K + offs_k[None, :],
                         mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        a = activation(a, ACT_AFTER_GATE)

        # 2. pointwise: acc += A @ pw^T
        b = tl.load(pw_w_ptr + offs_k[:, None] * stride_pw_k + offs_n[None, :] * stride_pw_n,
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        a = a.to(b.dtype)
        if UPCAST_DOT:
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)

    # epilogue
    if HAS_B2:
        acc += tl.load(pw_b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    acc = activation(acc, ACT2)
    img64 = img.to(tl.int64)
    out_ok = m_ok[:, None] & n_ok[None, :]
    if HAS_RES:
        res_offs = (img64 * stride_rb + oh * stride_rh + ow * stride_rw)[:, None] + offs_n[None, :] * stride_rc
        acc += tl.load(res_ptr + res_offs, mask=out_ok, other=0.0).to(tl.float32)
    out_offs = (img64 * stride_ob + oh * stride_oh + ow * stride_ow)[:, None] + offs_n[None, :] * stride_oc
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=out_ok)


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
_CONFIG_KEYS = {"BLOCK_M", "BLOCK_N", "BLOCK_K", "UNROLL_TAPS", "num_warps", "num_stages"}


def fused_sep_conv(x: torch.Tensor, dw_w: torch.Tensor, dw_b: Optional[torch.Tensor],
                   pw_w: torch.Tensor, pw_b: Optional[torch.Tensor], *, stride: int, padding,
                   act1: str = "none", act2: str = "none", residual: Optional[torch.Tensor] = None,
                   allow_tf32: bool = False, out: Optional[torch.Tensor] = None,
                   config: Optional[dict] = None, gate: Optional[torch.Tensor] = None,
                   act_after_gate: str = "none") -> torch.Tensor:
    """y = act2(pw(act_after_gate(act1(dw(x) + b1) [* gate])) + b2) [+ residual] in one launch.

    Shapes and dtypes are as in ``kernels.checks``; all operands share x's dtype (fp32, fp16 or
    bf16) and device. x is read in channels_last: a channels_last-contiguous tensor is used as
    is, any other layout (e.g. NCHW-contiguous) is first converted (a copy). The output takes
    x's memory format, as a conv's does: channels_last for channels_last x (the fast path),
    NCHW-contiguous otherwise. residual, out, dw_w and pw_w may have any strides; tap-major dw_w
    (as FusedSepConv2d stores it) loads fastest.
    Accumulation is fp32. fp32 inputs are exact fp32 unless ``allow_tf32``, which lets the 1x1
    part run on the tensor cores in tf32 (~1e-3 relative error). ``gate``: optional float32
    [B, C*r] squeeze-excitation scale of the depthwise output; ``act_after_gate``: an activation
    applied after it (after act1 when there is no gate). ``padding``: p or (ph, pw), per axis.
    ``out``: optional preallocated [B, N, Ho, Wo] output of x's dtype, NCHW- or
    channels_last-contiguous (the faster); every element is written. ``config``: skip autotuning and launch this tile config, a dict
    with keys BLOCK_M, BLOCK_N, BLOCK_K (powers of two >= 16), UNROLL_TAPS and optionally
    num_warps / num_stages (for tests and tuning).
    """
    g = check_sep_conv_args(x, dw_w, dw_b, pw_w, pw_b, stride, padding, act1, act2, residual,
                            act_after_gate=act_after_gate)
    check_gate(gate, g, x.device)
    if not isinstance(allow_tf32, bool):
        raise TypeError(f"allow_tf32 must be a bool, got {type(allow_tf32).__name__}")
    if not x.is_cuda and not _INTERPRETED:
        raise ValueError(f"fused_sep_conv runs on CUDA tensors (x is on {x.device}); for CPU tensors "
                         "set TRITON_INTERPRET=1 before kernels.fused_sep_conv is first imported, "
                         "or call kernels.sep_conv_reference")
    if config is not None and not (_CONFIG_KEYS - {"num_warps", "num_stages"} <= set(config) <= _CONFIG_KEYS):
        raise ValueError(f"config must have the keys BLOCK_M, BLOCK_N, BLOCK_K, UNROLL_TAPS "
                         f"(optionally num_warps, num_stages), got {sorted(config)}")
    shape = (g.batch, g.out_channels, g.out_h, g.out_w)
    if out is None:
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=output_format(x))
    elif (not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != x.dtype
          or out.device != x.device
          or not (out.is_contiguous() or out.is_contiguous(memory_format=torch.channels_last))):
        raise ValueError(f"out must be an NCHW- or channels_last-contiguous {x.dtype} tensor of shape {shape} "
                         f"on {x.device}")
    M = g.batch * g.out_h * g.out_w
    if M == 0:
        return out

    x = x.contiguous(memory_format=torch.channels_last)  # no copy when already channels_last
    res = out if residual is None else residual  # a placeholder pointer and strides when absent
    K, N = g.channels * g.mult, g.out_channels
    pw = pw_w.reshape(N, K)  # a view for [N, K, 1, 1]; any strides are fine
    kernel = _fused_sep_conv_kernel if config is None else _fused_sep_conv_kernel.fn
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
        kernel[grid](
            x, dw_w, x if dw_b is None else dw_b.contiguous(), pw,
            x if pw_b is None else pw_b.contiguous(),
            res, out, out if gate is None else gate.contiguous(),
            M, g.height, g.width, g.channels, g.out_h, g.out_w, K, N,
            dw_w.stride(0), dw_w.stride(2), dw_w.stride(3), pw.stride(0), pw.stride(1),
            *out.stride(), *res.stride(),
            KH=g.kh, KW=g.kw, STRIDE=stride, PH=g.pad_h, PW=g.pad_w, R=g.mult,
            ACT1=act1, ACT_AFTER_GATE=act_after_gate, ACT2=act2, HAS_B1=dw_b is not None, HAS_B2=pw_b is not None,
            HAS_RES=residual is not None, HAS_GATE=gate is not None,
            DOT_PRECISION="tf32" if (allow_tf32 or x.dtype != torch.float32) else "ieee",
            UPCAST_DOT=_INTERPRETED and x.dtype == torch.bfloat16,
            **(config or {}),
        )
    return out
