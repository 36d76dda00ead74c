"""Data-aware decoupling: fit a dense KxK conv as depthwise→pointwise (or pointwise→depthwise) on
the inputs it really sees, by least squares from its input patches' second moments (float64).

A dense conv W ∈ R^{N×M×k×k} with bias b maps each input patch p ∈ R^{M·K} (K = k², channel-major,
as F.unfold lays it out) to y = W p + b. Augment p_a = [p; 1] and W_a = [W, b]; over the inputs
the conv sees, with the raw second moment S = E[p_a p_aᵀ], the mean output error of any W'_a is

    E‖(W_a − W'_a) p_a‖² = tr(ΔW_a S ΔW_aᵀ)                                    (1)

so S (streamed over calibration samples, `PatchMoments`) is all a fit needs. For a fixed W' the
best bias is b' = b + (W − W') μ (μ = E[p]); what remains is tr(ΔW C ΔWᵀ) with the covariance
C = E[p pᵀ] − μ μᵀ, which the fits minimise. Weight-only SVD minimises ‖ΔW‖_F, i.e. takes C = I;
that is the wrong target where the input's directions differ in energy (trained nets: always).

dw→pw with multiplier r (D ∈ R^{M×r×K} depthwise filters, P ∈ R^{N×M×r} pointwise weights):

    W'[n, m, t] = Σ_i P[n, m, i] D[m, i, t]

  P-step (D fixed): W' = P A with A[(m,i), (m',t)] = δ_mm' D[m,i,t], so
      P = W C Aᵀ (A C Aᵀ)⁻¹                                                     (2)
  D-step (P fixed): ∂/∂D = 0 gives, with G = Pᵀ P ∈ R^{Mr×Mr},
      Σ_{m',i',t'} G[(m,i),(m',i')] C[(m',t'),(m,t)] D[m',i',t'] = (Pᵀ W C)[(m,i),(m,t)]   (3)
  a linear system of size M·r·K (up to FULL_SOLVE unknowns: conjugate gradients on the whole system,
  warm-started; above it, each channel's block solved alone, a block Gauss-Seidel step: either
  way the loss never rises).

pw→dw with r (Q ∈ R^{N×r×M} pointwise, D ∈ R^{N×r×K}: a conv with groups = N, r inputs each; r = 1
is depthwise): W'[n, m, t] = Σ_i Q[n, i, m] D[n, i, t]; the loss splits over output channels n,
and each of Q[n], D[n] solves a small normal equation with C (both linear in it). The pointwise
conv gets no bias (the depthwise conv zero-pads its output; a bias would leak into the border),
so b' goes to the second conv, as it does in the exact pw→dw factorization.

Both start from the weight-only SVD (the exact factorization's formulas) and alternate; each step
minimises (1) over one factor exactly, so the fitted error never exceeds the SVD's. `output_error`
evaluates (1) relative to E‖W_a p_a‖² on held-out moments: the error the rewrite adds to this
conv's output, as an RMS ratio.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..ir import ConvSpec, ParallelBranches

FULL_SOLVE = 3000        # above this many unknowns the D-step solves per input channel
SETTLED = 3e-3           # an alternation that lowers the loss by less than this fraction ends the fit
ITERATIONS = 6           # at most this many alternations (on trained convs the loss settles in 3-6)
CG_STEPS = 30            # conjugate-gradient steps of a D-step, warm-started from the current filters
RIDGE = 1e-7             # relative ridge on the normal equations: keeps dead channels solvable


@dataclass
class PatchMoments:
    """Streamed moments of a conv's augmented input patches [p; 1] (float64): `second` is Σ p_a p_aᵀ
    over `count` patches. Add activations batch by batch; at most `max_pixels` output pixels of
    each batch are kept (evenly spaced), which bounds the work at (M·K)² per pixel kept."""

    conv: ConvSpec
    max_pixels: int = 1024
    count: int = 0
    second: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        patches = conv_patches(x, self.conv, self.max_pixels)               # [P, M·K]
        patches = torch.cat([patches, torch.ones(patches.shape[0], 1)], 1)
        outer = (patches.T @ patches).double()     # fp32 products of at most max_pixels terms, summed in fp64
        self.second = outer if self.second is None else self.second + outer
        self.count += patches.shape[0]

    @property
    def raw(self) -> torch.Tensor:
        """E[p_a p_aᵀ]."""
        if not self.count:
            raise ValueError("no patch was streamed into these moments")
        return self.second / self.count

    @property
    def mean(self) -> torch.Tensor:
        return self.raw[-1, :-1]

    @property
    def covariance(self) -> torch.Tensor:
        s = self.raw
        return s[:-1, :-1] - torch.outer(s[-1, :-1], s[-1, :-1])


def conv_patches(x: torch.Tensor, conv: ConvSpec, max_pixels: int | None = None) -> torch.Tensor:
    """[pixels, M·K]: the input patch of every output pixel of a dense conv (zero-padded as the conv
    pads), or of at most `max_pixels` of them, evenly spaced over the batch's output pixels, gathered
    tap by tap (unfolding a whole 160² map only to keep a tenth of it is most of the streaming's time)."""
    t, b, l, r = conv.padding
    x = F.pad(x.detach().float(), (l, r, t, b))
    batch, m, h, w = x.shape
    x = x.permute(0, 2, 3, 1).contiguous()            # [B, H, W, M]: each gathered patch row is contiguous
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    total = batch * oh * ow
    index = torch.arange(total) if max_pixels is None or total <= max_pixels else \
        torch.linspace(0, total - 1, max_pixels).round().long()
    n, rest = index // (oh * ow), index % (oh * ow)
    ys, xs = (rest // ow) * sh, (rest % ow) * sw
    taps = [x[n, ys + i * dh, xs + j * dw] for i in range(kh) for j in range(kw)]        # each [P, M]
    return torch.stack(taps, dim=2).reshape(len(index), m * kh * kw)                    # channel-major, as W


@dataclass
class Fit:
    """A fitted form: `layers` (the chain replacing the conv), its effective dense weight and bias
    (what the chain computes, as one conv), and its relative RMS output error on the fit moments."""

    form: str               # "dw→pw" or "pw→dw"
    multiplier: int
    layers: list
    weight: torch.Tensor    # [N, M, kh, kw] float64
    bias: torch.Tensor      # [N] float64
    fit_error: float

    @property
    def name(self) -> str:
        return f"{self.form} r={self.multiplier}"


def fit_dw_pw(conv: ConvSpec, moments: PatchMoments, r: int, iterations: int = ITERATIONS,
              settled: float = SETTLED) -> Fit:
    """Fit dw(multiplier r)→pw to `conv` on `moments` by alternating (2) and (3), from the SVD."""
    _check(conv)
    w, n, m, k = _weights(conv)
    r = min(r, n, k)
    c = _ridged(moments.covariance)
    c4 = c.reshape(m, k, m, k)
    u, s, vh = _svd(w.permute(1, 0, 2))                                              # slabs [M, N, K]
    root = s[:, :r].sqrt()
    d = vh[:, :r, :] * root[..., None]                                               # [M, r, K]
    p = (u[:, :, :r] * root[:, None, :]).permute(1, 0, 2)                            # [N, M, r]
    wc = (w.reshape(n, m * k) @ c).reshape(n, m, k)
    losses = _Losses(w, c, settled)
    for _ in range(iterations):
        a_c_a = torch.einsum("mit,mtou,oju->mioj", d, c4, d).reshape(m * r, m * r)   # A C Aᵀ
        w_c_a = torch.einsum("nmt,mit->nmi", wc, d).reshape(n, m * r)                # W C Aᵀ
        p = _solve(a_c_a, w_c_a.T).T.reshape(n, m, r)                                # (2)
        d = _d_step(p, c4, wc, d)                                                    # (3)
        if losses.settled(torch.einsum("nmi,mit->nmt", p, d)):
            break
    effective = torch.einsum("nmi,mit->nmt", p, d)
    kh, kw = conv.kernel_size
    dtype = conv.weight.dtype
    bias = _bias(conv, w, effective, moments)
    dw = ConvSpec(d.reshape(m * r, 1, kh, kw).to(dtype), None, conv.stride, conv.padding, conv.dilation, groups=m)
    pw = ConvSpec(p.reshape(n, m * r, 1, 1).to(dtype), bias.to(dtype))
    return _fit("dw→pw", r, [dw, pw], effective, bias, conv, moments)


def fit_pw_dw(conv: ConvSpec, moments: PatchMoments, r: int, iterations: int = ITERATIONS,
              settled: float = SETTLED) -> Fit:
    """Fit pw(M→N·r)→conv(groups=N) to `conv` on `moments`: Q- and D-steps per output channel."""
    _check(conv)
    w, n, m, k = _weights(conv)
    r = min(r, m, k)
    c4 = _ridged(moments.covariance).reshape(m, k, m, k)
    u, s, vh = _svd(w)                                                               # slabs [N, M, K]
    root = s[:, :r].sqrt()
    q = (u[:, :, :r] * root[:, None, :]).permute(0, 2, 1)                            # [N, r, M]
    d = vh[:, :r, :] * root[..., None]                                               # [N, r, K]
    wc = torch.einsum("nou,mtou->nmt", w, c4)
    losses = _Losses(w, c4.reshape(m * k, m * k), settled)
    for _ in range(iterations):
        # Q-step: Σ_{t,t'} D[n,i,t] C[m,t,o,u] D[n,j,u] Q[n,j,o] = Σ D[n,i,t] (C w_n)[m,t]
        lhs = torch.einsum("nit,mtou,nju->nimjo", d, c4, d).reshape(n, r * m, r * m)
        rhs = torch.einsum("nit,nmt->nim", d, wc).reshape(n, r * m, 1)
        q = _solve(lhs, rhs).reshape(n, r, m)
        # D-step: Σ_{m,o} Q[n,i,m] C[m,t,o,u] Q[n,j,o] D[n,j,u] = Σ_m Q[n,i,m] (C w_n)[m,t]
        lhs = torch.einsum("nim,mtou,njo->nitju", q, c4, q).reshape(n, r * k, r * k)
        rhs = torch.einsum("nim,nmt->nit", q, wc).reshape(n, r * k, 1)
        d = _solve(lhs, rhs).reshape(n, r, k)
        if losses.settled(torch.einsum("nim,nit->nmt", q, d)):
            break
    effective = torch.einsum("nim,nit->nmt", q, d)
    kh, kw = conv.kernel_size
    dtype = conv.weight.dtype
    bias = _bias(conv, w, effective, moments)
    pw = ConvSpec(q.reshape(n * r, m, 1, 1).to(dtype), None)
    # groups=N with r inputs each (depthwise at r = 1): out channel n reads pw channels n·r … n·r + r − 1
    dw = ConvSpec(d.reshape(n, r, kh, kw).to(dtype), bias.to(dtype), conv.stride, conv.padding, conv.dilation, groups=n)
    return _fit("pw→dw", r, [pw, dw], effective, bias, conv, moments)


def parallel_pairs(dw: ConvSpec, pw: ConvSpec) -> ParallelBranches:
    """The dw→pw chain with channel multiplier r as r parallel (dw, pw) pairs, summed: the same
    function in a form that runs faster where a depthwise conv with r > 1 is slow (onnxruntime's
    CPU provider). The grouped dw conv (groups = M) writes channel m·r + i as D[m, i] ⋆ x_m, so

        y = Σ_{m,i} P[:, m·r + i] (D[m, i] ⋆ x_m + b_dw[m·r + i]) + b
          = Σ_i pw_i(dw_i(x)),   dw_i = (W_dw[i::r], b_dw[i::r]; groups M),  pw_i = W_pw[:, i::r],

    with the pw bias on the first pair only. Exact (a reordering of the same sums)."""
    r = dw.out_channels // dw.in_channels
    if not dw.is_depthwise or r < 2 or dw.out_channels != r * dw.in_channels or not pw.is_pointwise:
        raise ValueError(f"parallel_pairs takes a depthwise conv with channel multiplier ≥ 2 then a 1x1 conv, got "
                         f"{dw.describe()} → {pw.describe()}")
    branches = []
    for i in range(r):
        dw_i = ConvSpec(dw.weight[i::r].contiguous(), None if dw.bias is None else dw.bias[i::r].contiguous(),
                        dw.stride, dw.padding, dw.dilation, groups=dw.in_channels)
        pw_i = ConvSpec(pw.weight[:, i::r].contiguous(), pw.bias if i == 0 else None)
        branches.append((dw_i, pw_i))
    return ParallelBranches(tuple(branches))


def weight_svd(conv: ConvSpec, form: str, r: int) -> torch.Tensor:
    """The weight-only baseline's effective weight (float64): each input-channel slab (dw→pw) or
    output-channel slab (pw→dw) truncated to rank r by its SVD, i.e. the fit with C = I."""
    w, n, m, k = _weights(conv)
    slabs = w.permute(1, 0, 2) if form == "dw→pw" else w                             # [M, N, K] or [N, M, K]
    u, s, vh = _svd(slabs)
    truncated = torch.einsum("bir,br,brt->bit", u[:, :, :r], s[:, :r], vh[:, :r, :])
    truncated = truncated.permute(1, 0, 2) if form == "dw→pw" else truncated
    return truncated.reshape(conv.weight.shape)


def svd_dw_pw(conv: ConvSpec, moments: PatchMoments, r: int) -> Fit:
    """The weight-only baseline at multiplier r as a Fit (layers from the exact factorization's
    formulas; no bias correction), to compare its error on the same moments."""
    from .factorize import factorize_dw_pw
    dw, pw = factorize_dw_pw(conv, r)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
    weight = weight_svd(conv, "dw→pw", r)
    return Fit("dw→pw (weight SVD)", r, [dw, pw], weight, bias, output_error(conv, weight, bias, moments))


def output_error(conv: ConvSpec, weight: torch.Tensor, bias: torch.Tensor, moments: PatchMoments) -> float:
    """sqrt(E‖ΔW_a p_a‖² / E‖W_a p_a‖²) by (1) on `moments` (fit or held-out): the relative RMS
    error a fitted form adds to the conv's output."""
    w, n, m, k = _weights(conv)
    b = conv.bias.double() if conv.bias is not None else torch.zeros(n, dtype=torch.float64)
    full = torch.cat([w.reshape(n, m * k), b[:, None]], 1)
    delta = full - torch.cat([weight.double().reshape(n, m * k), bias.double()[:, None]], 1)
    s = moments.raw
    err = torch.einsum("ij,jk,ik->", delta, s, delta).clamp_min(0).item()
    ref = torch.einsum("ij,jk,ik->", full, s, full).item()
    return math.sqrt(err / ref) if ref > 0 else (0.0 if err == 0 else math.inf)


def _d_step(p: torch.Tensor, c4: torch.Tensor, wc: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(3): the whole system up to FULL_SOLVE unknowns, else each input channel's block (its
    right-hand side taking the other channels' current filters as fixed)."""
    n, m, r = p.shape
    k = c4.shape[1]
    rhs = torch.einsum("nmi,nmt->mit", p, wc)                                        # (Pᵀ W C) block diagonal
    if m * r * k <= FULL_SOLVE:
        g = torch.einsum("nmi,noj->mioj", p, p)
        lhs = torch.einsum("mioj,oumt->mitoju", g, c4).reshape(m * r * k, m * r * k)
        return _descend(_ridged(lhs), rhs.reshape(-1), d.reshape(-1)).reshape(m, r, k)
    d = d.clone()
    g = torch.einsum("nmi,noj->mioj", p, p)
    for ch in range(m):
        # the other channels' contribution, Σ_{o≠ch} G[ch,i,o,j] C[o,u,ch,t] D[o,j,u], moved right
        others = torch.einsum("ioj,out,oju->it", g[ch], c4[:, :, ch, :], d) - torch.einsum(
            "ij,ut,ju->it", g[ch, :, ch, :], c4[ch, :, ch, :], d[ch])
        lhs = torch.einsum("ij,ut->itju", g[ch, :, ch, :], c4[ch, :, ch, :]).reshape(r * k, r * k)
        d[ch] = _solve(lhs, (rhs[ch] - others).reshape(-1, 1)).reshape(r, k)
    return d


def _bias(conv: ConvSpec, w: torch.Tensor, effective: torch.Tensor, moments: PatchMoments) -> torch.Tensor:
    """b' = b + (W − W') μ: the bias that keeps the mean output where it was."""
    n = w.shape[0]
    b = conv.bias.double() if conv.bias is not None else torch.zeros(n, dtype=torch.float64)
    return b + (w - effective).reshape(n, -1) @ moments.mean


def _fit(form: str, r: int, layers: list, effective: torch.Tensor, bias: torch.Tensor, conv: ConvSpec,
         moments: PatchMoments) -> Fit:
    weight = effective.reshape(conv.weight.shape)
    return Fit(form, r, layers, weight, bias, output_error(conv, weight, bias, moments))


def _weights(conv: ConvSpec):
    n, m, kh, kw = conv.weight.shape
    return conv.weight.double().reshape(n, m, kh * kw), n, m, kh * kw


class _Losses:
    """tr(ΔW C ΔWᵀ) after each alternation: settled once it improves by less than `settled` of itself."""

    def __init__(self, w: torch.Tensor, c: torch.Tensor, settled: float):
        self.w, self.c, self.settled_at, self.last = w.reshape(w.shape[0], -1), c, settled, None

    def settled(self, effective: torch.Tensor) -> bool:
        delta = self.w - effective.reshape(self.w.shape)
        loss = torch.einsum("ij,jk,ik->", delta, self.c, delta).item()
        done = self.last is not None and self.last - loss <= self.settled_at * abs(self.last)
        self.last = loss
        return done


def _svd(slabs: torch.Tensor):
    """Batched thin SVD in float64 (numpy's: torch's batched CPU SVD takes seconds for a few hundred
    small matrices)."""
    u, s, vh = np.linalg.svd(slabs.detach().double().numpy(), full_matrices=False)
    return torch.from_numpy(u), torch.from_numpy(s), torch.from_numpy(vh)


def _descend(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, steps: int = CG_STEPS) -> torch.Tensor:
    """Conjugate gradients on a x = b (a symmetric positive definite) from the warm start x: each
    step lowers ½xᵀax − bᵀx, so the fit's loss never rises, at n² a step where a Cholesky solve
    costs n³/3 (the D-step's system has M·r·K unknowns: 1728 for 96 channels at r = 2)."""
    residual = b - a @ x
    direction, rr = residual.clone(), residual @ residual
    stop = 1e-20 * (b @ b)
    for _ in range(steps):
        if rr <= stop:
            break
        ad = a @ direction
        step = rr / (direction @ ad)
        x = x + step * direction
        residual = residual - step * ad
        rr, previous = residual @ residual, rr
        direction = residual + (rr / previous) * direction
    return x


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a⁻¹ b for symmetric positive semi-definite (batched) normal equations, ridged; Cholesky,
    with a least-squares fallback where the ridge is not enough."""
    a = _ridged(a)
    factor, info = torch.linalg.cholesky_ex(a)
    if not bool((info == 0).all()):
        return torch.linalg.lstsq(a, b).solution
    return torch.cholesky_solve(b, factor)


def _ridged(a: torch.Tensor) -> torch.Tensor:
    scale = torch.diagonal(a, dim1=-2, dim2=-1).mean(-1).clamp_min(1e-300)
    a = a.clone()
    torch.diagonal(a, dim1=-2, dim2=-1).add_(RIDGE * scale[..., None])
    return a


def _check(conv: ConvSpec) -> None:
    if not conv.is_dense:
        raise ValueError("decoupling fits a dense conv (groups=1)")
