"""fuse, through both front ends: dw → relu → pw → relu6 (+ x) becomes one fused kernel site
(FusedSepConv2d in FX, a dwsep function in ONNX); a dw whose output goes to a cat names it; 1x5
and 5x1 (stride 2, multiplier 2) depthwise convs fuse, a 7x9 one declines; a pad folds into the
fused conv only where it stays symmetric per axis; ReXNet's relu6 after the squeeze-excitation
runs inside the fused site."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.rules.formats import FORMATS, fresh_error, optimized, outcomes


class Block(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.dw, self.pw = nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, c, 1)
        self.dw2 = nn.Conv2d(c, c, 3, padding=1, groups=c)

    def forward(self, x):
        y = x + F.relu6(self.pw(torch.relu(self.dw(x))))
        return torch.cat([self.dw2(y), y], 1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuse_makes_one_site_of_the_block(fmt):
    torch.manual_seed(0)
    model = Block().eval()
    report, run = optimized(fmt, model, torch.randn(2, 16, 12, 12), passes=("fuse",), target="h100",
                            force_fuse=True)
    assert outcomes(report, "fuse") == {"applied": 1, "declined": 1}
    fused = next(s for s in report.sites if s.kind == "fuse" and s.status == "applied")
    assert fused.after == "fused[dw3x3 16->16 → relu → pw 16->16 → relu6 → +res]"
    declined = next(s for s in report.sites if s.kind == "fuse" and s.status == "declined")
    assert declined.reason.startswith("no pointwise conv follows")
    assert fresh_error(run, model, (3, 16, 12, 12)) < 1e-5


class NonSquare(nn.Module):
    """GhostNet-V2-like kernel forms: a 1x5 and a stride-2 5x1 depthwise conv, each before a 1x1 conv,
    and a 7x9 one (past the kernel's 7x7) before a third."""

    def __init__(self, c=8):
        super().__init__()
        self.dw_row = nn.Conv2d(c, c, (1, 5), padding=(0, 2), groups=c)
        self.pw_row = nn.Conv2d(c, c, 1)
        self.dw_col = nn.Conv2d(c, 2 * c, (5, 1), stride=2, padding=(2, 0), groups=c)   # multiplier 2
        self.pw_col = nn.Conv2d(2 * c, c, 1)
        self.dw_big = nn.Conv2d(c, c, (7, 9), padding=(3, 4), groups=c)
        self.pw_big = nn.Conv2d(c, c, 1)

    def forward(self, x):
        y = x + self.pw_row(torch.relu(self.dw_row(x)))
        y = F.hardswish(self.pw_col(self.dw_col(y)))
        return self.pw_big(self.dw_big(y))


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuse_takes_non_square_depthwise_kernels(fmt):
    torch.manual_seed(0)
    model = NonSquare().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 12, 10), passes=("fuse",), target="h100",
                            force_fuse=True)
    assert outcomes(report, "fuse") == {"applied": 2, "declined": 1}
    applied = sorted(s.after for s in report.sites if s.kind == "fuse" and s.status == "applied")
    assert applied == ["fused[dw1x5 8->8 → relu → pw 8->8 → +res]", "fused[dw5x1 r=2 8->16 s2 → pw 16->8 → hardswish]"]
    declined = next(s for s in report.sites if s.kind == "fuse" and s.status == "declined")
    assert declined.reason == "depthwise kernel 7x9 is larger than 7x7 on an axis"
    assert fresh_error(run, model, (3, 8, 12, 10)) < 1e-5


class Pads(nn.Module):
    """Explicit pads before depthwise convs: (2, 2) left and right before a 1x5 (absorbed: the conv
    pads (0, 0, 2, 2), per axis symmetric) and (1, 2) before a 1x4 (would pad (0, 0, 1, 2): kept)."""

    def __init__(self, c=8):
        super().__init__()
        self.dw5, self.pw5 = nn.Conv2d(c, c, (1, 5), groups=c), nn.Conv2d(c, c, 1)
        self.dw4, self.pw4 = nn.Conv2d(c, c, (1, 4), groups=c), nn.Conv2d(c, c, 1)

    def forward(self, x):
        y = self.pw5(torch.relu(self.dw5(F.pad(x, (2, 2, 0, 0)))))
        return self.pw4(torch.relu(self.dw4(F.pad(y, (1, 2, 0, 0)))))


@pytest.mark.parametrize("fmt", FORMATS)
def test_pads_fold_into_the_fused_conv_only_when_symmetric_per_axis(fmt):
    torch.manual_seed(0)
    model = Pads().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 6, 9), passes=("fold", "fuse"), target="h100",
                            force_fuse=True)
    assert outcomes(report, "fold") == {"applied": 1, "declined": 1}
    kept = next(s for s in report.sites if s.kind == "fold" and s.status == "declined")
    assert "padding (0, 0, 1, 2), which the fused kernel does not take" in kept.reason
    absorbed = next(s for s in report.sites if s.kind == "fold" and s.status == "applied")
    assert absorbed.before == "pad(0,0,2,2) → dw1x5 8->8"
    assert outcomes(report, "fuse") == {"applied": 2}
    assert sorted(s.after for s in report.sites if s.kind == "fuse") == [
        "fused[dw1x4 8->8 → relu → pw 8->8]", "fused[dw1x5 8->8 → relu → pw 8->8]"]
    assert fresh_error(run, model, (3, 8, 6, 9)) < 1e-5


class ReXNetBlock(nn.Module):
    """ReXNet's bottleneck, BatchNorm folded: dw → squeeze-excitation → relu6 → pw (+ x)."""

    def __init__(self, c=16, kernel=3, stride=1):
        super().__init__()
        self.dw = nn.Conv2d(c, c, kernel, stride, kernel // 2, groups=c)
        self.fc1, self.fc2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c, 1)
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x):
        a = self.dw(x)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(a.mean((2, 3), keepdim=True)))))
        return x + self.pw(F.relu6(a * s))


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuse_takes_the_activation_after_the_squeeze_excitation(fmt):
    torch.manual_seed(0)
    model = ReXNetBlock().eval()
    with torch.no_grad():   # gated products past 6 and below 0, so relu6 clips both ways
        model.dw.weight.mul_(4)
    report, run = optimized(fmt, model, torch.randn(2, 16, 10, 10), passes=("fuse",), target="h100",
                            force_fuse=True)
    assert outcomes(report, "fuse") == {"applied": 1}
    (site,) = [s for s in report.sites if s.kind == "fuse"]
    assert site.after == "fused[dw3x3 16->16 → SE(4, relu, sigmoid) → relu6 → pw 16->16 → +res]"
    assert fresh_error(run, model, (3, 16, 10, 10)) < 1e-5


class DecoupledAttention(nn.Module):
    """GhostNet-V2's DFC attention, BatchNorm folded: x · sigmoid(dw5x1(dw1x5(x)))."""

    def __init__(self, c=8):
        super().__init__()
        self.row = nn.Conv2d(c, c, (1, 5), padding=(0, 2), groups=c)
        self.col = nn.Conv2d(c, c, (5, 1), padding=(2, 0), groups=c)

    def forward(self, x):
        return x * torch.sigmoid(self.col(self.row(x)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuse_names_what_follows_ghostnet_v2s_1x5_and_5x1(fmt):
    torch.manual_seed(0)
    model = DecoupledAttention().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 9, 9), passes=("fuse",), target="h100", force_fuse=True)
    reasons = {s.before.split(" ")[0]: s.reason for s in report.sites if s.kind == "fuse"}
    assert reasons["dw1x5"] == "another depthwise conv (dw5x1 8->8) follows, not a 1x1 stride-1 conv"
    assert reasons["dw5x1"] == ("a product between the depthwise and pointwise convs that is not a "
                                "squeeze-excitation blocks the fusion")   # the sigmoid gates x, not its input
    assert fresh_error(run, model, (3, 8, 9, 9)) < 1e-5


@pytest.mark.parametrize("stride, reason", [
    ((2, 1), "depthwise stride (2, 1) differs between the axes (the fused kernels take one stride for both)"),
    ((3, 3), "depthwise stride 3 is not 1 or 2"), ((2, 2), None)])
def test_the_stride_a_fused_kernel_cannot_take_is_named(stride, reason):
    from rewrite.ir import ConvSpec
    from rewrite.rules.fusable import spatial_reason
    dw = ConvSpec(torch.ones(8, 1, 3, 3), stride=stride, padding=(1, 1, 1, 1), groups=8)
    assert spatial_reason(dw, "depthwise") == reason
