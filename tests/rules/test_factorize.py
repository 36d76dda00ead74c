"""factorize, through both front ends: a dense 3x3 conv whose every output channel's slab has rank 1
becomes pointwise → depthwise (exact), a full-rank one is declined as not factorable."""
import pytest
import torch
import torch.nn as nn

from tests.rules.formats import FORMATS, fresh_error, optimized, outcomes


class TwoConvs(nn.Module):
    """A rank-1-per-output-channel 3x3 conv (W[n, m] = D[n]·P[n, m]), then a full-rank one."""

    def __init__(self, c=16):
        super().__init__()
        self.low, self.full = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        with torch.no_grad():
            self.low.weight.copy_(torch.randn(c, 1, 3, 3) * torch.randn(c, c, 1, 1) / c)

    def forward(self, x):
        return self.full(torch.relu(self.low(x)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_factorize_splits_the_rank_one_conv_only(fmt):
    torch.manual_seed(0)
    model = TwoConvs().eval()
    report, run = optimized(fmt, model, torch.randn(2, 16, 32, 32), passes=("factorize",), target="cpu",
                            cost_model="analytic")
    assert outcomes(report, "factorize") == {"applied": 1, "declined": 1}
    applied = next(s for s in report.sites if s.kind == "factorize" and s.status == "applied")
    assert applied.after == "pw 16->16 → dw3x3 16->16" and "exact pw→dw" in applied.reason
    declined = next(s for s in report.sites if s.kind == "factorize" and s.status == "declined")
    assert declined.reason.startswith("not factorable")
    assert fresh_error(run, model, (3, 16, 32, 32)) < 1e-5
