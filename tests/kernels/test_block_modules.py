"""FusedInvertedResidual2d, FusedInvertedResidualSE2d and FusedMBConv2d: the unfused torch chain's
numbers, parameters and layouts, clear errors, and the custom ops under torch.compile / export."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kernels.block.ops  # noqa: F401  (registers the ops)
from kernels import (FusedInvertedResidual2d, FusedInvertedResidualSE2d, FusedMBConv2d, fused_mbconv_reference,
                     inverted_residual_se_reference)
from tests.kernels.helpers import TOL, rel_err

_ACTS = {"none": nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "hardswish": nn.Hardswish,
         "gelu": nn.GELU}


class _SE(nn.Module):
    def __init__(self, K, S, act, gate):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(K, S, 1), nn.Conv2d(S, K, 1)
        self.act, self.gate = _ACTS[act](), {"sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid}[gate]()

    def forward(self, a):
        return a * self.gate(self.expand(self.act(self.reduce(a.mean((2, 3), keepdim=True)))))


def _block(C=12, e=6, N=20, k=3, stride=1, act0="relu6", act1="relu6", act2="none", se=None, act_after_gate="none"):
    """(the unfused nn.Sequential, its convs) of an inverted residual block with random biases."""
    Hd = C * e
    kh, kw = (k, k) if isinstance(k, int) else k
    ex, dw = nn.Conv2d(C, Hd, 1), nn.Conv2d(Hd, Hd, (kh, kw), stride, (kh // 2, kw // 2), groups=Hd)
    pw = nn.Conv2d(Hd, N, 1)
    layers = [ex, _ACTS[act0](), dw, _ACTS[act1]()]
    if se is not None:
        layers += [_SE(Hd, 8, *se), _ACTS[act_after_gate]()]
    return nn.Sequential(*layers, pw, _ACTS[act2]()), (ex, dw, pw)


def _module(seq, convs, **kw):
    ex, dw, pw = convs
    args = (ex.weight, ex.bias, dw.weight, dw.bias, pw.weight, pw.bias)
    common = dict(stride=dw.stride[0], padding=dw.padding, act0=kw["act0"], act1=kw["act1"], act2=kw["act2"])
    if kw.get("se") is None:
        return FusedInvertedResidual2d(*args, **common)
    s = seq[4]
    return FusedInvertedResidualSE2d(*args, s.reduce.weight, s.reduce.bias, s.expand.weight, s.expand.bias,
                                     se_act=kw["se"][0], se_gate=kw["se"][1],
                                     act_after_gate=kw.get("act_after_gate", "none"), **common)


CASES = [dict(act0="relu6", act1="relu6", act2="none"),
         dict(k=5, stride=2, e=4, act0="silu", act1="silu", act2="none", se=("silu", "sigmoid")),
         dict(k=(1, 5), e=1, act0="hardswish", act1="relu", act2="relu", se=("relu", "hardsigmoid"),
              act_after_gate="relu6")]


@pytest.mark.parametrize("cfg", CASES, ids=["plain", "se-k5-s2", "se-1x5-e1"])
def test_inverted_residual_modules_match_the_unfused_chain(cfg):
    seq, convs = _block(**cfg)
    fused = _module(seq, convs, **cfg)
    x = torch.randn(2, 12, 7, 6)
    ref = copy.deepcopy(seq).double()(x.double())
    y = fused(x.contiguous(memory_format=torch.channels_last))
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y, ref) <= 1e-4
    r = torch.randn_like(ref)
    assert rel_err(fused(x, residual=r.float()), ref + r) <= 1e-4
    assert rel_err(copy.deepcopy(fused).double()(x.double()), ref) <= 1e-12  # float64: the torch reference


def test_the_expansion_is_padded_after_its_activation():
    """The depthwise conv pads h = act0(ex(x) + b) with zeros, not x: with a large expansion bias
    act0(b) != 0, and padding x instead would change every border pixel."""
    seq, convs = _block(C=4, e=2, N=6, act0="relu", act1="none")
    with torch.no_grad():
        convs[0].bias.fill_(3.0)
    fused = _module(seq, convs, act0="relu", act1="none", act2="none")
    x = torch.randn(1, 4, 5, 5)
    ref = seq.double()(x.double())
    assert rel_err(fused(x), ref) <= 1e-4
    wrong = F.conv2d(F.pad(x, (1, 1, 1, 1)).double(), convs[0].weight.double(), convs[0].bias.double()).relu()
    wrong = seq[4](F.conv2d(wrong, convs[1].weight.double(), convs[1].bias.double(), groups=8))
    assert rel_err(wrong, ref) > 0.1


def test_half_precision_and_state_dict_round_trip():
    seq, convs = _block(C=12, e=4, N=12, act0="relu6", act1="relu6")
    fused = _module(seq, convs, act0="relu6", act1="relu6", act2="none")
    assert set(fused.state_dict()) == {"expand_weight", "expand_bias", "dw_weight", "dw_bias", "pw_weight", "pw_bias"}
    assert fused.expand_weight.shape == (48, 12) and fused.pw_weight.shape == (12, 48)
    assert fused.dw_weight.stride()[0] == 1 and not any(p.requires_grad for p in fused.parameters())
    other = _module(*_block(C=12, e=4, N=12), act0="relu6", act1="relu6", act2="none")
    other.load_state_dict(fused.state_dict())
    other.to(memory_format=torch.channels_last)
    assert other.dw_weight.stride()[0] == 1
    x = torch.randn(2, 12, 6, 6)
    assert torch.equal(other(x), fused(x))
    half = copy.deepcopy(fused).half()
    assert rel_err(half(x.half()), copy.deepcopy(seq).double()(x.half().double())) <= TOL[torch.float16]


def test_fused_mbconv_module():
    conv, pw = nn.Conv2d(12, 48, 3, 2, 1), nn.Conv2d(48, 20, 1)
    seq = nn.Sequential(conv, nn.SiLU(), pw)
    fused = FusedMBConv2d(conv.weight, conv.bias, pw.weight, pw.bias, stride=2, padding=1, act1="silu")
    assert fused.conv_weight.is_contiguous(memory_format=torch.channels_last)
    fused.to(memory_format=torch.contiguous_format)  # a whole-model conversion: the layout is restored
    assert fused.conv_weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 12, 7, 7)
    ref = seq.double()(x.double())
    assert rel_err(fused(x), ref) <= 1e-4
    assert rel_err(copy.deepcopy(fused).double()(x.double()), ref) <= 1e-12
    other = FusedMBConv2d(torch.randn(48, 12, 3, 3), None, torch.randn(20, 48), None, stride=2, padding=1)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        other.load_state_dict(fused.state_dict())
    assert repr(fused) == ("FusedMBConv2d(12, 48, 20, kernel_size=(3, 3), stride=2, padding=(1, 1), act1=silu, "
                           "act2=none, bias=(True, True), allow_tf32=False)")


@pytest.mark.parametrize("make, match", [
    (lambda: FusedInvertedResidual2d(torch.randn(24, 8), None, torch.randn(16, 1, 3, 3), None, torch.randn(8, 16),
                                     None, stride=1, padding=1), r"dw_w must be \[24, 1, kh, kw\]"),
    (lambda: FusedInvertedResidual2d(torch.randn(24, 8), None, torch.randn(24, 1, 3, 3), None, torch.randn(8, 20),
                                     None, stride=1, padding=1), "pw_w must be"),
    (lambda: FusedInvertedResidual2d(torch.randn(24, 8), torch.randn(23), torch.randn(24, 1, 3, 3), None,
                                     torch.randn(8, 24), None, stride=1, padding=1), r"ex_b must have shape \[24\]"),
    (lambda: FusedInvertedResidual2d(torch.randn(24, 8), None, torch.randn(24, 1, 9, 9), None, torch.randn(8, 24),
                                     None, stride=1, padding=4), "kernel 9x9 is not supported"),
    (lambda: FusedInvertedResidual2d(torch.randn(24, 8), None, torch.randn(24, 1, 3, 3), None, torch.randn(8, 24),
                                     None, stride=3, padding=1), "stride must be one of"),
    (lambda: FusedInvertedResidual2d(torch.randn(24, 8), None, torch.randn(24, 1, 3, 3), None, torch.randn(8, 24),
                                     None, stride=1, padding=1, act0="tanh"), "act0='tanh'"),
    (lambda: FusedInvertedResidualSE2d(torch.randn(24, 8), None, torch.randn(24, 1, 3, 3), None, torch.randn(8, 24),
                                       None, torch.randn(4, 20), torch.randn(4), torch.randn(24, 4), torch.randn(24),
                                       stride=1, padding=1), "do not map 24 -> S -> 24"),
    (lambda: FusedMBConv2d(torch.randn(24, 8, 3, 3), None, torch.randn(8, 16), None, stride=1, padding=1),
     "pw_w must be"),
    (lambda: FusedMBConv2d(torch.randn(24, 8), None, torch.randn(8, 24), None, stride=1, padding=1),
     "conv_weight must be a 4-d tensor"),
], ids=["dw", "pw", "ex_b", "kernel", "stride", "act0", "se", "mb-pw", "mb-conv"])
def test_bad_shapes_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_input_is_a_clear_error():
    fused = FusedInvertedResidual2d(torch.randn(24, 8), None, torch.randn(24, 1, 3, 3), None, torch.randn(8, 24),
                                    None, stride=1, padding=1)
    with pytest.raises(TypeError, match="ex_w has dtype torch.float32 but x has torch.float16"):
        fused(torch.randn(1, 8, 5, 5).half())
    with pytest.raises(ValueError, match=r"ex_w must be \[n, 6\]"):
        fused(torch.randn(1, 6, 5, 5))
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        fused(torch.ones(1, 8, 5, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="allow_tf32 must be a bool"):
        FusedMBConv2d(torch.randn(24, 8, 3, 3), None, torch.randn(8, 24), None, stride=1, padding=1, allow_tf32=1)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        seq, convs = _block(C=8, e=3, N=8, act0="relu6", act1="relu6", se=("relu", "hardsigmoid"))
        self.block = _module(seq, convs, act0="relu6", act1="relu6", act2="none", se=("relu", "hardsigmoid"))
        conv, pw = nn.Conv2d(8, 16, 3, 1, 1), nn.Conv2d(16, 8, 1)
        self.mb = FusedMBConv2d(conv.weight, conv.bias, pw.weight, pw.bias, stride=1, padding=1, act1="silu")
        ex, dw, pw = nn.Conv2d(8, 24, 1), nn.Conv2d(24, 24, 5, 1, 2, groups=24), nn.Conv2d(24, 8, 1)
        self.plain = FusedInvertedResidual2d(ex.weight, ex.bias, dw.weight, dw.bias, pw.weight, pw.bias, stride=1,
                                             padding=2, act0="hardswish", act1="hardswish")

    def forward(self, x):
        x = self.block(x, residual=x)
        return self.plain(self.mb(x, residual=x) * 2)


def test_modules_under_torch_compile_fullgraph_and_export():
    net, x = _Net(), torch.randn(2, 8, 6, 5)
    expected = net(x)
    assert torch.equal(torch.compile(net, backend="aot_eager", fullgraph=True)(x), expected)
    ep = torch.export.export(net, (x,))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    for op in (torch.ops.dwsep.inverted_residual_se, torch.ops.dwsep.fused_mbconv, torch.ops.dwsep.inverted_residual):
        assert op.default in targets
    assert not any("convolution" in str(t) for t in targets)
    assert torch.equal(ep.module()(x), expected)


def test_opcheck_and_the_fake_impls():
    """torch.library.opcheck (schema, fake implementation against the real op, autograd
    registration) for the three ops, on tiny blocks; the fake output has x's memory format."""
    x = torch.randn(1, 4, 5, 4).contiguous(memory_format=torch.channels_last)
    ex_w, dw_w, pw_w = torch.randn(8, 4), torch.randn(8, 1, 3, 3), torch.randn(6, 8)
    se = (torch.randn(2, 8), torch.randn(2), torch.randn(8, 2), torch.randn(8))
    calls = [
        (torch.ops.dwsep.inverted_residual.default,
         (x, ex_w, torch.randn(8), dw_w, None, pw_w, torch.randn(6), 2, [1, 1], "relu6", "silu", "none", None, False)),
        (torch.ops.dwsep.inverted_residual_se.default,
         (x, ex_w, None, dw_w, torch.randn(8), pw_w, None, *se, 1, [1, 1], "silu", "silu", "none", "relu", "sigmoid",
          "none", torch.randn(1, 6, 5, 4), False)),
        (torch.ops.dwsep.fused_mbconv.default,
         (x, torch.randn(8, 4, 3, 3), torch.randn(8), pw_w, None, 1, [1, 1], "silu", "none", None, False)),
    ]
    for op, args in calls:
        torch.library.opcheck(op, args)
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        fx = torch.empty(3, 4, 9, 7, memory_format=torch.channels_last)
        y = torch.ops.dwsep.fused_mbconv(fx, torch.empty(8, 4, 5, 5), None, torch.empty(6, 8), None, 2, [2, 2],
                                         "silu", "none", None, False)
        with pytest.raises(ValueError, match="act1='tanh'"):
            torch.ops.dwsep.inverted_residual(fx, torch.empty(8, 4), None, torch.empty(8, 1, 3, 3), None,
                                              torch.empty(6, 8), None, 1, [1, 1], "none", "tanh", "none", None, False)
    assert y.shape == (3, 6, 5, 4) and y.is_contiguous(memory_format=torch.channels_last)


def test_ops_fall_back_to_the_torch_references_without_the_interpreter(monkeypatch):
    seq, convs = _block(C=8, e=3, N=8, k=5, stride=2, act0="silu", act1="silu", se=("relu", "sigmoid"))
    fused = _module(seq, convs, act0="silu", act1="silu", act2="none", se=("relu", "sigmoid"))
    conv, pw = nn.Conv2d(8, 16, 3, 2, 1), nn.Conv2d(16, 8, 1)
    mb = FusedMBConv2d(conv.weight, conv.bias, pw.weight, pw.bias, stride=2, padding=1, act1="silu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.randn(2, 8, 7, 7)
    with torch.no_grad():
        y = fused(x)
        assert torch.allclose(y, seq(x), rtol=1e-5, atol=1e-5) and y.is_contiguous()
        assert torch.equal(y, inverted_residual_se_reference(x, *fused.weights(), *fused.se_weights(), 2, fused.padding,
                                                             "silu", "silu", "none", "relu", "sigmoid"))
        assert torch.equal(mb(x), fused_mbconv_reference(x, *mb.weights(), 2, 1, "silu"))
        assert torch.allclose(mb(x), pw(F.silu(conv(x))), rtol=1e-5, atol=1e-5)
