"""The squeeze-excitation block in three launches (kernels/sep_conv/sep_conv_se.py), in Triton's
interpreter, against float64: the depthwise stage, the excitation MLP and the gated GEMM together."""
import pytest
import torch
import torch.nn.functional as F

from kernels.activations import activation
from kernels.sep_conv.reference import dw_channel_mean_reference, sep_conv_reference
from tests.kernels.helpers import TOL, operands, rel_err

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
GATES = {"sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid}


def se_weights(K, S=5, dtype=torch.float32):
    return [t.to(dtype) for t in (torch.randn(S, K) / K ** 0.5, torch.randn(S) * 0.1,
                                  torch.randn(K, S) / S ** 0.5, torch.randn(K) * 0.1 + 1)]


def reference(a, w, se_act, se_gate, act_after_gate="none"):
    d = lambda t: None if t is None else t.double()  # noqa: E731
    mean = dw_channel_mean_reference(d(a["x"]), d(a["dw_w"]), d(a["dw_b"]), a["stride"], a["padding"], a["act1"])
    w1, c1, w2, c2 = (t.double() for t in w)
    gate = GATES[se_gate](F.linear(activation(se_act)(F.linear(mean, w1, c1)), w2, c2))
    return sep_conv_reference(d(a["x"]), d(a["dw_w"]), d(a["dw_b"]), d(a["pw_w"]), d(a["pw_b"]), a["stride"],
                              a["padding"], a["act1"], a["act2"], d(a["residual"]), gate, act_after_gate)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, stride, r, C, N, H, W, act1, se_act, se_gate, residual", [
    (3, 1, 1, 24, 40, 9, 7, "silu", "silu", "sigmoid", True),
    (5, 2, 1, 20, 24, 17, 13, "hardswish", "relu", "hardsigmoid", False),
    (7, 1, 2, 6, 10, 5, 19, "relu6", "relu", "sigmoid", False),
    (3, 2, 1, 40, 72, 11, 11, "none", "silu", "sigmoid", True),
    ((1, 5), 1, 1, 8, 16, 9, 7, "relu", "relu", "sigmoid", False), ((5, 1), 2, 2, 5, 12, 17, 6, "none", "silu",
                                                                     "hardsigmoid", True)])
@pytest.mark.parametrize("act_after_gate", ["none", "relu6"])
def test_three_launches_match_the_block_in_float64(se, dtype, k, stride, r, C, N, H, W, act1, se_act, se_gate,
                                                     residual, act_after_gate):
    # 17x13 with the interpreter's 16-pixel stage tiles: several tiles per image, a partial last one
    a = operands(B=3, C=C, r=r, H=H, W=W, k=k, stride=stride, N=N, dtype=dtype, act1=act1, act2="relu",
                 residual=residual)
    w = se_weights(C * r, dtype=dtype)
    y = se.sep_conv_se(**a, w1=w[0], c1=w[1], w2=w[2], c2=w[3], se_act=se_act, se_gate=se_gate,
                       act_after_gate=act_after_gate)
    ref = reference(a, w, se_act, se_gate, act_after_gate)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y, ref) <= TOL[dtype]


def test_the_gate_matters(se):
    """The check can fail: with the gate left out the output is far off."""
    a = operands(B=2, C=8, N=12)
    w = se_weights(8)
    y = se.sep_conv_se(**a, w1=w[0], c1=w[1], w2=w[2], c2=w[3] - 3.0)
    assert rel_err(y, reference(a, [w[0], w[1], w[2], w[3] - 3.0], "relu", "sigmoid")) <= TOL[torch.float32]
    ungated = sep_conv_reference(*(a[n].double() for n in ("x", "dw_w", "dw_b", "pw_w", "pw_b")), a["stride"],
                                 a["padding"], a["act1"], a["act2"])
    assert rel_err(y, ungated) > 0.1


@pytest.mark.parametrize("change, match", [
    (dict(w1=torch.randn(5, 7)), "do not map 8 -> S -> 8"), (dict(c2=torch.randn(7)), "se_expand_bias must be"),
    (dict(se_gate="tanh"), "se_gate='tanh'"), (dict(se_act="tanh"), "unsupported activation 'tanh'")])
def test_bad_squeeze_excitation_is_a_clear_error(se, change, match):
    a = operands(B=2, C=8, N=12)
    w = dict(zip(("w1", "c1", "w2", "c2"), se_weights(8)))
    with pytest.raises(ValueError, match=match):
        se.sep_conv_se(**a, **{**w, **change})
