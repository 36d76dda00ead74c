"""The FX fuse pass end to end through the real Triton kernel (interpreter): optimize a small
separable-conv network, check that its fused modules run the kernel, and that the optimized
model equals the original on fresh inputs."""
import copy
from unittest import mock

import torch
from torch import nn

from kernels import FusedSepConv2d
from rewrite import optimize
from tests.helpers import batchnorm, max_rel


def small_mobilenet():
    def block(c, n, stride, act):
        return nn.Sequential(nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), batchnorm(c, c), act(),
                             nn.Conv2d(c, n, 1, bias=False), batchnorm(n, n), act())

    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), block(8, 16, 1, nn.ReLU6), block(16, 24, 2, nn.Hardswish)).eval()


def test_fused_model_runs_the_triton_kernel_and_matches(fsc):
    model = small_mobilenet()
    x = torch.randn(2, 3, 17, 15)
    opt = optimize(model, x, target="h100", force_fuse=True)
    fused = [m for m in opt.modules() if isinstance(m, FusedSepConv2d)]
    assert len(fused) == 2 and all(s.status == "applied" for s in opt.rewrite_report.sites if s.kind == "fuse")
    fresh = torch.randn(3, 3, 17, 15)
    launches = []
    real = fsc.fused_sep_conv

    def counting(*args, **kwargs):
        launches.append(args[0].shape)
        return real(*args, **kwargs)

    with mock.patch.object(fsc, "fused_sep_conv", counting), torch.no_grad():
        out = opt(fresh.contiguous(memory_format=torch.channels_last))
        ref = copy.deepcopy(model).double()(fresh.double())
    assert len(launches) == 2
    assert max_rel(out.double(), ref) < 1e-5
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_whole_model_converted_to_channels_last_still_matches(fsc):
    model = small_mobilenet()
    x = torch.randn(2, 3, 17, 15)
    opt = optimize(model, x, target="h100", force_fuse=True).to(memory_format=torch.channels_last)
    fresh = torch.randn(2, 3, 17, 15)
    with torch.no_grad():
        out = opt(fresh.contiguous(memory_format=torch.channels_last))
        ref = copy.deepcopy(model).double()(fresh.double())
    assert max_rel(out.double(), ref) < 1e-5


def test_squeeze_excitation_blocks_run_the_three_launch_form_and_match(se):
    """Two MBConv blocks with squeeze-excitation (EfficientNet's SiLU / sigmoid, MobileNetV3's
    ReLU / hard-sigmoid, one with a residual): each fuses into kernels/sep_conv/sep_conv_se.py's form."""
    from kernels import FusedSepConvSE2d
    from models_under_test.blocks import ConvBNAct, InvertedResidual

    model = nn.Sequential(
        ConvBNAct(3, 8, 3, 2, act=nn.SiLU),
        InvertedResidual(8, 8, expanded=16, kernel_size=5, act=nn.SiLU, se_channels=4, se_act=nn.SiLU,
                         se_gate=nn.Sigmoid),
        InvertedResidual(8, 12, expanded=24, stride=2, act=nn.Hardswish, se_channels=8),
    ).eval()
    x = torch.randn(2, 3, 17, 15)
    opt = optimize(model, x, target="h100", force_fuse=True)
    assert sum(isinstance(m, FusedSepConvSE2d) for m in opt.modules()) == 2
    assert all(s.status == "applied" for s in opt.rewrite_report.sites if s.kind == "fuse")
    means, real = [], se.sep_conv_se

    def counting(*args, **kwargs):
        means.append(args[0].shape)
        return real(*args, **kwargs)

    fresh = torch.randn(3, 3, 17, 15)
    with mock.patch.object(se, "sep_conv_se", counting), torch.no_grad():
        out = opt(fresh)
        ref = copy.deepcopy(model).double()(fresh.double())
    assert len(means) == 2
    assert max_rel(out.double(), ref) < 1e-5


class _ReXNetBlock(nn.Module):
    """ReXNet's bottleneck with a non-square depthwise kernel: pw → relu6 → dw(1x5, BN) → SE → relu6 → pw(BN) + x."""

    def __init__(self, c=8, e=16):
        super().__init__()
        self.exp = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), batchnorm(e, e), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(e, e, (1, 5), padding=(0, 2), groups=e, bias=False), batchnorm(e, e))
        self.fc1, self.fc2 = nn.Conv2d(e, 4, 1), nn.Conv2d(4, e, 1)
        self.pw = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), batchnorm(c, c))

    def forward(self, x):
        a = self.dw(self.exp(x))
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(a.mean((2, 3), keepdim=True)))))
        return x + self.pw(nn.functional.relu6(a * s))


def test_relu6_after_the_gate_and_a_1x5_kernel_run_the_se_form_and_match(se):
    from kernels import FusedSepConvSE2d

    model = _ReXNetBlock().eval()
    x = torch.randn(2, 8, 9, 11) * 3
    opt = optimize(model, x, target="h100", force_fuse=True)
    (fused,) = [m for m in opt.modules() if isinstance(m, FusedSepConvSE2d)]
    assert fused.act_after_gate == "relu6" and fused.dw_weight.shape[2:] == (1, 5) and fused.padding == (0, 2)
    launches, real = [], se.sep_conv_se

    def counting(*args, **kwargs):
        launches.append(kwargs["act_after_gate"])
        return real(*args, **kwargs)

    fresh = torch.randn(3, 8, 9, 11) * 3
    with mock.patch.object(se, "sep_conv_se", counting), torch.no_grad():
        out = opt(fresh)
        ref = copy.deepcopy(model).double()(fresh.double())
    assert launches == ["relu6"]
    assert max_rel(out.double(), ref) < 1e-5
