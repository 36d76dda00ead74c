"""Fused depthwise + pointwise (+ activations, + SE gate, + residual) convolution in one Triton launch.

    y = act2(pw(act_after_gate(act1(dw(x) + b1) * gate)) + b2) [+ residual]

(gate[b, j]: an optional squeeze-excitation scale per image and depthwise channel, computed
beforehand from the depthwise output's channel means (FusedSepConvSE2d itself runs the
three-launch form of kernels/sep_conv/sep_conv_se.py instead); act_after_gate: an activation after it, as
ReXNet applies its ReLU6 after the squeeze-excitation. dw is any kh x kw kernel, 1 <= kh, kw <= 7.)
BatchNorm is folded into the weights and biases beforehand; the depthwise result never reaches
global memory. The tiling maths is in the kernel's docstring. Importing this module imports
Triton (``import kernels`` does not); under ``TRITON_INTERPRET=1`` (set before this module is
first imported) the kernel runs on CPU tensors in Triton's interpreter. The kernels call only
builtins of triton.language (tl.full, not the @jit tl.zeros / tl.cdiv / tl.sigmoid), so that
works even when Triton itself was imported without the interpreter.
"""
import time
from contextlib import nullcontext
from typing import Optional

import torch
import triton
import triton.language as tl

import kernels.sep_conv.tuning as tuning
from kernels.checks import check_gate, output_format, triton_interpreting
from kernels.sep_conv.checks import check_sep_conv_args
from kernels.sep_conv.tiles import INTERPRETER_TILE, Tile, tile_for
from kernels.tiles import activation, aligned, dot_acc, dw_row, output_tile, pointwise_epilogue, pow2_divisor

_INTERPRETED = triton_interpreting()  # triton.jit below makes the same choice, once, at import


# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------
# The tile (BLOCK_*, UNROLL_TAPS, num_warps, num_stages) comes from kernels/sep_conv/tiles.py's
# table by regime, or from opt-in autotuning (kernels/sep_conv/tuning.py): no autotuner here.
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
    # powers of two (<= 16) the host found to divide C (hence K), N, dw's tap strides, pw's row stride and the
    # output's / residual's pixel strides (restated below so that channel vectors become 128-bit
    # accesses when C or N is a multiple of 8 but not of 16, as at MobileNetV3's 72, 120, 184)
    X_ALIGN: tl.constexpr, N_ALIGN: tl.constexpr, DW_ALIGN: tl.constexpr, PW_ALIGN: tl.constexpr, OUT_ALIGN: tl.constexpr,
    RES_ALIGN: tl.constexpr,
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
    C = aligned(C, X_ALIGN)
    K = aligned(K, X_ALIGN)
    N = aligned(N, N_ALIGN)  # the masks n < N then stay constant over 8-channel vectors too
    stride_dw_h = aligned(stride_dw_h, DW_ALIGN)
    stride_dw_w = aligned(stride_dw_w, DW_ALIGN)
    stride_pw_n = aligned(stride_pw_n, PW_ALIGN)

    # this tile's output pixels and channels, and the top-left input pixel of each receptive field
    offs_m, m_ok, img, oh, ow, offs_n, n_ok = output_tile(M, N, Ho, Wo, BLOCK_M, BLOCK_N)
    ih0 = oh * STRIDE - PH
    iw0 = ow * STRIDE - PW
    x_pix0 = ((img.to(tl.int64) * H + ih0) * W + iw0) * C  # tap (0, 0); off x only where masked
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
        acc = dot_acc(a, b, acc, DOT_PRECISION, UPCAST_DOT)

    pointwise_epilogue(acc, pw_b_ptr, res_ptr, out_ptr, offs_n, n_ok, m_ok, img, oh, ow,
                       stride_ob, stride_oc, stride_oh, stride_ow, stride_rb, stride_rc, stride_rh, stride_rw,
                       ACT2, HAS_B2, HAS_RES, OUT_ALIGN, RES_ALIGN)


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
    channels_last-contiguous (the faster); every element is written. ``config``: launch this tile
    rather than the one ``choose_tile`` picks, a dict with keys BLOCK_M, BLOCK_N, BLOCK_K (powers
    of two >= 16), UNROLL_TAPS and optionally num_warps / num_stages (for tests and tuning).
    """
    g = check_sep_conv_args(x, dw_w, dw_b, pw_w, pw_b, stride, padding, act1, act2, residual,
                            act_after_gate=act_after_gate)
    check_gate(gate, g, x.device)
    if not isinstance(allow_tf32, bool):
        raise TypeError(f"allow_tf32 must be a bool, got {type(allow_tf32).__name__}")
    if not x.is_cuda and not _INTERPRETED:
        raise ValueError(f"fused_sep_conv runs on CUDA tensors (x is on {x.device}); for CPU tensors "
                         "set TRITON_INTERPRET=1 before kernels.sep_conv.fused_sep_conv is first imported, "
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
    args, constexprs = kernel_arguments(x, dw_w, dw_b, pw, pw_b, res, out, gate, g, stride, act1, act2,
                                        residual is not None, allow_tf32, act_after_gate)

    def launch(config: dict) -> None:
        grid = (triton.cdiv(M, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"]),)
        with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
            _fused_sep_conv_kernel[grid](*args.values(), **constexprs, **config)

    launch(config if config is not None else choose_tile(g, stride, x.device, launch).config())
    return out


def choose_tile(g, stride: int, device: torch.device, launch) -> Tile:
    """The tile for this launch: the table's by regime (kernels/sep_conv/tiles.py), the small
    interpreter tile under TRITON_INTERPRET, or with DWSEP_AUTOTUNE=1 the fastest candidate as
    timed once per problem by ``launch(config)`` and kept on disk (kernels/sep_conv/tuning.py)."""
    if tuning.enabled():
        return tuning.tuned_tile(tuning.key(g, stride, device),
                                 [INTERPRETER_TILE] if _INTERPRETED else tuning.candidates(g),
                                 lambda tile: _seconds(lambda: launch(tile.config()), device))
    return INTERPRETER_TILE if _INTERPRETED else tile_for(g, stride)


def _seconds(run, device: torch.device) -> float:
    """Median seconds per run: triton.testing.do_bench (CUDA events, cache flushed) on a GPU, one
    timed call in the interpreter (where only the tuning path itself is under test)."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(run, warmup=5, rep=25) * 1e-3
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def kernel_arguments(x, dw_w, dw_b, pw, pw_b, res, out, gate, g, stride: int, act1: str, act2: str,
                     has_res: bool, allow_tf32: bool, act_after_gate: str = "none") -> tuple[dict, dict]:
    """The kernel's runtime arguments (by name, in order) and its constexprs except the tile's.

    x channels_last; pw [N, K]; res: the residual, or any tensor with the output's strides when
    has_res is False; g the checked Geometry. Tensors may be meta tensors (shape and strides only:
    kernels/hopper.py's static builds pass the same arguments as a launch).
    """
    args = dict(
        x_ptr=x, dw_w_ptr=dw_w, dw_b_ptr=x if dw_b is None else dw_b.contiguous(), pw_w_ptr=pw,
        pw_b_ptr=x if pw_b is None else pw_b.contiguous(), res_ptr=res, out_ptr=out,
        gate_ptr=out if gate is None else gate.contiguous(),
        M=g.batch * g.out_h * g.out_w, H=g.height, W=g.width, C=g.channels, Ho=g.out_h, Wo=g.out_w,
        K=g.channels * g.mult, N=g.out_channels,
        stride_dw_k=dw_w.stride(0), stride_dw_h=dw_w.stride(2), stride_dw_w=dw_w.stride(3),
        stride_pw_n=pw.stride(0), stride_pw_k=pw.stride(1),
        **dict(zip(("stride_ob", "stride_oc", "stride_oh", "stride_ow"), out.stride())),
        **dict(zip(("stride_rb", "stride_rc", "stride_rh", "stride_rw"), res.stride())),
    )
    constexprs = dict(
        KH=g.kh, KW=g.kw, STRIDE=stride, PH=g.pad_h, PW=g.pad_w, R=g.mult,
        ACT1=act1, ACT_AFTER_GATE=act_after_gate, ACT2=act2, HAS_B1=dw_b is not None, HAS_B2=pw_b is not None,
        HAS_RES=has_res, HAS_GATE=gate is not None,
        DOT_PRECISION="tf32" if (allow_tf32 or x.dtype != torch.float32) else "ieee",
        UPCAST_DOT=_INTERPRETED and x.dtype == torch.bfloat16,
        X_ALIGN=pow2_divisor(g.channels), N_ALIGN=pow2_divisor(g.out_channels), DW_ALIGN=pow2_divisor(*dw_w.stride()[2:]),
        PW_ALIGN=pow2_divisor(pw.stride(0)), OUT_ALIGN=pow2_divisor(*out.stride()[::2], out.stride(3)),
        RES_ALIGN=pow2_divisor(*res.stride()[::2], res.stride(3)),
    )
    return args, constexprs


def hopper_build(g, stride: int, tile, *, act1: str = "relu6", act2: str = "none",
                 residual: bool = False, gate: bool = False, allow_tf32: bool = False):
    """Compile the kernel for sm_90 as FusedSepConv2d would launch it on this geometry (channels_last
    x and output, tap-major depthwise weights, biases) with this tile (kernels.sep_conv.tiles.Tile),
    without a GPU: a kernels.hopper.HopperBuild to read the TTGIR / PTX from."""
    from kernels.hopper import build_sm90

    meta = dict(device="meta", dtype=g.dtype)
    K, N = g.channels * g.mult, g.out_channels
    x = torch.empty((g.batch, g.channels, g.height, g.width), **meta).contiguous(memory_format=torch.channels_last)
    dw_w = torch.empty((1, g.kh, g.kw, K), **meta).permute(3, 0, 1, 2)  # tap-major, as FusedSepConv2d
    pw = torch.empty((N, K), **meta)
    out = torch.empty((g.batch, N, g.out_h, g.out_w), **meta).contiguous(memory_format=torch.channels_last)
    gate_t = torch.empty((g.batch, K), device="meta", dtype=torch.float32) if gate else None
    args, constexprs = kernel_arguments(x, dw_w, torch.empty(K, **meta), pw, torch.empty(N, **meta), out, out,
                                        gate_t, g, stride, act1, act2, residual, allow_tf32)
    config = tile.config()
    warps, stages = config.pop("num_warps"), config.pop("num_stages")
    return build_sm90(_fused_sep_conv_kernel, {n: (v.dtype if isinstance(v, torch.Tensor) else v)
                                               for n, v in args.items()},
                      {**constexprs, **config}, num_warps=warps, num_stages=stages)
