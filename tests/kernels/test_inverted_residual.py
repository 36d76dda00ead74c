"""The whole inverted-residual block in one Triton kernel (kernels/block/inverted_residual.py), and its
squeeze-excitation form in three launches, in Triton's interpreter against float64 references:
expansion 1..6, 3x3 / 5x5 / 1x5 depthwise kernels, strides 1 and 2, with and without SE and
residual, fp32 / fp16 / bf16, channel counts that are not multiples of 16."""
import itertools

import pytest
import torch

from kernels.activations import ACTIVATIONS
from kernels.block.reference import inverted_residual_reference, inverted_residual_se_reference
from kernels.checks import out_size
from tests.kernels.helpers import TOL, rel_err

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def block_operands(B=2, C=12, e=6, N=20, H=7, W=6, k=3, stride=1, *, dtype=torch.float32, residual=False,
                   bias=True, se=False, channels_last=True, act0="relu6", act1="relu6", act2="none"):
    """Random operands of an inverted residual block as the launcher's kwargs (+ w1, c1, w2, c2 with se)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    Hd, pad = C * e, (kh // 2, kw // 2)
    x = torch.randn(B, C, H, W)
    Ho, Wo = out_size(H, kh, stride, pad[0]), out_size(W, kw, stride, pad[1])
    a = dict(x=x.contiguous(memory_format=torch.channels_last) if channels_last else x,
             ex_w=torch.randn(Hd, C) / C ** 0.5, ex_b=torch.randn(Hd) * 0.5 if bias else None,
             dw_w=torch.randn(Hd, 1, kh, kw) / (kh * kw) ** 0.5, dw_b=torch.randn(Hd) * 0.5 if bias else None,
             pw_w=torch.randn(N, Hd) / Hd ** 0.5, pw_b=torch.randn(N) * 0.5 if bias else None,
             residual=torch.randn(B, N, Ho, Wo) if residual else None,
             stride=stride, padding=pad, act0=act0, act1=act1, act2=act2)
    if se:
        a.update(w1=torch.randn(5, Hd) / Hd ** 0.5, c1=torch.randn(5) * 0.1, w2=torch.randn(Hd, 5) / 5 ** 0.5,
                 c2=torch.randn(Hd) * 0.1 + 1)
    return {n: v.to(dtype) if isinstance(v, torch.Tensor) else v for n, v in a.items()}


def reference64(a, se_act="relu", se_gate="sigmoid", act_after_gate="none", gate=None):
    d = {n: v.double() if isinstance(v, torch.Tensor) else v for n, v in a.items()}
    ops = [d[n] for n in ("x", "ex_w", "ex_b", "dw_w", "dw_b", "pw_w", "pw_b")]
    if "w1" in a:
        return inverted_residual_se_reference(*ops, d["w1"], d["c1"], d["w2"], d["c2"], a["stride"], a["padding"],
                                              a["act0"], a["act1"], a["act2"], se_act, se_gate, act_after_gate,
                                              d["residual"])
    return inverted_residual_reference(*ops, a["stride"], a["padding"], a["act0"], a["act1"], a["act2"], d["residual"],
                                       gate, act_after_gate)


def _cases():
    """dtype x (e, k, stride) x SE, each with its own mix of activations, residual, bias and layout;
    SE on half of the (dtype, geometry) pairs, so every geometry and every dtype meets it."""
    cases = []
    geoms = [(1, 3, 1), (4, 5, 2), (6, 3, 2), (6, (1, 5), 1)]
    for i, ((d, dtype), (g, (e, k, stride))) in enumerate(itertools.product(enumerate(DTYPES), enumerate(geoms))):
        for se in (False, True) if (d + g) % 2 == 0 else (False,):
            j = 2 * i + se
            cases.append(pytest.param(dict(dtype=dtype, e=e, k=k, stride=stride, se=se, residual=j % 3 != 1,
                                           bias=j % 5 != 4, channels_last=j % 4 != 3, act0=ACTIVATIONS[(j + 1) % 6],
                                           act1=ACTIVATIONS[(j + 2) % 6], act2=ACTIVATIONS[(3 * j) % 6],
                                           variant=i % 2),
                                      id=f"{str(dtype)[6:]}-e{e}-k{k if isinstance(k, int) else '1x5'}-s{stride}"
                                         f"{'-se' if se else ''}"))
    return cases


@pytest.mark.parametrize("case", _cases())
def test_block_matches_float64_reference(ir, case):
    case = dict(case)
    variant = case.pop("variant")
    a = block_operands(**case)
    if case["se"]:
        kw = dict(se_act=("silu", "relu")[variant], se_gate=("sigmoid", "hardsigmoid")[variant],
                  act_after_gate=("none", "relu6")[variant])
        y = ir.inverted_residual_se(**a, **kw)
        ref = reference64(a, **kw)
    else:
        y = ir.inverted_residual(**a)
        ref = reference64(a)
    assert y.shape == ref.shape
    assert y.is_contiguous(memory_format=torch.channels_last) == case["channels_last"]
    assert rel_err(y, ref) <= TOL[case["dtype"]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_channel_chunks_hidden_chunks_and_n_tiles(ir, dtype):
    """C = 40 over 16-channel chunks (the multi-chunk expansion), Hd = 120 over 16-channel hidden
    chunks with a partial last one, N = 40 over two 32-wide N tiles, a 64-pixel tile past the end."""
    a = block_operands(C=40, e=3, N=40, H=9, W=5, k=3, stride=1, dtype=dtype, residual=True, act0="silu",
                       act1="hardswish", act2="relu")
    y = ir.inverted_residual(**a, config=dict(BLOCK_M=64, BLOCK_N=32, BLOCK_H=16, BLOCK_C=16))
    assert rel_err(y, reference64(a)) <= TOL[dtype]


def test_a_given_gate_and_act_after_gate(ir):
    a = block_operands(C=12, e=2, N=20, act1="silu")
    gate = torch.rand(2, 24)
    y = ir.inverted_residual(**a, gate=gate, act_after_gate="relu6")
    assert rel_err(y, reference64(a, gate=gate.double(), act_after_gate="relu6")) <= TOL[torch.float32]
    assert rel_err(y, reference64(a)) > 0.1  # the gate is applied


def test_the_expansion_is_zero_padded_after_its_activation(ir):
    """act0(be) != 0: a kernel that padded x instead of h would differ at every border pixel."""
    a = block_operands(C=4, e=2, N=8, H=5, W=5, act0="relu", act1="none")
    a["ex_b"] = torch.full((8,), 3.0)
    y = ir.inverted_residual(**a)
    ref = reference64(a)
    assert rel_err(y, ref) <= TOL[torch.float32]
    xpad = torch.nn.functional.pad(a["x"].double(), (1, 1, 1, 1))
    padded_x = {**a, "x": xpad, "padding": (0, 0)}
    assert rel_err(reference64(padded_x), ref) > 0.1


def test_launcher_checks(ir):
    a = block_operands(C=8, e=2, N=8)
    with pytest.raises(ValueError, match="config must have the keys"):
        ir.inverted_residual(**a, config=dict(BLOCK_M=32))
    with pytest.raises(TypeError, match="gate must be float32"):
        ir.inverted_residual(**a, gate=torch.rand(2, 16).half())
    with pytest.raises(ValueError, match="gate must have shape"):
        ir.inverted_residual(**a, gate=torch.rand(2, 8))
    with pytest.raises(ValueError, match="se_gate='tanh'"):
        ir.inverted_residual_se(**a, w1=torch.randn(4, 16), c1=torch.randn(4), w2=torch.randn(16, 4),
                                c2=torch.randn(16), se_gate="tanh")
    with pytest.raises(TypeError, match="allow_tf32 must be a bool"):
        ir.inverted_residual(**a, allow_tf32=1)


def test_tile_rule(ir):
    from kernels.block.checks import BlockGeometry

    def tile(C, Hd, N):
        return ir.tile_for(BlockGeometry(64, C, Hd, 3, 3, 1, 1, 56, 56, N, 56, 56, torch.float16))

    assert tile(24, 144, 24) == ir.BlockTile(64, 32, 64, 32, 8, 2)
    assert tile(72, 432, 72) == ir.BlockTile(64, 128, 32, 128, 8, 2)
    assert tile(160, 960, 320) == ir.BlockTile(64, 256, 32, 128, 8, 2)
    assert tile(16, 96, 24) == ir.BlockTile(128, 32, 32, 16, 8, 2)
    assert tile(8, 8, 8).block_c == 16 and tile(8, 8, 8).block_n == 32
