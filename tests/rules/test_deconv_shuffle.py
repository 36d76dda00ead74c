"""deconv_shuffle: a transposed conv with kernel = stride becomes a 1x1 conv and depth_to_space, in
both formats, exactly; the overlapping, padded, grouped and dilated ones are declined with their
reason; the form is timed like every form-changing rule (here the analytic cost model, which
never predicts a win, is overruled by min_speedup=0 so that the lowering itself is tested)."""
import pytest
import torch
import torch.nn as nn

from rewrite.algebra.shuffle import check_deconv_as_shuffle, deconv_as_shuffle
from rewrite.ir import TransposedConv, run_chain
from rewrite.options import RewriteOptions
from rewrite.rules import RULES
from rewrite.rules.deconv_shuffle import plan_deconv_shuffle
from tests.helpers import max_rel
from tests.rules.formats import FORMATS, fresh_error, optimized, optimized_graph, outcomes


class DBHead(nn.Module):
    """DBNet's probability head as PP-OCR writes it: conv3x3 → BN → ReLU → deconv2x2 s2 → BN → ReLU
    → deconv2x2 s2 (to one channel) → sigmoid."""

    def __init__(self, c=8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c // 2, 3, padding=1), nn.BatchNorm2d(c // 2), nn.ReLU(),
                                  nn.ConvTranspose2d(c // 2, c // 2, 2, 2), nn.BatchNorm2d(c // 2), nn.ReLU(),
                                  nn.ConvTranspose2d(c // 2, 1, 2, 2), nn.Sigmoid())
        with torch.no_grad():
            for bn in (self.body[1], self.body[4]):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("fmt", FORMATS)
def test_both_upsamplings_become_pw_and_depth_to_space(fmt):
    torch.manual_seed(0)
    model = DBHead().eval()
    report, run, ops = optimized_graph(fmt, model, torch.randn(2, 8, 6, 5), target="cpu", cost_model="analytic",
                                       min_speedup=0.0)
    sites = sorted((s.before, s.after, s.status) for s in report.sites if s.kind == "deconv_shuffle")
    assert sites == [("deconv2x2 4->1 s2", "pw 4->4 → depth_to_space 2", "applied"),
                     ("deconv2x2 4->4 s2", "pw 4->16 → depth_to_space 2", "applied")]
    assert all(s.rel_error < 1e-6 for s in report.sites if s.kind == "deconv_shuffle")
    assert fresh_error(run, model, (3, 8, 6, 5)) < 1e-5
    assert ops["PixelShuffle" if fmt == "fx" else "DepthToSpace"] == 2
    assert not ops["conv_transpose2d"] and not ops["ConvTranspose"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_roofline_keeps_the_transposed_conv(fmt):
    """The same multiply-adds and one more pass over the upsampled tensor: never predicted faster."""
    torch.manual_seed(0)
    model = DBHead().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 6, 5), target="cpu", cost_model="analytic")
    assert outcomes(report, "deconv_shuffle") == {"declined": 2}
    assert all("cost model predicts" in s.reason for s in report.sites if s.kind == "deconv_shuffle")


@pytest.mark.parametrize("layer, why", [
    (nn.ConvTranspose2d(4, 6, 3, 2), "overlap"),
    (nn.ConvTranspose2d(4, 6, 2, 2, padding=1), "padding"),
    (nn.ConvTranspose2d(4, 6, 4, 2, padding=1, output_padding=1), "overlap"),
    (nn.ConvTranspose2d(4, 6, 2, 2, groups=2), "grouped"),
    (nn.ConvTranspose2d(4, 6, 2, 2, dilation=2), "dilation"),
    (nn.ConvTranspose2d(4, 6, (2, 1), (2, 1)), "not square"),
])
@pytest.mark.parametrize("fmt", FORMATS)
def test_other_transposed_convs_are_declined_with_their_reason(fmt, layer, why):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 4, 1), layer).eval()
    report, run = optimized(fmt, model, torch.randn(2, 4, 5, 6), target="cpu", cost_model="analytic", min_speedup=0.0)
    (site,) = [s for s in report.sites if s.kind == "deconv_shuffle"]
    assert site.status == "declined" and why in site.reason
    assert fresh_error(run, model, (3, 4, 5, 6)) < 1e-5


@pytest.mark.parametrize("s, bias", [(2, True), (3, False), (4, True)])
def test_the_algebra_is_exact(s, bias):
    g = torch.Generator().manual_seed(s)
    deconv = TransposedConv(torch.randn(5, 3, s, s, generator=g, dtype=torch.float64),
                            torch.randn(3, generator=g, dtype=torch.float64) if bias else None, (s, s))
    assert check_deconv_as_shuffle(deconv) is None
    x = torch.randn(2, 5, 4, 3, generator=g, dtype=torch.float64)
    assert max_rel(run_chain(list(deconv_as_shuffle(deconv)), x), deconv.apply(x)) < 1e-13


def test_the_record_computes_onnx_padding_and_output_padding():
    """TransposedConv.apply: the full output with output_padding, cropped per side (ONNX's pads)."""
    g = torch.Generator().manual_seed(0)
    w, b, x = torch.randn(4, 3, 3, 3, generator=g), torch.randn(3, generator=g), torch.randn(1, 4, 5, 6, generator=g)
    layer = TransposedConv(w, b, (2, 2), (1, 1, 1, 1), (1, 1))
    expected = nn.functional.conv_transpose2d(x, w, b, 2, 1, 1)
    assert layer.output_hw(5, 6) == tuple(expected.shape[-2:])
    torch.testing.assert_close(layer.apply(x), expected)


def test_plan_and_place_in_the_pipeline():
    opts = RewriteOptions(target="cpu", cost_model="analytic", min_speedup=0.0).resolved("cpu")
    deconv = TransposedConv(torch.randn(8, 4, 2, 2), torch.randn(4), (2, 2))
    plan = plan_deconv_shuffle(deconv, (1, 8, 16, 16), torch.float32, opts)
    assert [layer.describe() for layer in plan.after] == ["pw 8->16", "depth_to_space 2"] and not plan.removes_work
    assert RULES["deconv_shuffle"].timed and "deconv" in RULES["deconv_shuffle"].captures
    order = list(RULES)
    assert order.index("native_act") < order.index("deconv_shuffle") < order.index("reverse")
