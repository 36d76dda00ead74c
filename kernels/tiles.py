"""Triton device functions the kernels share: the activation epilogue and the depthwise tap row.

The first two run on fp32 register blocks inside a kernel (`@triton.jit` functions, inlined where called):

    activation(x, ACT)   the formulas of kernels/activations.py, by name
    dw_row(a, kh, ...)   a += the KW taps of depthwise kernel row kh: [BLOCK_M pixels, BLOCK_K
                         channels] masked loads of NHWC x (zero padding is the mask) times the weights
    aligned(v, A)        v restated as a multiple of A (a divisibility hint)
    output_tile          a program's pixels and output channels
    dot_acc              acc + a @ b on the tensor cores (exact fp32 products in the interpreter)
    pointwise_epilogue   + b2, act2, + residual and the store of a 1x1 conv's accumulator

and one host-side helper of every launcher: pow2_divisor, the power of two that divides sizes and
strides (the alignment constexprs that ``aligned`` restates). Used by both kernel families
(kernels/sep_conv/, kernels/block/). Nothing here launches anything.
"""
import triton
import triton.language as tl


@triton.jit
def activation(x, ACT: tl.constexpr):
    """The formulas of kernels/activations.py, on an fp32 block."""
    if ACT == "relu":
        x = tl.maximum(x, 0.0)
    elif ACT == "relu6":
        x = tl.minimum(tl.maximum(x, 0.0), 6.0)
    elif ACT == "silu":
        x = x / (1.0 + tl.exp(-x))
    elif ACT == "hardswish":
        x = x * tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0
    elif ACT == "gelu":
        x = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    return x


@triton.jit
def aligned(value, ALIGN: tl.constexpr):
    """value, for a value the host knows to be a multiple of ALIGN: value // ALIGN * ALIGN is the
    same number, but Triton's axis analysis now knows the divisibility (vector loads / stores)."""
    return value // ALIGN * ALIGN


@triton.jit
def dw_row(a, kh, x_ptr, x_pix0, ih0, iw0, m_ok, cin, dw_w_ptrs, k_ok, stride_dw_h, stride_dw_w, H, W, C,
            KW: tl.constexpr):
    """a += the KW taps of kernel row kh (a kh x KW kernel has KH such rows):

        a[m, j] += sum_{kw < KW} x[b, ih0[m] + kh, iw0[m] + kw, cin[j]] * dw[j, kh, kw]

    as masked [BLOCK_M, BLOCK_K] loads of x (zero outside the image) times dw."""
    ih = ih0 + kh
    row_ok = m_ok & (ih >= 0) & (ih < H)
    for kw in tl.static_range(KW):
        iw = iw0 + kw
        ok = row_ok & (iw >= 0) & (iw < W)
        xv = tl.load(x_ptr + (x_pix0 + (kh * W + kw) * C)[:, None] + cin[None, :],
                     mask=ok[:, None] & k_ok[None, :], other=0.0)
        wv = tl.load(dw_w_ptrs + kh * stride_dw_h + kw * stride_dw_w, mask=k_ok, other=0.0)
        a += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    return a


@triton.jit
def dot_acc(a, b, acc, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """acc + a @ b with fp32 accumulation. UPCAST_DOT (set only in the interpreter, which multiplies
    bf16 blocks as their raw uint16 bits) multiplies the already rounded operands in fp32: bf16
    products are exact there."""
    if UPCAST_DOT:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def output_tile(M, N, Ho, Wo, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's output tile of a pixels x channels GEMM: (offs_m, m_ok, img, oh, ow, offs_n,
    n_ok), pixels m = (img·Ho + oh)·Wo + ow. The N tiles of one M tile are consecutive program
    ids, so they run together and share the M tile's inputs in L2."""
    pid = tl.program_id(0)
    num_pid_n = (N + BLOCK_N - 1) // BLOCK_N
    offs_m = (pid // num_pid_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = (pid % num_pid_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_m, offs_m < M, offs_m // (Wo * Ho), (offs_m // Wo) % Ho, offs_m % Wo, offs_n, offs_n < N


@triton.jit
def pointwise_epilogue(acc, pw_b_ptr, res_ptr, out_ptr, offs_n, n_ok, m_ok, img, oh, ow,
                       stride_ob, stride_oc, stride_oh, stride_ow, stride_rb, stride_rc, stride_rh, stride_rw,
                       ACT2: tl.constexpr, HAS_B2: tl.constexpr, HAS_RES: tl.constexpr,
                       OUT_ALIGN: tl.constexpr, RES_ALIGN: tl.constexpr):
    """The 1x1 conv's epilogue on the fp32 accumulator [BLOCK_M pixels (img, oh, ow), BLOCK_N
    channels]: + b2, act2, + residual, one rounding, a store in the output's strides (OUT_ALIGN /
    RES_ALIGN: powers of two the host found to divide the pixel strides, restated as in aligned)."""
    if HAS_B2:
        acc += tl.load(pw_b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    acc = activation(acc, ACT2)
    img64 = img.to(tl.int64)
    out_ok = m_ok[:, None] & n_ok[None, :]
    if HAS_RES:
        res_offs = (img64 * aligned(stride_rb, RES_ALIGN) + oh * aligned(stride_rh, RES_ALIGN)
                    + ow * aligned(stride_rw, RES_ALIGN))[:, None] + offs_n[None, :] * stride_rc
        acc += tl.load(res_ptr + res_offs, mask=out_ok, other=0.0).to(tl.float32)
    out_offs = (img64 * aligned(stride_ob, OUT_ALIGN) + oh * aligned(stride_oh, OUT_ALIGN)
                + ow * aligned(stride_ow, OUT_ALIGN))[:, None] + offs_n[None, :] * stride_oc
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=out_ok)


def pow2_divisor(*values: int, cap: int = 16) -> int:
    """The largest power of two <= cap that divides every value (0 counts as divisible)."""
    align = cap
    while align > 1 and any(v % align for v in values):
        align //= 2
    return align
