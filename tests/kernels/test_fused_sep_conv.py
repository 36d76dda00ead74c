"""The fused Triton kernel (run in Triton's interpreter) against a float64 reference, for every
depthwise kernel shape kh x kw up to 7x7 (square or not), per-axis padding, strides 1 and 2."""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.activations import ACTIVATIONS
from tests.kernels.helpers import TOL, operands, poisoned_out, reference64, rel_err

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _grid_cases():
    """dtype x k x stride, each with a different mix of r, activations, bias, residual, layouts
    of x and out, padding and (odd) sizes; C*r and N are not multiples of the interpreter's 16 / 32 blocks."""
    cases = []
    for i, (dtype, k, stride) in enumerate(itertools.product(DTYPES, (3, 5, 7), (1, 2))):
        cases.append(pytest.param(dict(
            dtype=dtype, k=k, stride=stride, r=1 + i % 2, act1=ACTIVATIONS[i % 6], act2=ACTIVATIONS[(5 * i + 1) % 6],
            bias=i % 3 != 2, residual=(i // 2) % 2 == 0, channels_last=i % 4 != 1,
            padding=(k // 2, k // 2, k // 2, k // 2 + 1, k // 2, 0)[i % 6], out_nhwc=i % 3 != 1,
            B=2 + i % 2, C=(5, 6, 9)[i % 3], H=(9, 11, 7)[i % 3], W=(7, 9, 13)[i % 3], N=(40, 24, 10)[i % 3],
        ), id=f"{str(dtype)[6:]}-k{k}-s{stride}-i{i}"))
    return cases


@pytest.mark.parametrize("case", _grid_cases())
def test_matches_float64_reference(fsc, case):
    case = dict(case)
    out_nhwc = case.pop("out_nhwc")
    a = operands(**case)
    out = poisoned_out(a, channels_last=out_nhwc)
    y = fsc.fused_sep_conv(**a, out=out)
    assert y is out
    assert rel_err(y, reference64(a)) <= TOL[case["dtype"]]


NON_SQUARE = [  # (kh, kw), stride, (ph, pw): GhostNet-V2's 1x5 / 5x1, wide, tall, even, 1x1, 7x7 unpadded
    ((1, 5), 1, (0, 2)), ((5, 1), 2, (2, 0)), ((3, 7), 1, (1, 3)), ((7, 2), 2, (3, 0)), ((1, 1), 2, (0, 0)),
    ((4, 6), 1, (2, 1)), ((7, 7), 1, (0, 0))]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("k, stride, padding", NON_SQUARE, ids=[f"{kh}x{kw}-s{s}" for (kh, kw), s, _ in NON_SQUARE])
def test_any_kernel_shape_up_to_7x7_matches_float64(fsc, dtype, k, stride, padding):
    i = NON_SQUARE.index((k, stride, padding))
    a = operands(B=2, C=(5, 6)[i % 2], r=1 + i % 2, H=11, W=9, k=k, stride=stride, padding=padding, N=(24, 40)[i % 2],
                 dtype=dtype, act1=ACTIVATIONS[i % 6], act2=ACTIVATIONS[(i + 3) % 6], residual=i % 2 == 0,
                 channels_last=i % 3 != 1)
    y = fsc.fused_sep_conv(**a, out=poisoned_out(a, channels_last=i % 2 == 0))
    ref = reference64(a)
    assert y.shape == ref.shape == (2, a["pw_w"].shape[0], (11 + 2 * padding[0] - k[0]) // stride + 1,
                                    (9 + 2 * padding[1] - k[1]) // stride + 1)
    assert rel_err(y, ref) <= TOL[dtype]


def test_the_kernel_reads_rows_and_columns_the_right_way_round(fsc):
    # a 1x5 and its 5x1 transpose give transposed outputs on transposed inputs
    a = operands(B=1, C=4, H=7, W=10, k=(1, 5), N=8, act1="none")
    t = dict(a, x=a["x"].transpose(2, 3).contiguous(memory_format=torch.channels_last),
             dw_w=a["dw_w"].transpose(2, 3).contiguous(), padding=(2, 0))
    y, yt = fsc.fused_sep_conv(**a), fsc.fused_sep_conv(**t)
    assert rel_err(yt.transpose(2, 3), reference64(a)) <= TOL[torch.float32]
    assert rel_err(y, reference64(a)) <= TOL[torch.float32] and y.shape[2:] == (7, 10)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_each_activation_in_both_positions(fsc, act):
    # wide operands so every branch of the activations (x < -3, |x| < 3, x > 6) is exercised
    a = operands(B=1, C=4, H=5, W=6, N=20, act1=act, act2=act)
    a["x"] = a["x"] * 4
    assert rel_err(fsc.fused_sep_conv(**a, out=poisoned_out(a)), reference64(a)) <= TOL[torch.float32]


@pytest.mark.parametrize("unroll", [False, True], ids=["rolled", "unrolled"])
@pytest.mark.parametrize("k", [3, 7, (1, 5), (7, 3)])
def test_both_tap_loops_and_tiles(fsc, unroll, k):
    a = operands(B=2, C=7, r=3, H=8, W=9, k=k, stride=2, N=37, act1="silu", act2="relu6", residual=True)
    config = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16, UNROLL_TAPS=unroll, num_warps=4, num_stages=2 if unroll else 1)
    y = fsc.fused_sep_conv(**a, out=poisoned_out(a), config=config)
    assert rel_err(y, reference64(a)) <= TOL[torch.float32]


@settings(max_examples=20, deadline=None, derandomize=True)
@given(B=st.integers(1, 3), C=st.integers(1, 8), r=st.integers(1, 3), kh=st.integers(1, 7), kw=st.integers(1, 7),
       stride=st.sampled_from([1, 2]), extra_ph=st.integers(-1, 1), extra_pw=st.integers(-1, 1),
       H=st.integers(0, 6), W=st.integers(0, 6),
       N=st.integers(1, 40), dtype=st.sampled_from(DTYPES), act1=st.sampled_from(ACTIVATIONS),
       act2=st.sampled_from(ACTIVATIONS), bias=st.booleans(), residual=st.booleans(), channels_last=st.booleans())
def test_random_configurations(B, C, r, kh, kw, stride, extra_ph, extra_pw, H, W, N, dtype, act1, act2, bias,
                               residual, channels_last):
    import kernels.sep_conv.fused_sep_conv as fsc  # hypothesis forbids function-scoped fixtures
    # padding below the kernel size on each axis (as the old k // 2 + 1 <= k - 1): output pixel 0 reads x
    ph, pw = min(max(0, kh // 2 + extra_ph), kh - 1), min(max(0, kw // 2 + extra_pw), kw - 1)
    H, W = H + max(1, kh - 2 * ph), W + max(1, kw - 2 * pw)  # at least one output pixel
    a = operands(B, C, r, H, W, (kh, kw), stride, (ph, pw), N, dtype=dtype, bias=bias, residual=residual,
                 channels_last=channels_last, act1=act1, act2=act2)
    assert rel_err(fsc.fused_sep_conv(**a, out=poisoned_out(a)), reference64(a)) <= TOL[dtype]


def test_layouts_and_weight_forms_give_identical_results(fsc):
    a = operands(channels_last=True, residual=True)
    y = fsc.fused_sep_conv(**a)
    assert y.is_contiguous(memory_format=torch.channels_last)  # the output takes x's format, as a conv's
    nchw = dict(a, x=a["x"].contiguous())
    z = fsc.fused_sep_conv(**nchw)
    assert z.is_contiguous() and torch.equal(z, y)
    res_nhwc = dict(a, residual=a["residual"].contiguous(memory_format=torch.channels_last))
    pw4 = dict(a, pw_w=a["pw_w"][:, :, None, None])
    pw_k_major = dict(a, pw_w=a["pw_w"].t().contiguous().t())
    dw_tap_major = dict(a, dw_w=a["dw_w"].permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2))
    for variant in (res_nhwc, pw4, pw_k_major, dw_tap_major):
        z = fsc.fused_sep_conv(**variant)
        assert z.is_contiguous(memory_format=torch.channels_last) and torch.equal(z, y)


def test_allow_tf32_runs(fsc):
    a = operands()
    assert rel_err(fsc.fused_sep_conv(**a, allow_tf32=True), reference64(a)) <= 1e-2


def test_empty_batch(fsc):
    y = fsc.fused_sep_conv(**operands(B=0))
    assert y.shape == (0, 40, 9, 7)


def _bad(**changes):
    return changes


BAD_ARGS = [
    (_bad(x=torch.zeros(2, 6, 9, 7, dtype=torch.int32)), TypeError, "dtype torch.int32"),
    (_bad(x=torch.randn(2, 6, 9, 7, dtype=torch.float64)), TypeError, "dtype torch.float64"),
    (_bad(x=torch.randn(6, 9, 7)), ValueError, "4-D"),
    (_bad(dw_w=torch.randn(6, 1, 3, 3, dtype=torch.float16)), TypeError, "dw_w has dtype"),
    (_bad(dw_w=torch.randn(6, 1, 1, 8)), ValueError, "depthwise kernel 1x8 is not supported"),
    (_bad(dw_w=torch.randn(6, 2, 3, 3)), ValueError, "depthwise"),
    (_bad(dw_w=torch.randn(6, 1, 9, 9)), ValueError, "depthwise kernel 9x9 is not supported"),
    (_bad(dw_w=torch.randn(9, 1, 3, 3)), ValueError, "multiple of x's 6 channels"),
    (_bad(pw_w=torch.randn(40, 7)), ValueError, "to follow dw_w's 6 channels"),
    (_bad(pw_w=torch.randn(40, 6, 3, 3)), ValueError, r"\[N, C\*r, 1, 1\]"),
    (_bad(pw_w=torch.randn(40)), ValueError, "pw_w must have 2 or 4 dims"),
    (_bad(dw_b=torch.randn(5)), ValueError, r"dw_b must have shape \[6\]"),
    (_bad(pw_b=torch.randn(41)), ValueError, r"pw_b must have shape \[40\]"),
    (_bad(pw_b=[0.0] * 40), TypeError, "pw_b must be a torch.Tensor"),
    (_bad(act1="tanh"), ValueError, "act1='tanh' is not supported"),
    (_bad(act2="gelu_tanh"), ValueError, "act2='gelu_tanh' is not supported"),
    (_bad(stride=3), ValueError, "stride must be one of"),
    (_bad(padding=-1), ValueError, "padding must be an int >= 0"),
    (_bad(padding=1.0), ValueError, "padding must be an int >= 0"),
    (_bad(padding=(1, 1, 1, 1)), ValueError, r"or a pair \(ph, pw\)"),
    (_bad(padding=(1, -1)), ValueError, r"or a pair \(ph, pw\)"),
    (_bad(act_after_gate="tanh"), ValueError, "act_after_gate='tanh' is not supported"),
    (_bad(residual=torch.randn(2, 40, 9, 8)), ValueError, "residual must have the output's shape"),
    (_bad(x=torch.randn(2, 6, 1, 7), padding=0), ValueError, "smaller than the 3x3 kernel"),
    (_bad(dw_w=torch.randn(6, 1, 3, 3, device="meta")), ValueError, "dw_w is on meta"),
    (_bad(allow_tf32="yes"), TypeError, "allow_tf32 must be a bool"),
    (_bad(out=torch.empty(2, 40, 9, 14)[..., ::2]), ValueError, "out must be an NCHW- or channels_last"),
    (_bad(out=torch.empty(2, 40, 9, 8)), ValueError, "of shape"),
    (_bad(config=dict(BLOCK_M=16)), ValueError, "config must have the keys"),
]


@pytest.mark.parametrize("changes,exc,match", BAD_ARGS, ids=[m for _, _, m in BAD_ARGS])
def test_bad_arguments_raise_clear_errors(fsc, changes, exc, match):
    with pytest.raises(exc, match=match):
        fsc.fused_sep_conv(**dict(operands(), **changes))


