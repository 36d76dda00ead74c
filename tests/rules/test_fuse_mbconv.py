"""fuse_mbconv, through both front ends: EfficientNetV2's Fused-MBConv block (3x3 conv expanding
C → 4C → silu → 1x1 back to C, + x), a stride-2 one without the residual, and a dense conv → 1x1
with no activation between each become one site (FusedMBConv2d in FX, a dwsep.FusedMBConv…
function call in ONNX); a 9x9 conv declines for its size; a dense conv followed by another 3x3
is not a site; without measured decisions or force_blocks (force_fuse alone does not) the block
declines."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rewrite.rules.fuse_mbconv import NOT_MEASURED
from tests.rules.formats import FORMATS, fresh_error, optimized, outcomes


class FusedMBConvs(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.conv1, self.pw1 = nn.Conv2d(c, 4 * c, 3, padding=1), nn.Conv2d(4 * c, c, 1)
        self.conv2, self.pw2 = nn.Conv2d(c, 4 * c, 3, stride=2, padding=1), nn.Conv2d(4 * c, 12, 1)
        self.conv3, self.pw3 = nn.Conv2d(12, 24, 9, padding=4), nn.Conv2d(24, 12, 1)
        self.conv4, self.conv5 = nn.Conv2d(12, 12, 3, padding=1), nn.Conv2d(12, 12, 3, padding=1)

    def forward(self, x):
        x = x + self.pw1(F.silu(self.conv1(x)))
        x = F.hardswish(self.pw2(F.silu(self.conv2(x))))
        x = self.pw3(torch.relu(self.conv3(x)))
        return self.conv5(torch.relu(self.conv4(x)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_fused_mbconv_blocks_become_one_site_each(fmt):
    torch.manual_seed(0)
    model = FusedMBConvs().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 12, 12), passes=("fuse_mbconv",), target="h100",
                            force_blocks=True)
    assert outcomes(report, "fuse_mbconv") == {"applied": 2, "declined": 1}, str(report)
    after = sorted(s.after for s in report.sites if s.status == "applied")
    assert after == ["fused[conv3x3 8->32 s2 → silu → pw 32->12 → hardswish]",
                     "fused[conv3x3 8->32 → silu → pw 32->8 → +res]"], after
    declined = next(s for s in report.sites if s.status == "declined")
    assert "9x9 is larger than 7x7" in declined.reason
    assert fresh_error(run, model, (3, 8, 12, 12)) < 1e-5


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_measurement_the_fused_mbconv_declines(fmt):
    torch.manual_seed(0)
    model = FusedMBConvs().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 12, 12), passes=("fuse_mbconv",), target="h100",
                            force_fuse=True)
    reasons = [s.reason for s in report.sites if s.kind == "fuse_mbconv"]
    assert reasons.count(NOT_MEASURED) == 2 and len(reasons) == 3, str(report)
    assert fresh_error(run, model, (3, 8, 12, 12)) < 1e-5
