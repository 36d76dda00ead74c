"""fuse, through both front ends: dw → relu → pw → relu6 (+ x) becomes one fused kernel site
(FusedSepConv2d in FX, a dwsep function in ONNX); a dw whose output goes to a cat names it."""
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
