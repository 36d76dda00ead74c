"""fold_concat, through both front ends: a BatchNorm after a concat of convs (MixNet's mixed convs:
split → one conv per part → cat → BatchNorm) folds its slices into the convs, the split kept; a
branch that is not a conv is declined with that reason; the plan's algebra against run_chain."""
import pytest
import torch
import torch.nn as nn

from rewrite.ir import Affine, Concat, ConvSpec, run_chain
from rewrite.options import RewriteOptions
from rewrite.rules import Plan
from rewrite.rules.fold_concat import plan_fold_concat
from tests.helpers import batchnorm, max_rel, rand
from tests.rules.formats import FORMATS, fresh_error, optimized, outcomes


class MixedConv(nn.Module):
    """relu(BN(cat(dw3(a), dw5(b), dw7(c)))) with a, b, c = split(x) — MixNet's depthwise mixed conv —
    then relu(BN(cat(pw(d), pw(e)))) over a split of that (its grouped pointwise)."""

    def __init__(self):
        super().__init__()
        self.dws = nn.ModuleList(nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False)
                                 for c, k in ((4, 3), (4, 5), (8, 7)))
        self.bn1 = batchnorm(16, 1)
        self.pws = nn.ModuleList([nn.Conv2d(8, 12, 1), nn.Conv2d(8, 4, 1, bias=False)])
        self.bn2 = batchnorm(16, 2)

    def forward(self, x):
        parts = torch.split(x, [4, 4, 8], 1)
        x = torch.relu(self.bn1(torch.cat([conv(p) for conv, p in zip(self.dws, parts)], 1)))
        parts = torch.split(x, [8, 8], 1)
        return torch.relu(self.bn2(torch.cat([conv(p) for conv, p in zip(self.pws, parts)], 1)))


class HalfConv(nn.Module):
    """BN(cat(conv(a), b)): one branch is the split's part itself."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), batchnorm(8, 3)

    def forward(self, x):
        a, b = torch.split(x, [4, 4], 1)
        return self.bn(torch.cat([self.conv(a), b], 1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_fold_concat_folds_the_batchnorm_after_mixed_convs(fmt):
    torch.manual_seed(0)
    model = MixedConv().eval()
    report, run = optimized(fmt, model, torch.randn(2, 16, 10, 10), passes=("fold_concat",), target="cpu",
                            cost_model="analytic")
    assert outcomes(report, "fold_concat") == {"applied": 2}
    assert fresh_error(run, model, (3, 16, 10, 10)) < 1e-5


@pytest.mark.parametrize("fmt", FORMATS)
def test_fold_concat_declines_a_branch_that_is_not_a_conv(fmt):
    torch.manual_seed(0)
    model = HalfConv().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 10, 10), passes=("fold_concat",), target="cpu",
                            cost_model="analytic")
    [site] = [s for s in report.sites if s.kind == "fold_concat"]
    assert site.status == "declined" and "branch 2" in site.reason and "not a conv" in site.reason
    assert fresh_error(run, model, (3, 8, 10, 10)) < 1e-5


def test_fold_concat_plan_is_exact():
    opts = RewriteOptions(target="cpu").resolved("cpu")
    g = torch.Generator().manual_seed(0)
    concat = Concat((ConvSpec(rand(3, 1, 3, 3, gen=g), None, padding=(1, 1, 1, 1), groups=3),
                     ConvSpec(rand(5, 4, 1, 1, gen=g), rand(5, gen=g))))
    affine = Affine(rand(8, gen=g), rand(8, gen=g))
    xs = (rand(2, 3, 6, 6, gen=g), rand(2, 4, 6, 6, gen=g))
    plan = plan_fold_concat([concat, affine], (2, 3, 6, 6), torch.float64, opts)
    assert isinstance(plan, Plan) and plan.removes_work and isinstance(plan.after[0], Concat)
    assert max_rel(run_chain(plan.after, *xs), run_chain([concat, affine], *xs)) < 1e-12
