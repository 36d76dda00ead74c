"""reverse, through both front ends: a linear dw → pw pair becomes one dense conv where the cost
model predicts it faster; a pair with an activation between is declined with that reason."""
import pytest
import torch
import torch.nn as nn

from tests.rules.formats import FORMATS, fresh_error, optimized, outcomes


class Pairs(nn.Module):
    """dw3x3 → pw (linear, wide and shallow: collapses), then dw3x3 → relu → pw (declined)."""

    def __init__(self, c=4, n=32):
        super().__init__()
        self.dw1, self.pw1 = nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, n, 1)
        self.dw2, self.pw2 = nn.Conv2d(n, n, 3, padding=1, groups=n), nn.Conv2d(n, n, 1)

    def forward(self, x):
        return self.pw2(torch.relu(self.dw2(self.pw1(self.dw1(x)))))


@pytest.mark.parametrize("fmt", FORMATS)
def test_reverse_collapses_the_linear_pair_and_names_the_blocker(fmt):
    torch.manual_seed(0)
    model = Pairs().eval()
    report, run = optimized(fmt, model, torch.randn(2, 4, 64, 64), passes=("reverse",), target="h100")
    sites = [s for s in report.sites if s.kind == "reverse"]
    applied = [s for s in sites if s.status == "applied"]
    assert [s.after for s in applied] == ["conv3x3 4->32"]
    assert any(s.status == "declined" and "nonlinearity (relu) between the convs" in s.reason for s in sites)
    assert fresh_error(run, model, (3, 4, 64, 64)) < 1e-5
