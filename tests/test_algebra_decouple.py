"""The data-aware decoupling fit (rewrite/algebra/decouple.py): exact where the inputs allow it,
never worse than the weight SVD on the inputs it was fitted to, and its chain computes its
effective weight."""
import pytest
import torch
import torch.nn.functional as F

from rewrite.algebra.decouple import PatchMoments, fit_dw_pw, fit_pw_dw, output_error, svd_dw_pw
from rewrite.ir import ConvSpec, run_chain


def _conv(n=12, m=8, k=3, stride=1, padding=(1, 1, 1, 1), bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ConvSpec(torch.randn(n, m, k, k, generator=g, dtype=torch.float64),
                    torch.randn(n, generator=g, dtype=torch.float64) if bias else None,
                    (stride, stride), padding)


def _moments(conv, xs):
    moments = PatchMoments(conv, max_pixels=100_000)
    for x in xs:
        moments.add(x)
    return moments


def _paired_inputs(m, seed, count=4, size=12):
    """Inputs whose channels come in equal pairs (x[2j] = x[2j+1]): they span a subspace in which
    only W[:, 2j] + W[:, 2j+1] is seen."""
    g = torch.Generator().manual_seed(seed)
    half = [torch.randn(1, m // 2, size, size, generator=g) for _ in range(count)]
    return [h.repeat_interleave(2, dim=1) + 0.5 for h in half]


def test_fit_is_exact_where_the_inputs_allow_it_and_the_weight_svd_is_not():
    base = _conv(m=4, seed=1)
    # W[:, 2j] + W[:, 2j+1] is the rank-1 slab a·uvᵀ, each half alone is full rank
    g = torch.Generator().manual_seed(2)
    u, v = torch.randn(12, 2, generator=g), torch.randn(2, 9, generator=g)
    slab = torch.einsum("nj,jt->jnt", u, v).reshape(2, 12, 3, 3)               # per pair j: u_j v_jᵀ
    noise = torch.randn(12, 2, 3, 3, generator=g)
    weight = torch.empty(12, 4, 3, 3)
    weight[:, 0::2] = slab.permute(1, 0, 2, 3) / 2 + noise
    weight[:, 1::2] = slab.permute(1, 0, 2, 3) / 2 - noise
    conv = ConvSpec(weight.double(), base.bias.double(), (1, 1), (1, 1, 1, 1))
    fit_on, held_out = _paired_inputs(4, 3), _paired_inputs(4, 4)
    fitted = fit_dw_pw(conv, _moments(conv, fit_on), 1, iterations=30, settled=-1.0)   # all 30: no early stop
    held = _moments(conv, held_out)
    assert output_error(conv, fitted.weight, fitted.bias, held) < 1e-6
    svd = svd_dw_pw(conv, held, 1)
    assert svd.fit_error > 0.1              # the weight-only truncation misses what the inputs see
    for x in held_out:                      # and the chain computes it: on real activations, not only in (1)
        y = F.conv2d(x.double(), conv.weight, conv.bias, padding=1)
        got = run_chain(fitted.layers, x.double())
        assert ((got - y).abs().max() / y.abs().max()).item() < 1e-6


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("form, r", [("dw→pw", 1), ("dw→pw", 2), ("pw→dw", 1), ("pw→dw", 2)])
def test_the_chain_computes_the_effective_weight_and_beats_the_svd(form, r, stride):
    conv = _conv(stride=stride, padding=(1, 0, 1, 0) if stride == 2 else (1, 1, 1, 1), seed=5)
    g = torch.Generator().manual_seed(6)
    mix = torch.randn(8, 8, generator=g)         # correlated channels, unequal energy: what trained nets see
    xs = [torch.einsum("cd,bdhw->bchw", mix, torch.randn(2, 8, 11, 11, generator=g)).relu() for _ in range(3)]
    moments = _moments(conv, xs)
    fit = (fit_dw_pw if form == "dw→pw" else fit_pw_dw)(conv, moments, r)
    effective = ConvSpec(fit.weight, fit.bias, conv.stride, conv.padding)
    for x in xs:
        want = run_chain([effective], x.double())
        got = run_chain([layer for layer in fit.layers], x.double())
        assert ((got - want).abs().max() / want.abs().max()).item() < 1e-10
    if form == "dw→pw":
        assert fit.fit_error <= svd_dw_pw(conv, moments, r).fit_error + 1e-12
    assert 0 < fit.fit_error < 1


def test_moments_sample_pixels_and_keep_the_bias_row():
    conv = _conv(m=3)
    x = torch.randn(2, 3, 40, 40)
    few = PatchMoments(conv, max_pixels=500)
    few.add(x)
    assert few.count == 500 and few.second.shape == (28, 28)
    assert few.raw[-1, -1].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no patch"):
        PatchMoments(conv).raw


def test_parallel_pairs_compute_the_grouped_chain():
    """r parallel (dw, pw) pairs summed = one dw conv with multiplier r then the pw (a reordering)."""
    from rewrite.algebra.decouple import parallel_pairs
    from rewrite.ir import ConvSpec, ParallelBranches, run_chain

    g = torch.Generator().manual_seed(3)
    dw = ConvSpec(torch.randn(15, 1, 3, 3, generator=g, dtype=torch.float64), torch.randn(15, generator=g,
                  dtype=torch.float64), (2, 2), (0, 1, 1, 1), (1, 1), groups=5)          # multiplier 3
    pw = ConvSpec(torch.randn(7, 15, 1, 1, generator=g, dtype=torch.float64), torch.randn(7, generator=g,
                  dtype=torch.float64))
    pairs = parallel_pairs(dw, pw)
    assert isinstance(pairs, ParallelBranches) and len(pairs.branches) == 3
    assert all(b[0].weight.shape == (5, 1, 3, 3) and b[1].weight.shape == (7, 5, 1, 1) for b in pairs.branches)
    x = torch.randn(2, 5, 9, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(pairs.apply(x), run_chain([dw, pw], x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="multiplier"):
        parallel_pairs(ConvSpec(dw.weight[:5], None, groups=5), pw)
