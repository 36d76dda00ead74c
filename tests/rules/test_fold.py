"""fold, through both front ends: a zero pad into the conv after it, a BatchNorm into the conv
after it (pre-activation), a layer scale into the conv before it; and the plan's algebra."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rewrite.ir import ConvSpec, ZeroPad, run_chain
from rewrite.options import RewriteOptions
from rewrite.rules import Plan, plan_fold
from tests.helpers import batchnorm, dw_spec, max_rel, random_affine, rand
from tests.rules.formats import FORMATS, fresh_error, optimized, outcomes


class PadBnScale(nn.Module):
    """pad → conv3x3 → relu → BN → conv1x1 → · γ: three folds, nothing else to do."""

    def __init__(self, c=8):
        super().__init__()
        self.conv, self.bn, self.pw = nn.Conv2d(c, c, 3), batchnorm(c, seed=3), nn.Conv2d(c, 2 * c, 1)
        self.gamma = nn.Parameter(torch.rand(2 * c, 1, 1) + 0.5)

    def forward(self, x):
        return self.pw(self.bn(torch.relu(self.conv(F.pad(x, (1, 1, 1, 1)))))) * self.gamma


@pytest.mark.parametrize("fmt", FORMATS)
def test_fold_removes_the_pad_the_batchnorm_and_the_scale(fmt):
    torch.manual_seed(0)
    model = PadBnScale().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 12, 12), passes=("fold",), target="cpu",
                            cost_model="analytic")
    assert outcomes(report, "fold") == {"applied": 3}
    assert fresh_error(run, model, (3, 8, 12, 12)) < 1e-5


def test_fold_plans_are_exact_and_only_remove_work():
    opts = RewriteOptions(target="cpu").resolved("cpu")
    g = torch.Generator().manual_seed(0)
    conv, affine = dw_spec(6, gen=g), random_affine(6, gen=g)
    x = rand(2, 6, 9, 9, gen=g)
    for first, second in ((conv, affine), (ZeroPad((1, 0, 2, 1)), conv)):
        plan = plan_fold(first, second, (2, 6, 9, 9), torch.float32, opts)
        assert isinstance(plan, Plan) and plan.removes_work and len(plan.after) == 1
        assert max_rel(run_chain(plan.after, x), run_chain([first, second], x)) < 1e-12
    dense = ConvSpec(rand(4, 6, 1, 1, gen=g), rand(4, gen=g))
    plan = plan_fold(affine, dense, (2, 6, 9, 9), torch.float32, opts)
    assert max_rel(run_chain(plan.after, x), run_chain([affine, dense], x)) < 1e-12
