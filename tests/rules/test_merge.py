"""merge, through both front ends: a RepVGG block (3x3+BN, 1x1+BN, BN(x), summed) becomes one conv."""
import pytest
import torch
import torch.nn as nn

from tests.helpers import batchnorm
from tests.rules.formats import FORMATS, fresh_error, optimized, outcomes


class RepVggBlock(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.k3, self.bn3 = nn.Conv2d(c, c, 3, padding=1, bias=False), batchnorm(c, seed=1)
        self.k1, self.bn1 = nn.Conv2d(c, c, 1, bias=False), batchnorm(c, seed=2)
        self.id = batchnorm(c, seed=3)

    def forward(self, x):
        return torch.relu(self.bn3(self.k3(x)) + self.bn1(self.k1(x)) + self.id(x))


@pytest.mark.parametrize("fmt", FORMATS)
def test_merge_makes_one_conv_of_the_three_branches(fmt):
    torch.manual_seed(0)
    model = RepVggBlock().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 10, 10), passes=("merge",), target="cpu",
                            cost_model="analytic")
    assert outcomes(report, "merge") == {"applied": 1}
    site = next(s for s in report.sites if s.kind == "merge")
    assert site.after == "conv3x3 8->8" and "3 branches" in site.reason
    assert fresh_error(run, model, (3, 8, 10, 10)) < 1e-5
