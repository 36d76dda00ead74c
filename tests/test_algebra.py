"""The pure algebra: every rewrite is the same function as the chain it replaces (float64)."""
import pytest
import torch

from rewrite.algebra import (check_collapse_dw_pw, check_collapse_pw_dw, collapse_dw_pw, collapse_pw_dw,
                             dw_pw_rank_for_budget, factorize_dw_pw, factorize_pw_dw, fold_affine, rank_test,
                             rank_tolerance)
from rewrite.ir import ConvSpec, run_chain
from tests.helpers import dw_spec, max_rel, pw_spec, rand, random_affine

X = rand(2, 6, 13, 11, gen=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [(1, 1, 1, 1), (0, 2, 1, 0), (0, 0, 0, 0)])
@pytest.mark.parametrize("r", [1, 3])
@pytest.mark.parametrize("dilation", [1, 2])
def test_collapse_dw_pw_is_exact(stride, padding, r, dilation):
    dw = dw_spec(6, 3, r, stride, padding, dilation)
    pw = pw_spec(6 * r, 5)
    dense = collapse_dw_pw(dw, pw)
    assert dense.is_dense and dense.kernel_size == (3, 3) and dense.padding == padding
    assert max_rel(dense.apply(X), run_chain([dw, pw], X)) < 1e-12


def test_collapse_dw_pw_with_strided_pointwise_multiplies_strides():
    dw, pw = dw_spec(6, 3, 1, 2), pw_spec(6, 4, stride=2)
    dense = collapse_dw_pw(dw, pw)
    assert dense.stride == (4, 4)
    assert max_rel(dense.apply(X), run_chain([dw, pw], X)) < 1e-12


@pytest.mark.parametrize("padding", [(0, 0, 0, 0), (2, 2, 2, 2), (1, 2, 0, 1)])
@pytest.mark.parametrize("r", [1, 2])
def test_collapse_pw_dw_is_exact_without_pw_bias(padding, r):
    pw = pw_spec(6, 4, bias=padding == (0, 0, 0, 0))
    dw = dw_spec(4, 5, r, 1, padding)
    dense = collapse_pw_dw(pw, dw)
    assert dense.out_channels == 4 * r and dense.in_channels == 6
    assert max_rel(dense.apply(X), run_chain([pw, dw], X)) < 1e-12


def test_collapse_declines_with_reasons():
    assert "zero padding" in check_collapse_pw_dw(pw_spec(6, 4, bias=True), dw_spec(4))
    assert "not depthwise" in check_collapse_dw_pw(pw_spec(6, 6), pw_spec(6, 4))
    assert "not a plain 1x1" in check_collapse_dw_pw(dw_spec(6), dw_spec(6))
    assert "channel mismatch" in check_collapse_dw_pw(dw_spec(6, r=2), pw_spec(6, 4))
    assert "strided" in check_collapse_pw_dw(pw_spec(6, 4, bias=False, stride=2), dw_spec(4))
    with pytest.raises(ValueError, match="zero padding"):
        collapse_pw_dw(pw_spec(6, 4), dw_spec(4))


def test_fold_affine_is_exact_with_and_without_bias():
    for bias in (True, False):
        conv = dw_spec(6, bias=bias)
        affine = random_affine(6)
        assert max_rel(fold_affine(conv, affine).apply(X), affine.apply(conv.apply(X))) < 1e-12


def test_fold_affine_keeps_dtype_and_checks_channels():
    conv = dw_spec(6, dtype=torch.float32)
    assert fold_affine(conv, random_affine(6)).weight.dtype == torch.float32
    with pytest.raises(ValueError, match="channels"):
        fold_affine(conv, random_affine(5))


@pytest.mark.parametrize("r", [1, 2, 4])
def test_round_trip_collapse_then_factorize(r):
    """A collapsed dw→pw chain tests as factorable with its multiplier, and factorizes back exactly."""
    dw, pw = dw_spec(6, 3, r, 2, (0, 1, 1, 0)), pw_spec(6 * r, 12)
    dense = collapse_dw_pw(dw, pw)
    report = rank_test(dense)
    assert report.dw_pw_rank == r
    dw2, pw2 = factorize_dw_pw(dense, report.dw_pw_rank)
    assert dw2.is_depthwise and dw2.multiplier == r and pw2.is_pointwise
    assert max_rel(run_chain([dw2, pw2], X), run_chain([dw, pw], X)) < 1e-12


def test_round_trip_pw_dw():
    pw, dw = pw_spec(6, 8, bias=False), dw_spec(8, 5)
    dense = collapse_pw_dw(pw, dw)
    report = rank_test(dense)
    assert report.pw_dw_exact and report.dw_pw_rank > 1
    pw2, dw2 = factorize_pw_dw(dense)
    assert pw2.bias is None  # a pw bias would leak into the dw conv's zero padding
    assert max_rel(run_chain([pw2, dw2], X), dense.apply(X)) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rank_test_tolerance_follows_dtype(dtype):
    """Low-rank weights rounded to the dtype still test low-rank; generic weights stay full rank."""
    g = torch.Generator().manual_seed(3)
    dense = collapse_dw_pw(dw_spec(8, gen=g), pw_spec(8, 16, gen=g)).to(dtype)
    assert rank_test(dense).dw_pw_rank == 1
    generic = ConvSpec(rand(16, 8, 3, 3, gen=g).to(dtype))
    report = rank_test(generic)
    assert report.dw_pw_rank == 9 and not report.pw_dw_exact
    assert rank_tolerance(dtype) > rank_tolerance(torch.float64)


def test_rank_test_rejects_non_float_and_grouped():
    with pytest.raises(TypeError):
        rank_tolerance(torch.int8)
    with pytest.raises(ValueError, match="dense"):
        rank_test(dw_spec(6))


def test_zero_weight_has_rank_zero():
    assert rank_test(ConvSpec(torch.zeros(4, 3, 3, 3, dtype=torch.float64))).dw_pw_rank == 0


def test_budget_picks_smallest_rank_and_bounds_weight_error():
    g = torch.Generator().manual_seed(5)
    dense = collapse_dw_pw(dw_spec(8, r=3, gen=g), pw_spec(24, 16, gen=g))
    noisy = ConvSpec(dense.weight + 1e-4 * rand(*dense.weight.shape, gen=g), dense.bias, padding=(1, 1, 1, 1))
    r, err = dw_pw_rank_for_budget(noisy, 1e-2)
    assert r == 3 and err <= 1e-2
    dw, pw = factorize_dw_pw(noisy, r)
    assert max_rel(run_chain([dw, pw], X.repeat(1, 2, 1, 1)[:, :8]), noisy.apply(X.repeat(1, 2, 1, 1)[:, :8])) < 1e-2
