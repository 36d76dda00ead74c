"""fold_concat, through both front ends: a BatchNorm after a concat of convs (MixNet's mixed convs:
split → one conv per part → cat → BatchNorm) folds its slices into the convs, the split kept, also
where each strided branch reads its own TF "same" pad (inputs of different sizes, which the site
check crops branch by branch); a branch that is not a conv is declined with that reason; the plan's
algebra against run_chain."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from passes.verify import crop
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


class SameStride2(nn.Module):
    """BN(cat(dw3(pad(a, 0,1,0,1)), dw5(pad(b, 1,2,1,2)))) at stride 2 — tf_mixnet_s's strided mixed
    conv, each kernel size behind its own TF "same" pad, so the branches read 33² and 35² to give 16²."""

    def __init__(self):
        super().__init__()
        self.dw3 = nn.Conv2d(4, 4, 3, stride=2, groups=4, bias=False)
        self.dw5 = nn.Conv2d(4, 4, 5, stride=2, groups=4, bias=False)
        self.bn = batchnorm(8, 4)

    def forward(self, x):
        a, b = torch.split(x, [4, 4], 1)
        return self.bn(torch.cat([self.dw3(F.pad(a, (0, 1, 0, 1))), self.dw5(F.pad(b, (1, 2, 1, 2)))], 1))


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
def test_fold_concat_checks_strided_branches_behind_their_own_same_pads(fmt):
    # the site check once cut both branch inputs to one 16² window, from which the 3x3 gives 7² and
    # the 5x5 6²: the concat failed and the site was rolled back
    torch.manual_seed(0)
    model = SameStride2().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 32, 32), passes=("fold_concat",), target="cpu",
                            cost_model="analytic")
    assert outcomes(report, "fold_concat") == {"applied": 1}, [s.reason for s in report.sites]
    assert fresh_error(run, model, (3, 8, 32, 32)) < 1e-5


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


def test_the_check_crops_each_branch_to_one_output_window():
    # tf_mixnet_s's first strided mixed conv at 224²: 3x3 / 5x5 / 7x7 at stride 2, each behind its
    # TF "same" pad, read 57², 59² and 61² to give 28²; the check's crops must give one window too
    g = torch.Generator().manual_seed(0)
    concat = Concat(tuple(ConvSpec(rand(2, 1, k, k, gen=g), None, stride=(2, 2), groups=2) for k in (3, 5, 7)))
    xs = [rand(1, 2, n, n, gen=g) for n in (57, 59, 61)]
    assert {tuple(y.shape[2:]) for y in map(ConvSpec.apply, concat.convs, xs)} == {(28, 28)}
    cropped = crop(xs, [concat])
    assert [x.shape[2] for x in cropped] == [17, 19, 21]
    assert {tuple(y.shape[2:]) for y in map(ConvSpec.apply, concat.convs, cropped)} == {(8, 8)}
