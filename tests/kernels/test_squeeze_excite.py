"""The squeeze-excitation path, in Triton's interpreter: the fused kernel's gate (and the
activation after it), the custom op and FusedSepConvSE2d (kernels/sep_conv/sep_conv_se.py's three
launches), each against a float64 reference."""
import copy

import pytest
import torch
import torch.nn as nn

from kernels import FusedSepConvSE2d
from tests.kernels.helpers import TOL, operands, poisoned_out, reference64, rel_err

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out_nhwc", [True, False])
def test_gate_scales_the_depthwise_output(fsc, dtype, out_nhwc):
    a = operands(B=3, C=6, r=2, N=24, dtype=dtype, act1="silu", act2="relu", residual=True)
    gate = torch.rand(3, 12) + 0.1
    y = fsc.fused_sep_conv(**a, gate=gate, out=poisoned_out(a, channels_last=out_nhwc))
    d = lambda t: None if t is None else t.double()  # noqa: E731
    from kernels.sep_conv.reference import sep_conv_reference
    ref = sep_conv_reference(d(a["x"]), d(a["dw_w"]), d(a["dw_b"]), d(a["pw_w"]), d(a["pw_b"]), a["stride"],
                             a["padding"], a["act1"], a["act2"], d(a["residual"]), gate.double())
    assert rel_err(y, ref) <= TOL[dtype]
    assert rel_err(y, reference64(a)) > 1e-2  # the gate did change the result


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act_after_gate", ["relu6", "hardswish"])
def test_activation_after_the_gate(fsc, dtype, act_after_gate):
    """A[m, j] = act_after_gate(act1(dw(x) + b1)[m, j] * gate[b, j]): ReXNet's relu6 after its SE."""
    a = operands(B=2, C=6, N=20, k=(1, 5), dtype=dtype, act1="none", act2="none", residual=True)
    a["x"] = a["x"] * 4          # products past 6 and below 0, so relu6 clips both ways
    gate = torch.rand(2, 6) * 2
    y = fsc.fused_sep_conv(**a, gate=gate, act_after_gate=act_after_gate, out=poisoned_out(a))
    d = lambda t: None if t is None else t.double()  # noqa: E731
    from kernels.sep_conv.reference import sep_conv_reference
    ref = lambda post: sep_conv_reference(d(a["x"]), d(a["dw_w"]), d(a["dw_b"]), d(a["pw_w"]), d(a["pw_b"]),  # noqa: E731
                                          a["stride"], a["padding"], "none", "none", d(a["residual"]), gate.double(),
                                          post)
    assert rel_err(y, ref(act_after_gate)) <= TOL[dtype]
    assert rel_err(y, ref("none")) > 1e-2  # the activation did change the result


@pytest.mark.parametrize("gate, bad", [
    (torch.rand(3, 11), "gate must have shape"), (torch.rand(3, 12).half(), "gate must be float32"),
    ([0.5] * 12, "gate must be a torch.Tensor")])
def test_bad_gate_is_a_clear_error(fsc, gate, bad):
    a = operands(B=3, C=6, r=2)
    with pytest.raises((TypeError, ValueError), match=bad):
        fsc.fused_sep_conv(**a, gate=gate)


class SEBlock(nn.Sequential):
    """dw -> act -> squeeze-excitation -> pw, as MobileNetV3 / EfficientNet build it (BN folded)."""

    def __init__(self, c=8, n=12, k=3, stride=1, act=nn.SiLU, se_act=nn.SiLU, gate=nn.Sigmoid, post=nn.Identity):
        super().__init__()
        k = (k, k) if isinstance(k, int) else k
        self.dw = nn.Conv2d(c, c, k, stride, (k[0] // 2, k[1] // 2), groups=c)
        self.act = act()
        self.fc1, self.se_act, self.fc2, self.gate = nn.Conv2d(c, 3, 1), se_act(), nn.Conv2d(3, c, 1), gate()
        self.post = post()        # ReXNet: relu6 after the squeeze-excitation
        self.pw = nn.Conv2d(c, n, 1)

    def forward(self, x):
        a = self.act(self.dw(x))
        return self.pw(self.post(a * self.gate(self.fc2(self.se_act(self.fc1(a.mean((2, 3), keepdim=True)))))))

    def fused(self):
        names = {nn.SiLU: "silu", nn.Identity: "none", nn.ReLU6: "relu6", nn.ReLU: "relu"}
        return FusedSepConvSE2d(self.dw.weight, self.dw.bias, self.pw.weight, self.pw.bias, self.fc1.weight,
                                self.fc1.bias, self.fc2.weight, self.fc2.bias, se_act=names[type(self.se_act)],
                                se_gate="sigmoid", stride=self.dw.stride[0], padding=self.dw.padding,
                                act1=names[type(self.act)], act_after_gate=names[type(self.post)]).eval()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["k5-s2", "rexnet-relu6-after-se", "5x1-relu-after-se"])
def test_module_runs_both_kernels_and_matches_the_block(dtype, form):
    block = {"k5-s2": lambda: SEBlock(k=5, stride=2),
             "rexnet-relu6-after-se": lambda: SEBlock(k=3, stride=2, act=nn.Identity, se_act=nn.ReLU, post=nn.ReLU6),
             "5x1-relu-after-se": lambda: SEBlock(k=(5, 1), act=nn.SiLU, post=nn.ReLU)}[form]().eval()
    fused = block.fused().to(dtype)
    x = torch.randn(2, 8, 13, 11) * 3
    with torch.no_grad():
        ref = copy.deepcopy(block).double()(x.double())
        y = fused(x.to(dtype).contiguous(memory_format=torch.channels_last))
        assert rel_err(y, ref) <= TOL[dtype]
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert rel_err(block.fused().double()(x.double()), ref) <= 1e-12  # the float64 path is plain torch


def test_module_exports_as_one_custom_op():
    fused = SEBlock().fused()
    ep = torch.export.export(fused, (torch.randn(2, 8, 9, 9),))
    ops = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert ops == ["dwsep.sep_conv_se.default"]


def test_module_checks_its_squeeze_excitation():
    block = SEBlock()
    args = (block.dw.weight, block.dw.bias, block.pw.weight, block.pw.bias, block.fc1.weight, block.fc1.bias)
    with pytest.raises(ValueError, match="do not map 8 -> S -> 8"):
        FusedSepConvSE2d(*args, torch.randn(7, 3), block.fc2.bias, stride=1, padding=1)
    with pytest.raises(ValueError, match="se_gate='tanh'"):
        FusedSepConvSE2d(*args, block.fc2.weight, block.fc2.bias, se_gate="tanh", stride=1, padding=1)
    with pytest.raises(ValueError, match="se_expand_bias must be a \\[8\\]"):
        FusedSepConvSE2d(*args, block.fc2.weight, None, stride=1, padding=1)
    with pytest.raises(ValueError, match="unsupported activation 'tanh'"):
        FusedSepConvSE2d(*args, block.fc2.weight, block.fc2.bias, act_after_gate="tanh", stride=1, padding=1)
    rexnet = FusedSepConvSE2d(*args, block.fc2.weight, block.fc2.bias, act_after_gate="relu6", stride=1, padding=1)
    assert repr(rexnet).endswith("se=3, se_act=relu, se_gate=sigmoid, act_after_gate=relu6)")
