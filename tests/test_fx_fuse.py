"""FX fuse pass: dw(+BN)(+act) → pw(+BN)(+act)(+residual) becomes one FusedSepConv2d.

On CPU the module computes the same maths with torch (the Triton kernel itself is checked under
the interpreter in tests/kernels); these tests check matching, declines and numerics.
"""
import pytest
import torch
import torch.nn as nn

import torch.nn.functional as F

from kernels import FusedSepConv2d, FusedSepConvSE2d
from models_under_test.blocks import SqueezeExcite
from rewrite import optimize
from tests.helpers import batchnorm, count_ops, max_rel


class SepBlock(nn.Module):
    """MobileNetV1 block (dw-BN-act-pw-BN-act), optional residual, SE gate or dilation."""

    def __init__(self, c=16, n=16, k=3, stride=1, act=nn.ReLU, residual=False, se=False, dilation=1):
        super().__init__()
        self.dw = nn.Conv2d(c, c, k, stride, k // 2 * dilation, dilation, groups=c, bias=False)
        self.bn1, self.act1 = batchnorm(c, 1), act()
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1), nn.Sigmoid()) if se else None
        self.pw = nn.Conv2d(c, n, 1, bias=False)
        self.bn2, self.act2 = batchnorm(n, 2), act()
        self.residual = residual

    def forward(self, x):
        y = self.act1(self.bn1(self.dw(x)))
        if self.se is not None:
            y = y * self.se(y)
        y = self.act2(self.bn2(self.pw(y)))
        return x + y if self.residual else y


class Stem(nn.Module):
    """The residual must be the input of a conv for its value to be captured: put one in front."""

    def __init__(self, block, c=16):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.block = block

    def forward(self, x):
        return self.block(self.conv(x))


X = torch.randn(2, 3, 15, 13)


def fuse_sites(model):
    return [s for s in model.rewrite_report.sites if s.kind == "fuse"]


def check(opt, model, tol=1e-5):
    fresh = torch.randn(3, 3, 15, 13)
    with torch.no_grad():
        assert max_rel(opt(fresh), model(fresh)) < tol


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU])
@pytest.mark.parametrize("k, stride", [(3, 1), (5, 2), (7, 1)])
def test_separable_block_fuses_into_one_module(act, k, stride):
    model = Stem(SepBlock(k=k, stride=stride, act=act, n=24)).eval()
    opt = optimize(model, X, target="h100", force_fuse=True)
    (site,) = fuse_sites(opt)
    assert site.status == "applied" and site.predicted_speedup > 1 and site.rel_error < 1e-5
    fused = [m for m in opt.modules() if isinstance(m, FusedSepConv2d)]
    assert len(fused) == 1 and fused[0].act1 == fused[0].act2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in opt.modules())
    check(opt, model)


def test_residual_is_fused_when_its_value_is_known():
    model = Stem(SepBlock(residual=True)).eval()
    opt = optimize(model, X, target="h100", force_fuse=True)
    (site,) = fuse_sites(opt)
    assert site.status == "applied" and "+res" in site.after
    assert count_ops(opt, "add") == 0
    check(opt, model)


def test_gate_without_an_excitation_mlp_blocks_fusion_with_its_reason():
    model = Stem(SepBlock(se=True)).eval()  # x · sigmoid(conv(pool(x))): one conv, not reduce/act/expand
    opt = optimize(model, X, target="h100", force_fuse=True)
    (site,) = fuse_sites(opt)
    assert site.status == "declined" and "squeeze-excitation expand is not a rewritable conv" in site.reason
    check(opt, model)


class MeanSE(nn.Module):
    """Squeeze-excitation written with a functional mean, and an optional extra use of the gate."""

    def __init__(self, c, squeeze, mean="method", leak_gate=False):
        super().__init__()
        self.fc1, self.fc2, self.mean, self.leak_gate = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1), mean, leak_gate

    def forward(self, a):
        m = a.mean((2, 3), keepdim=True) if self.mean == "method" else F.adaptive_avg_pool2d(a, 1)
        g = torch.sigmoid(self.fc2(F.relu(self.fc1(m))))
        return a * g + g.sum() * 0 if self.leak_gate else a * g


class MBConvSE(nn.Module):
    """dw-BN-act → squeeze-excitation → pw-BN (+ residual): the MobileNetV3 / EfficientNet block tail."""

    def __init__(self, c=16, n=16, k=3, stride=1, act=nn.SiLU, se=None, residual=False):
        super().__init__()
        self.dw = nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False)
        self.bn1, self.act = batchnorm(c, 1), act()
        self.se = se if se is not None else SqueezeExcite(c, 4, nn.SiLU, nn.Sigmoid)
        self.pw = nn.Conv2d(c, n, 1, bias=False)
        self.bn2, self.residual = batchnorm(n, 2), residual

    def forward(self, x):
        y = self.bn2(self.pw(self.se(self.act(self.bn1(self.dw(x))))))
        return x + y if self.residual else y


@pytest.mark.parametrize("se, act", [
    (SqueezeExcite(16, 4, nn.SiLU, nn.Sigmoid), nn.SiLU),         # EfficientNet
    (SqueezeExcite(16, 8, nn.ReLU, nn.Hardsigmoid), nn.Hardswish),  # MobileNetV3
    (MeanSE(16, 4, "method"), nn.ReLU), (MeanSE(16, 4, "functional"), nn.ReLU6),
], ids=["efficientnet", "mobilenet_v3", "tensor_mean", "adaptive_avg_pool2d"])
@pytest.mark.parametrize("k, stride", [(3, 1), (5, 2)])
def test_squeeze_excitation_is_fused_through(se, act, k, stride):
    model = Stem(MBConvSE(k=k, stride=stride, act=act, se=se, residual=stride == 1)).eval()
    opt = optimize(model, X, target="h100", force_fuse=True)
    (site,) = fuse_sites(opt)
    assert site.status == "applied" and "SE(" in site.after and site.rel_error < 1e-5, site
    assert site.predicted_speedup > 1
    assert sum(isinstance(m, FusedSepConvSE2d) for m in opt.modules()) == 1
    assert not any(isinstance(m, (nn.Sigmoid, nn.Hardsigmoid, nn.AdaptiveAvgPool2d)) for m in opt.modules())
    check(opt, model)


def test_squeeze_excitation_whose_gate_is_used_elsewhere_is_declined():
    model = Stem(MBConvSE(se=MeanSE(16, 4, leak_gate=True))).eval()
    opt = optimize(model, X, target="h100", force_fuse=True)
    (site,) = fuse_sites(opt)
    assert site.status == "declined" and "does not scale the depthwise output alone" in site.reason
    check(opt, model)


def test_dilated_depthwise_is_declined():
    model = Stem(SepBlock(dilation=2)).eval()
    (site,) = fuse_sites(optimize(model, X, target="h100", force_fuse=True))
    assert site.status == "declined" and "dilated" in site.reason


def test_cpu_target_skips_fusion_unless_forced():
    model = Stem(SepBlock()).eval()
    opt = optimize(model, X, target="cpu", cost_model="analytic")
    assert not fuse_sites(opt) and any("fuse pass skipped" in n for n in opt.rewrite_report.notes)
    forced = optimize(model, X, target="cpu", force_fuse=True, cost_model="analytic")
    assert fuse_sites(forced)[0].status == "applied"
    check(forced, model)


def test_fused_model_round_trips_state_dict_and_channels_last():
    model = Stem(SepBlock(residual=True)).eval()
    opt = optimize(model, X, target="h100", force_fuse=True)
    fresh = torch.randn(2, 3, 15, 13)
    with torch.no_grad():
        out = opt(fresh.contiguous(memory_format=torch.channels_last))
        assert max_rel(out, model(fresh)) < 1e-5
    assert all(torch.isfinite(v).all() for v in opt.state_dict().values() if v.is_floating_point())


def test_exported_fused_model_keeps_one_op_per_fused_site():
    """Traced on CPU, the optimized model still carries the fused op (it runs Triton on CUDA)."""
    model = Stem(SepBlock(residual=True)).eval()
    opt = optimize(model, X, target="h100", force_fuse=True)
    ep = torch.export.export(opt, (X,))
    ops = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert sum("dwsep.fused_sep_conv" in t for t in ops) == 1
    assert not any("convolution" in t and "groups" in t for t in ops)
    compiled = torch.compile(opt, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert max_rel(ep.module()(X), model(X)) < 1e-5
        assert max_rel(compiled(X), model(X)) < 1e-5


def _fused_inputs_nhwc(opt):
    """Whether each fused module's input arrived channels_last-contiguous (no copy needed)."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)))
             for m in opt.modules() if isinstance(m, FusedSepConv2d)]
    with torch.no_grad():
        opt(torch.randn(2, 3, 15, 13))
    for h in hooks:
        h.remove()
    return seen


def test_fused_model_keeps_activations_channels_last():
    model = Stem(SepBlock(residual=True)).eval()
    opt = optimize(model, X, target="h100", force_fuse=True)
    assert opt.conv.weight.is_contiguous(memory_format=torch.channels_last)  # the dense 3x3 stem
    assert model.conv.weight.is_contiguous()  # the input model is untouched
    assert _fused_inputs_nhwc(opt) == [True]
    assert any(n.startswith("channels_last: 1 conv weight") for n in opt.rewrite_report.notes)
    check(opt, model)
    off = optimize(model, X, target="h100", force_fuse=True, channels_last=False)
    assert off.conv.weight.is_contiguous() and _fused_inputs_nhwc(off) == [False]
    unfused = optimize(model, X, target="cpu", cost_model="analytic")
    assert unfused.conv.weight.is_contiguous() and not any("channels_last" in n for n in unfused.rewrite_report.notes)
    with pytest.raises(TypeError, match="channels_last must be"):
        optimize(model, X, channels_last="yes", target="h100", force_fuse=True)


class Flatten4d(nn.Module):
    """A head that .view()s its 4-d input: fine for NCHW, an error for a channels_last tensor."""

    def __init__(self, block):
        super().__init__()
        self.body = Stem(block)

    def forward(self, x):
        y = self.body(x)
        return y.view(y.shape[0], -1)


def test_channels_last_is_dropped_when_the_model_cannot_run_with_it():
    model = Flatten4d(SepBlock()).eval()
    with pytest.raises(RuntimeError):
        model.to(memory_format=torch.channels_last)(X)
    model.to(memory_format=torch.contiguous_format)
    opt = optimize(model, X, target="h100", force_fuse=True)
    assert fuse_sites(opt)[0].status == "applied"
    assert any(n.startswith("channels_last: not kept") for n in opt.rewrite_report.notes)
    assert opt.body.conv.weight.is_contiguous()
    check(opt, model)
