"""fuse_block, through both front ends: a whole inverted-residual block (1x1 expand → act → dw →
act (→ SE) → 1x1 project (+ x)) becomes one site (FusedInvertedResidual2d in FX, a
dwsep.FusedInvertedResidual… function call in ONNX); a depthwise conv with no expansion before it
is left to the fuse rule; an expansion read elsewhere is declined with the reason; without
measured decisions or force_blocks (force_fuse alone does not) the block declines (no GPU
measurement) and the fuse rule fuses its dw+pw part as before. On real models (torchvision
MobileNetV2 and EfficientNet-B0, timm MobileNetV4) the two formats find the same blocks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rewrite.rules.fuse_block import NOT_MEASURED
from tests.rules.formats import FORMATS, fresh_error, optimized, outcomes


class InvertedResidual(nn.Module):
    """MobileNetV2's block (relu6, + x at stride 1), then a stride-2 one with an EfficientNet-style
    squeeze-excitation (silu), then a plain dw → pw pair with no expansion in front."""

    def __init__(self, c=8, e=4):
        super().__init__()
        h = c * e
        self.ex1, self.dw1, self.pw1 = nn.Conv2d(c, h, 1), nn.Conv2d(h, h, 3, padding=1, groups=h), nn.Conv2d(h, c, 1)
        self.ex2, self.dw2 = nn.Conv2d(c, h, 1), nn.Conv2d(h, h, 5, stride=2, padding=2, groups=h)
        self.se_reduce, self.se_expand = nn.Conv2d(h, 4, 1), nn.Conv2d(4, h, 1)
        self.pw2 = nn.Conv2d(h, 12, 1)
        self.dw3, self.pw3 = nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.Conv2d(12, 12, 1)

    def forward(self, x):
        x = x + self.pw1(F.relu6(self.dw1(F.relu6(self.ex1(x)))))
        a = F.silu(self.dw2(F.silu(self.ex2(x))))
        a = a * torch.sigmoid(self.se_expand(F.silu(self.se_reduce(a.mean((2, 3), keepdim=True)))))
        y = self.pw2(a)
        return self.pw3(torch.relu(self.dw3(y)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_blocks_become_one_site_each(fmt):
    torch.manual_seed(0)
    model = InvertedResidual().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 10, 10), passes=("fuse_block", "fuse"),
                            target="h100", force_blocks=True)
    assert outcomes(report, "fuse_block") == {"applied": 2}, str(report)
    assert outcomes(report, "fuse") == {"applied": 1}, str(report)
    after = sorted(s.after for s in report.sites if s.kind == "fuse_block")
    assert after == ["fused[pw 8->32 → relu6 → dw3x3 32->32 → relu6 → pw 32->8 → +res]",
                     "fused[pw 8->32 → silu → dw5x5 32->32 s2 → silu → SE(4, silu, sigmoid) → pw 32->12]"], after
    assert fresh_error(run, model, (3, 8, 10, 10)) < 1e-5


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_measurement_the_block_declines_and_fuse_takes_its_dw_pw(fmt):
    torch.manual_seed(0)
    model = InvertedResidual().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 10, 10), passes=("fuse_block", "fuse"), target="h100",
                            force_fuse=True)
    blocks = [s for s in report.sites if s.kind == "fuse_block"]
    assert len(blocks) == 2 and all(s.status == "declined" and s.reason == NOT_MEASURED for s in blocks), str(report)
    assert outcomes(report, "fuse")["applied"] >= 1, str(report)
    assert fresh_error(run, model, (3, 8, 10, 10)) < 1e-5


class SharedExpansion(nn.Module):
    """The expansion's output is also returned: the block cannot hide it."""

    def __init__(self, c=8):
        super().__init__()
        self.ex, self.dw, self.pw = nn.Conv2d(c, 2 * c, 1), nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c), \
            nn.Conv2d(2 * c, c, 1)

    def forward(self, x):
        h = torch.relu(self.ex(x))
        return self.pw(torch.relu(self.dw(h))), h


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_expansion_read_elsewhere_is_declined_with_the_reason(fmt):
    torch.manual_seed(0)
    model = SharedExpansion().eval()
    report, _ = optimized(fmt, model, torch.randn(2, 8, 6, 6), passes=("fuse_block", "fuse"), target="h100",
                          force_blocks=True)
    block = next(s for s in report.sites if s.kind == "fuse_block")
    assert block.status == "declined" and "also read by" in block.reason, str(report)
    assert outcomes(report, "fuse") == {"applied": 1}


REAL = [("tv/mobilenet_v2", 16), ("tv/efficientnet_b0", 15), ("timm/mobilenetv4_conv_small", 8)]


@pytest.mark.parametrize("name, blocks", REAL)
def test_real_models_fuse_the_same_blocks_in_both_formats(name, blocks):
    """optimize(…, force_blocks=True) on the FX module and on its ONNX export: the same blocks, the
    results within tolerance of the float64 original on fresh inputs."""
    import models_under_test as zoo

    model = zoo.build_real(name)
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    sites, errors = {}, {}
    for fmt in FORMATS:
        report, run = optimized(fmt, model, x, target="h100", force_blocks=True)
        sites[fmt] = sorted((s.name, s.status) for s in report.sites if s.kind == "fuse_block")
        errors[fmt] = fresh_error(run, model, (2, 3, 96, 96))
    applied = [n for n, status in sites["fx"] if status == "applied"]
    assert len(applied) >= blocks, sites["fx"]
    assert [st for _, st in sites["fx"]] == [st for _, st in sites["onnx"]] and len(sites["fx"]) == len(sites["onnx"])
    assert errors["fx"] < 1e-4 and errors["onnx"] < 1e-4, errors


def test_optimized_blocks_export_as_one_op_each_and_compile_without_graph_breaks():
    """torch.export keeps one dwsep op per fused block (no conv of the block left), and
    torch.compile(fullgraph=True) takes the optimized model whole: what `torch.compile(optimize(m))`
    on a GPU rests on."""
    from rewrite import optimize
    from tests.helpers import max_rel

    torch.manual_seed(0)
    model = InvertedResidual().eval()
    x = torch.randn(2, 8, 10, 10)
    opt = optimize(model, x, passes=("fuse_block", "fuse"), target="h100", force_blocks=True)
    ep = torch.export.export(opt, (x,))
    ops = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert sum("dwsep.inverted_residual" in t for t in ops) == 2, ops   # the plain and the SE block
    assert sum("dwsep.fused_sep_conv" in t for t in ops) == 1, ops
    assert not any("convolution" in t for t in ops), ops
    compiled = torch.compile(opt, backend="aot_eager", fullgraph=True)
    fresh = torch.randn(2, 8, 10, 10)    # the exported program is specialised to the example's batch
    with torch.no_grad():
        assert max_rel(ep.module()(fresh), model(fresh)) < 1e-5
        assert max_rel(compiled(fresh), model(fresh)) < 1e-5
