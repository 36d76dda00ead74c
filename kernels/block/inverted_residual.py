"""A whole inverted-residual block (MobileNetV2/V3, EfficientNet, MNASNet, MobileNetV4's IB) in one
Triton launch, and its squeeze-excitation form in three:

    h = act0(x @ We^T + be)                         1x1 expansion C -> Hd (Hd = C * e)
    a = act1(dw_kxk(h) + bd)                        depthwise kh x kw, stride 1/2, zero padding OF h
    [a = act_after_gate(a * s[b])]                  optional squeeze-excitation gate
    y = act2(a @ Wp^T + bp) [+ residual]            1x1 projection Hd -> N

BatchNorm is folded beforehand. The expanded tensor h (e times the block's width) never reaches
global memory: the unfused chain writes it, reads and writes it again for its activation, and
reads it once more in the depthwise conv. Blocked algorithm, traffic and FLOPs: the kernel's
docstring. Importing this module imports Triton; under ``TRITON_INTERPRET=1`` (set before the
first import) the kernels run on CPU tensors in Triton's interpreter. As in
kernels/sep_conv/fused_sep_conv.py the kernels call only builtins of triton.language, so one source
compiles on Triton 3.6 and 3.8.

Squeeze-excitation (``inverted_residual_se``): the gate needs the mean over the whole depthwise
map, so
  1. the block kernel in SUMS mode, program (b·T + t, hidden chunk): computes a for BLOCK_M pixels
     of image b (no projection) and writes the tile's fp32 column sums of a (rounded to x's dtype
     first, as the unfused chain writes a) to part[b, t, :] -- kernels/sep_conv/sep_conv_se.py's per-tile
     partial sums, deterministic (no atomics);
  2. kernels/sep_conv/sep_conv_se.py's ``_excite_kernel``: the gate s = se_gate(W2 se_act(W1 mean + c1) + c2);
  3. the block kernel with the gate.
The expansion and depthwise conv are thus computed twice (phases 1 and 3), which costs FLOPs only:
a is never written (2·M·Hd bytes saved against writing it in phase 1 and reading it in phase 3).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels.activations import SE_GATES
from kernels.activations import activation as activation_fn
from kernels.block.checks import BlockGeometry, check_inverted_residual_args
from kernels.checks import check_gate, check_se_weights, output_format, triton_interpreting
from kernels.sep_conv.sep_conv_se import EXCITE_BLOCK_K, _add, _excite_kernel
from kernels.tiles import activation, aligned, dot_acc, output_tile, pointwise_epilogue, pow2_divisor

_INTERPRETED = triton_interpreting()  # triton.jit below makes the same choice, once, at import


# ---------------------------------------------------------------------------------------------
# Tiles
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockTile:
    """A whole-block kernel's tile: BLOCK_M output pixels x BLOCK_N output channels, the hidden
    channels in BLOCK_H chunks, the input channels in BLOCK_C chunks."""
    block_m: int
    block_n: int
    block_h: int
    block_c: int
    num_warps: int
    num_stages: int

    def config(self) -> dict:
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, BLOCK_H=self.block_h, BLOCK_C=self.block_c,
                    num_warps=self.num_warps, num_stages=self.num_stages)

    def __str__(self) -> str:
        return (f"{self.block_m}x{self.block_n}/h{self.block_h}/c{self.block_c}/{self.num_warps}w/"
                f"{self.num_stages}s")


INTERPRETER_TILE = BlockTile(32, 32, 16, 16, 4, 1)  # small blocks run fastest in the interpreter
_CONFIG_KEYS = {"BLOCK_M", "BLOCK_N", "BLOCK_H", "BLOCK_C", "num_warps", "num_stages"}


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def tile_for(g: BlockGeometry) -> BlockTile:
    """The tile by regime, from the geometry alone (no timing):

      * BLOCK_N = next power of two of N in [32, 256]: for N <= 256 (every MobileNet / EfficientNet
        projection but the last 320) one N tile covers all outputs, so the expansion and depthwise
        work is done once per pixel block, not once per N tile;
      * BLOCK_M = 64, so both dots are Hopper wgmma (m64nNk16); 128 for C <= 16 (the early,
        large-map blocks), where a 64 x 16 tile of x over 8 warps is copied in 8-byte pieces;
      * BLOCK_C = next power of two of C in [16, 128]: C <= 128 (most blocks) is one chunk, and the
        expansion weights' [BLOCK_C, BLOCK_H] tile is loaded once per hidden chunk for all taps;
      * BLOCK_H = 64, 32 beside a 256-wide accumulator, a 128-wide x chunk or 128 rows (registers: the
        fp32 tiles a, h [BLOCK_M, BLOCK_H] and acc [BLOCK_M, BLOCK_N] all live at once);
      * 8 warps: with 4, a 64 x 64 hidden chunk reached ptxas's 255 registers and spilled once the
        gate and silu activations came in (EfficientNet-B0's 40 -> 240 -> 40: 20-32 bytes);
      * two stages: the tap loop's x tile is prefetched (cp.async) during the previous tap's dots.
    tests/hopper/test_static_block_sm90.py checks these tiles compile to wgmma without spills.
    """
    block_n = min(256, max(32, _next_pow2(g.out_channels)))
    block_c = min(128, max(16, _next_pow2(g.channels)))
    block_m = 128 if block_c == 16 else 64
    block_h = 32 if (block_n == 256 or block_c == 128 or block_m == 128) else 64
    return BlockTile(block_m, block_n, block_h, block_c, 8, 2)


# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["M", "H", "W", "Ho", "Wo", "TILES"])  # alignment comes from C, Hd, N only
def _inverted_residual_kernel(
    # tensors: x [B, H, W, C] NHWC; ex_w [Hd, C] with unit stride along C; dw[j, kh, kw] at
    # j * stride_dw_k + kh * stride_dw_h + kw * stride_dw_w (tap-major: stride_dw_k == 1); pw [N, Hd]
    # with unit stride along Hd; out / res [B, N, Ho, Wo] any strides; gate fp32 [B, Hd];
    # part fp32 [B, TILES, Hd] (SUMS mode)
    x_ptr, ex_w_ptr, ex_b_ptr, dw_w_ptr, dw_b_ptr, pw_w_ptr, pw_b_ptr, res_ptr, out_ptr, gate_ptr, part_ptr,
    # sizes: M = B * Ho * Wo output pixels; TILES: pixel tiles per image (SUMS mode)
    M, H, W, C, Ho, Wo, HD, N, TILES,
    stride_ex_h, stride_dw_k, stride_dw_h, stride_dw_w, stride_pw_n,
    stride_ob, stride_oc, stride_oh, stride_ow, stride_rb, stride_rc, stride_rh, stride_rw,
    # depthwise conv: kernel height and width, stride (both axes), zero padding of h per axis
    KH: tl.constexpr, KW: tl.constexpr, STRIDE: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    ACT0: tl.constexpr, ACT1: tl.constexpr, ACT_AFTER_GATE: tl.constexpr, ACT2: tl.constexpr,
    HAS_B0: tl.constexpr, HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, HAS_RES: tl.constexpr,
    HAS_GATE: tl.constexpr,
    # SUMS: squeeze-excitation phase 1 -- per-image pixel tiles, one hidden chunk per program
    # (program_id(1)), no projection: the column sums of a go to part
    SUMS: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    # powers of two (<= 16) the host found to divide C, Hd, N, ex_w's / pw's row strides, dw's tap
    # strides and the output's / residual's pixel strides (vector loads and stores)
    X_ALIGN: tl.constexpr, HD_ALIGN: tl.constexpr, N_ALIGN: tl.constexpr, EX_ALIGN: tl.constexpr,
    DW_ALIGN: tl.constexpr, PW_ALIGN: tl.constexpr, OUT_ALIGN: tl.constexpr, RES_ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr,
    ONE_C_CHUNK: tl.constexpr,  # C <= BLOCK_C: the expansion weights are loaded once per hidden chunk
):
    """out[m, n] = act2(bp[n] + sum_j A[m, j] * Wp[n, j]) (+ res[m, n]), where for output pixel
    m = (b, oh, ow) and hidden channel j

        A[m, j] = act_after_gate(act1(bd[j] + sum_{kh, kw} Hpad[b, oh*S - PH + kh, ow*S - PW + kw, j] * dw[j, kh, kw])
                                 [* gate[b, j]])
        Hpad[b, ih, iw, j] = act0(be[j] + sum_c x[b, ih, iw, c] * We[j, c])   inside the image, 0 outside.

    Blocked algorithm. Program p owns out[BLOCK_M pixels (flattened over (b, oh, ow)), BLOCK_N
    channels]. For each BLOCK_H chunk of the hidden channels:
      1. for each of the KH * KW taps: load the x rows of the tapped input pixels, [BLOCK_M, C]
         (masked, channels contiguous: vector loads; in BLOCK_C chunks when C > BLOCK_C), expand
         them on the tensor cores, h = x_tap @ We^T[C, BLOCK_H] (fp32 accumulation), + be, act0,
         round h to x's dtype (the unfused chain writes h in fp16 / bf16), and set it to 0 where
         the tapped pixel lies outside the image (the depthwise conv pads h, and act0(be) != 0);
         then a += h * dw[:, kh, kw] in fp32 on the CUDA cores;
      2. a += bd, act1, [* gate, act_after_gate]; round a to the operand dtype and
         acc[BLOCK_M, BLOCK_N] += a @ Wp^T[BLOCK_H, BLOCK_N] on the tensor cores.
    Epilogue on the fp32 accumulator (kernels.tiles.pointwise_epilogue): + bp, act2, + residual,
    one rounding, the store in the output's layout (vectorised for channels_last).

    Halo recompute. Each h pixel is expanded once per tap that reads it, KH * KW times for stride
    1 (about KH * KW / 4 for stride 2), and once more per extra N tile. Per output pixel, with e
    the itemsize and stride 1:
        this kernel   HBM  e * (C + N) (+ e * N residual): x once (its KH * KW re-reads hit L1/L2)
                      FLOPs 2 * (KH*KW * C * Hd + KH*KW * Hd + Hd * N), the first and last on tensor cores
        unfused chain HBM  e * (C + N) + e * Hd * (2 + 2 for a separate activation pass)
                      FLOPs 2 * (C * Hd + KH*KW * Hd + Hd * N)
    MobileNetV2's 24 -> 144 -> 24, 3x3, fp16: 96 B and 72 kFLOP a pixel here (750 FLOP/B) against
    about 670-1250 B and 16 kFLOP unfused: the layer trades ~9x the bytes for 4.4x the FLOPs, all
    of the extra on the tensor cores (an H100/H200 does about 300 dense fp16 FLOP per byte of HBM
    bandwidth, so the fused block is roughly at the ridge while the unfused chain is memory
    bound). The alternative, expanding each halo pixel once into shared memory and reading the
    taps from there, is not expressible in plain triton.language: a program has no shared-memory
    buffer it can index (Triton 3.6 / 3.8 place shared memory themselves, for dot operands,
    layout conversions and pipelined loads), and tl.gather only permutes a register tensor, which
    would need the whole [halo pixels, BLOCK_H] expansion live in registers per tap row. Which of
    the two wins on a real GPU is left for a measurement there.
    """
    C = aligned(C, X_ALIGN)
    HD = aligned(HD, HD_ALIGN)
    N = aligned(N, N_ALIGN)
    stride_ex_h = aligned(stride_ex_h, EX_ALIGN)
    stride_dw_h = aligned(stride_dw_h, DW_ALIGN)
    stride_dw_w = aligned(stride_dw_w, DW_ALIGN)
    stride_pw_n = aligned(stride_pw_n, PW_ALIGN)

    # this program's output pixels (and channels), the top-left input pixel of each receptive field
    if SUMS:  # per-image tiles, so the column sums are per image; one hidden chunk per program
        pid = tl.program_id(0)
        img = pid // TILES
        offs_p = (pid % TILES) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = offs_p < Ho * Wo
        oh = offs_p // Wo
        ow = offs_p % Wo
        h_start = tl.program_id(1) * BLOCK_H
        h_stop = h_start + BLOCK_H
    else:
        offs_m, m_ok, img, oh, ow, offs_n, n_ok = output_tile(M, N, Ho, Wo, BLOCK_M, BLOCK_N)
        acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
        h_start = 0
        h_stop = HD
    ih0 = oh * STRIDE - PH
    iw0 = ow * STRIDE - PW
    x_pix0 = ((img.to(tl.int64) * H + ih0) * W + iw0) * C  # tap (0, 0); off x only where masked
    offs_c = tl.arange(0, BLOCK_C)

    for h0 in range(h_start, h_stop, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        h_ok = offs_h < HD
        ex_cols = ex_w_ptr + offs_h[None, :] * stride_ex_h  # We^T[:, chunk]: row c of the tile is channel c
        if ONE_C_CHUNK:  # the whole We^T[C, BLOCK_H] tile, for every tap
            c_ok = offs_c < C
            we = tl.load(ex_cols + offs_c[:, None], mask=c_ok[:, None] & h_ok[None, :], other=0.0)
        if HAS_B0:
            be = tl.load(ex_b_ptr + offs_h, mask=h_ok, other=0.0).to(tl.float32)
        dw_cols = dw_w_ptr + offs_h * stride_dw_k

        # 1. depthwise over the expanded taps, fp32
        a = tl.full((BLOCK_M, BLOCK_H), 0.0, tl.float32)
        for t in range(KH * KW):
            kh = t // KW
            kw = t % KW
            ih = ih0 + kh
            iw = iw0 + kw
            tap_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x_rows = x_ptr + (x_pix0 + (kh * W + kw) * C)[:, None]
            # 1a. expansion of the tapped pixels: h = x_tap @ We^T
            h = tl.full((BLOCK_M, BLOCK_H), 0.0, tl.float32)
            if ONE_C_CHUNK:
                xv = tl.load(x_rows + offs_c[None, :], mask=tap_ok[:, None] & c_ok[None, :], other=0.0)
                h = dot_acc(xv, we, h, DOT_PRECISION, UPCAST_DOT)
            else:
                for c0 in range(0, C, BLOCK_C):
                    cc = c0 + offs_c
                    cc_ok = cc < C
                    xv = tl.load(x_rows + cc[None, :], mask=tap_ok[:, None] & cc_ok[None, :], other=0.0)
                    wc = tl.load(ex_cols + cc[:, None], mask=cc_ok[:, None] & h_ok[None, :], other=0.0)
                    h = dot_acc(xv, wc, h, DOT_PRECISION, UPCAST_DOT)
            # 1b. + be, act0, rounded as the unfused chain writes h; zero padding of h
            if HAS_B0:
                h += be[None, :]
            h = activation(h, ACT0).to(x_ptr.dtype.element_ty).to(tl.float32)
            h = tl.where(tap_ok[:, None], h, 0.0)
            # 1c. this tap's depthwise weights
            wv = tl.load(dw_cols + kh * stride_dw_h + kw * stride_dw_w, mask=h_ok, other=0.0)
            a += h * wv.to(tl.float32)[None, :]

        # 2. + bd, act1, then the channel sums (SUMS) or the gate and the projection
        if HAS_B1:
            a += tl.load(dw_b_ptr + offs_h, mask=h_ok, other=0.0).to(tl.float32)[None, :]
        a = activation(a, ACT1)
        if SUMS:
            # rounded as the unfused chain writes a; rows past the image are 0 (act1(bd) is not)
            a = tl.where(m_ok[:, None], a.to(x_ptr.dtype.element_ty).to(tl.float32), 0.0)
            tl.store(part_ptr + pid.to(tl.int64) * HD + offs_h, tl.reduce(a, 0, _add), mask=h_ok)
        else:
            if HAS_GATE:
                a *= tl.load(gate_ptr + img.to(tl.int64)[:, None] * HD + offs_h[None, :],
                             mask=m_ok[:, None] & h_ok[None, :], other=0.0)
            a = activation(a, ACT_AFTER_GATE)
            b = tl.load(pw_w_ptr + offs_h[:, None] + offs_n[None, :] * stride_pw_n,
                        mask=h_ok[:, None] & n_ok[None, :], other=0.0)
            acc = dot_acc(a.to(b.dtype), b, acc, DOT_PRECISION, UPCAST_DOT)

    if not SUMS:
        pointwise_epilogue(acc, pw_b_ptr, res_ptr, out_ptr, offs_n, n_ok, m_ok, img, oh, ow,
                           stride_ob, stride_oc, stride_oh, stride_ow, stride_rb, stride_rc, stride_rh, stride_rw,
                           ACT2, HAS_B2, HAS_RES, OUT_ALIGN, RES_ALIGN)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------
def kernel_arguments(x, ex_w, ex_b, dw_w, dw_b, pw, pw_b, res, out, gate, part, g: BlockGeometry, stride: int,
                     acts: tuple, has_res: bool, allow_tf32: bool, sums: bool = False, tiles: int = 1) -> tuple:
    """The kernel's runtime arguments (by name, in order) and its constexprs except the tile's.

    x channels_last; ex_w [Hd, C] and pw [N, Hd] with unit inner stride; res: the residual, or any
    tensor with the output's strides when has_res is False; acts (act0, act1, act_after_gate, act2).
    Tensors may be meta tensors (kernels/hopper.py's static builds pass the same arguments).
    """
    act0, act1, act_after_gate, act2 = acts
    args = dict(
        x_ptr=x, ex_w_ptr=ex_w, ex_b_ptr=x if ex_b is None else ex_b.contiguous(), dw_w_ptr=dw_w,
        dw_b_ptr=x if dw_b is None else dw_b.contiguous(), pw_w_ptr=pw,
        pw_b_ptr=x if pw_b is None else pw_b.contiguous(),
        res_ptr=res, out_ptr=out, gate_ptr=out if gate is None else gate.contiguous(),
        part_ptr=out if part is None else part,
        M=g.batch * g.out_h * g.out_w, H=g.height, W=g.width, C=g.channels, Ho=g.out_h, Wo=g.out_w, HD=g.hidden,
        N=g.out_channels, TILES=tiles,
        stride_ex_h=ex_w.stride(0), stride_dw_k=dw_w.stride(0), stride_dw_h=dw_w.stride(2),
        stride_dw_w=dw_w.stride(3), stride_pw_n=pw.stride(0),
        **dict(zip(("stride_ob", "stride_oc", "stride_oh", "stride_ow"), out.stride())),
        **dict(zip(("stride_rb", "stride_rc", "stride_rh", "stride_rw"), res.stride())),
    )
    constexprs = dict(
        KH=g.kh, KW=g.kw, STRIDE=stride, PH=g.pad_h, PW=g.pad_w,
        ACT0=act0, ACT1=act1, ACT_AFTER_GATE=act_after_gate, ACT2=act2,
        HAS_B0=ex_b is not None, HAS_B1=dw_b is not None, HAS_B2=pw_b is not None, HAS_RES=has_res,
        HAS_GATE=gate is not None, SUMS=sums,
        DOT_PRECISION="tf32" if (allow_tf32 or x.dtype != torch.float32) else "ieee",
        UPCAST_DOT=_INTERPRETED and x.dtype == torch.bfloat16,
        X_ALIGN=pow2_divisor(g.channels), HD_ALIGN=pow2_divisor(g.hidden), N_ALIGN=pow2_divisor(g.out_channels),
        EX_ALIGN=pow2_divisor(ex_w.stride(0)), DW_ALIGN=pow2_divisor(*dw_w.stride()[2:]),
        PW_ALIGN=pow2_divisor(pw.stride(0)), OUT_ALIGN=pow2_divisor(*out.stride()[::2], out.stride(3)),
        RES_ALIGN=pow2_divisor(*res.stride()[::2], res.stride(3)),
    )
    return args, constexprs


def _tile(g: BlockGeometry, config: Optional[dict]) -> dict:
    if config is None:
        return (INTERPRETER_TILE if _INTERPRETED else tile_for(g)).config()
    if not (_CONFIG_KEYS - {"num_warps", "num_stages"} <= set(config) <= _CONFIG_KEYS):
        raise ValueError(f"config must have the keys BLOCK_M, BLOCK_N, BLOCK_H, BLOCK_C (optionally num_warps, "
                         f"num_stages), got {sorted(config)}")
    return dict(config)


def _prepare(x, ex_w, pw_w, g: BlockGeometry, allow_tf32, name: str):
    if not isinstance(allow_tf32, bool):
        raise TypeError(f"allow_tf32 must be a bool, got {type(allow_tf32).__name__}")
    if not x.is_cuda and not _INTERPRETED:
        raise ValueError(f"{name} runs on CUDA tensors (x is on {x.device}); for CPU tensors set TRITON_INTERPRET=1 "
                         f"before kernels.block.inverted_residual is first imported, or call kernels.{name}_reference")
    out = torch.empty((g.batch, g.out_channels, g.out_h, g.out_w), dtype=x.dtype, device=x.device,
                      memory_format=output_format(x))
    # no copies for channels_last x and for the module's [Hd, C] / [N, Hd] weights
    return (out, x.contiguous(memory_format=torch.channels_last), ex_w.reshape(g.hidden, g.channels).contiguous(),
            pw_w.reshape(g.out_channels, g.hidden).contiguous())


def _launch_block(x, ex_w, ex_b, dw_w, dw_b, pw, pw_b, residual, out, gate, g, stride, acts, allow_tf32, tile):
    res = out if residual is None else residual  # a placeholder pointer and strides when absent
    args, constexprs = kernel_arguments(x, ex_w, ex_b, dw_w, dw_b, pw, pw_b, res, out, gate, None, g, stride, acts,
                                        residual is not None, allow_tf32)
    grid = (triton.cdiv(args["M"], tile["BLOCK_M"]) * triton.cdiv(g.out_channels, tile["BLOCK_N"]),)
    _inverted_residual_kernel[grid](*args.values(), **constexprs, **tile, ONE_C_CHUNK=g.channels <= tile["BLOCK_C"])


def inverted_residual(x: torch.Tensor, ex_w: torch.Tensor, ex_b: Optional[torch.Tensor], dw_w: torch.Tensor,
                      dw_b: Optional[torch.Tensor], pw_w: torch.Tensor, pw_b: Optional[torch.Tensor], *, stride: int,
                      padding, act0: str = "none", act1: str = "none", act2: str = "none",
                      residual: Optional[torch.Tensor] = None, gate: Optional[torch.Tensor] = None,
                      act_after_gate: str = "none", allow_tf32: bool = False,
                      config: Optional[dict] = None) -> torch.Tensor:
    """y = act2(pw(act_after_gate(act1(dw(act0(ex(x) + ex_b)) + dw_b) [* gate])) + pw_b) [+ residual]
    in one launch.

    Operands as in kernels.block.checks, all of x's dtype (fp32, fp16, bf16) and device; x is read
    channels_last (other layouts are converted first, a copy); the output takes x's memory format.
    ``gate``: optional float32 [B, Hd] scale of the depthwise output, ``act_after_gate`` applied
    after it. fp32 is exact fp32 unless ``allow_tf32``. ``config``: this tile rather than
    ``tile_for``'s, a dict with keys BLOCK_M, BLOCK_N, BLOCK_H, BLOCK_C (powers of two >= 16) and
    optionally num_warps / num_stages.
    """
    g = check_inverted_residual_args(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, stride, padding, act0, act1, act2,
                                     residual, act_after_gate)
    check_gate(gate, g.tail, x.device)
    out, x, ex, pw = _prepare(x, ex_w, pw_w, g, allow_tf32, "inverted_residual")
    tile = _tile(g, config)
    if out.numel() == 0:
        return out
    with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
        _launch_block(x, ex, ex_b, dw_w, dw_b, pw, pw_b, residual, out, gate, g, stride,
                      (act0, act1, act_after_gate, act2), allow_tf32, tile)
    return out


def inverted_residual_se(x: torch.Tensor, ex_w: torch.Tensor, ex_b: Optional[torch.Tensor], dw_w: torch.Tensor,
                         dw_b: Optional[torch.Tensor], pw_w: torch.Tensor, pw_b: Optional[torch.Tensor],
                         w1: torch.Tensor, c1: torch.Tensor, w2: torch.Tensor, c2: torch.Tensor, *, stride: int,
                         padding, act0: str = "none", act1: str = "none", act2: str = "none", se_act: str = "relu",
                         se_gate: str = "sigmoid", act_after_gate: str = "none",
                         residual: Optional[torch.Tensor] = None, allow_tf32: bool = False,
                         config: Optional[dict] = None) -> torch.Tensor:
    """The block with its squeeze-excitation, s = se_gate(W2 se_act(W1 mean_hw(a) + c1) + c2) of the
    depthwise output a, in three launches (see the module docstring). w1 [S, Hd], c1 [S], w2 [Hd, S],
    c2 [Hd] (1x1-conv shapes accepted), any float dtype: the excitation runs in fp32."""
    g = check_inverted_residual_args(x, ex_w, ex_b, dw_w, dw_b, pw_w, pw_b, stride, padding, act0, act1, act2,
                                     residual, act_after_gate)
    squeeze = check_se_weights(w1, c1, w2, c2, g.hidden)
    activation_fn(se_act)  # a ValueError names the valid choices
    if se_gate not in SE_GATES:
        raise ValueError(f"se_gate={se_gate!r} is not supported; expected one of {SE_GATES}")
    out, x, ex, pw = _prepare(x, ex_w, pw_w, g, allow_tf32, "inverted_residual_se")
    tile = _tile(g, config)
    if out.numel() == 0:
        return out
    Hd, pixels = g.hidden, g.out_h * g.out_w
    tiles = triton.cdiv(pixels, tile["BLOCK_M"])
    part = torch.empty((g.batch, tiles, Hd), dtype=torch.float32, device=x.device)
    gate = torch.empty((g.batch, Hd), dtype=torch.float32, device=x.device)
    acts = (act0, act1, act_after_gate, act2)
    with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
        # 1. column sums of a per (image, pixel tile)
        args, constexprs = kernel_arguments(x, ex, ex_b, dw_w, dw_b, pw, pw_b, out, out, None, part, g, stride, acts,
                                            False, allow_tf32, sums=True, tiles=tiles)
        _inverted_residual_kernel[(g.batch * tiles, triton.cdiv(Hd, tile["BLOCK_H"]))](
            *args.values(), **constexprs, **tile, ONE_C_CHUNK=g.channels <= tile["BLOCK_C"])
        # 2. the excitation MLP (kernels/sep_conv/sep_conv_se.py's kernel)
        _excite_kernel[(g.batch,)](
            part, w1.reshape(squeeze, Hd).contiguous(), c1.contiguous(), w2.reshape(Hd, squeeze).contiguous(),
            c2.contiguous(), gate, Hd, squeeze, tiles, 1.0 / pixels,
            SE_ACT=se_act, GATE=se_gate, BLOCK_S=max(16, triton.next_power_of_2(squeeze)), BLOCK_K=EXCITE_BLOCK_K,
            num_warps=4)
        # 3. the gated block
        _launch_block(x, ex, ex_b, dw_w, dw_b, pw, pw_b, residual, out, gate, g, stride, acts, allow_tf32, tile)
    return out


def hopper_build(g: BlockGeometry, stride: int, tile: Optional[BlockTile] = None, *, act0: str = "relu6",
                 act1: str = "relu6", act2: str = "none", residual: bool = False, gate: bool = False,
                 sums: bool = False, allow_tf32: bool = False):
    """Compile the block kernel for sm_90 as FusedInvertedResidual2d would launch it on this geometry
    (channels_last x and output, tap-major depthwise weights, biases) with this tile (default:
    ``tile_for(g)``), without a GPU: a kernels.hopper.HopperBuild. ``sums``: the squeeze-excitation
    phase-1 form; ``gate``: phase 3."""
    from kernels.hopper import build_sm90

    tile = tile or tile_for(g)
    meta = dict(device="meta", dtype=g.dtype)
    Hd, N = g.hidden, g.out_channels
    x = torch.empty((g.batch, g.channels, g.height, g.width), **meta).contiguous(memory_format=torch.channels_last)
    dw_w = torch.empty((1, g.kh, g.kw, Hd), **meta).permute(3, 0, 1, 2)  # tap-major, as the module stores it
    out = torch.empty((g.batch, N, g.out_h, g.out_w), **meta).contiguous(memory_format=torch.channels_last)
    f32 = dict(device="meta", dtype=torch.float32)
    tiles = triton.cdiv(g.out_h * g.out_w, tile.block_m)
    args, constexprs = kernel_arguments(
        x, torch.empty((Hd, g.channels), **meta), torch.empty(Hd, **meta), dw_w, torch.empty(Hd, **meta),
        torch.empty((N, Hd), **meta), torch.empty(N, **meta), out, out,
        torch.empty((g.batch, Hd), **f32) if gate else None, torch.empty((g.batch, tiles, Hd), **f32), g, stride,
        (act0, act1, "none", act2), residual, allow_tf32, sums=sums, tiles=tiles)
    config = tile.config()
    warps, stages = config.pop("num_warps"), config.pop("num_stages")
    return build_sm90(_inverted_residual_kernel,
                      {n: (v.dtype if isinstance(v, torch.Tensor) else v) for n, v in args.items()},
                      {**constexprs, **config, "ONE_C_CHUNK": g.channels <= tile.block_c},
                      num_warps=warps, num_stages=stages)
