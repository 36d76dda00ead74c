"""fold_next_linear, through both front ends: a BatchNorm read by a Linear through flatten and
transpose (FastViT's attention: BatchNorm2d → flatten(2) → transpose → qkv), and a per-channel
scale read through a permute; not a site where the linear reads another axis, or where the
BatchNorm's output has another reader (then a "left" row says why); and the plan's algebra
against run_chain."""
import pytest
import torch
import torch.nn as nn

from rewrite.ir import Affine, ConvSpec, Flatten, Linear, Permute, run_chain
from rewrite.options import RewriteOptions
from rewrite.rules import Plan
from rewrite.rules.fold_next_linear import plan_fold_next_linear
from tests.helpers import batchnorm, max_rel, rand
from tests.rules.formats import FORMATS, fresh_error, optimized_graph, outcomes


class Tokens(nn.Module):
    """conv → relu → BN → flatten(2) → transpose → qkv Linear (no bias); and relu → · γ[C,1,1] →
    permute(0, 2, 3, 1) → Linear: two folds. With `shared`, the BN's output is also added back."""

    def __init__(self, c=8, shared=False):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, c, 3, padding=1), batchnorm(c, seed=2)
        self.qkv, self.fc = nn.Linear(c, 3 * c, bias=False), nn.Linear(c, 4)
        self.gamma = nn.Parameter(torch.rand(c, 1, 1) + 0.5)
        self.shared = shared

    def forward(self, x):
        y = torch.relu(self.conv(x))
        n = self.bn(y)
        t = self.qkv(n.flatten(2).transpose(-2, -1))
        s = self.fc((y * self.gamma).permute(0, 2, 3, 1))
        out = t.sum() + s.sum(dim=(1, 2))
        return out + n.mean() if self.shared else out


@pytest.mark.parametrize("fmt", FORMATS)
def test_fold_next_linear_folds_across_flatten_transpose_and_permute(fmt):
    torch.manual_seed(0)
    model = Tokens().eval()
    report, run, ops = optimized_graph(fmt, model, torch.randn(2, 3, 8, 8), target="cpu", cost_model="analytic")
    assert outcomes(report, "fold_next_linear") == {"applied": 2}, str(report)
    assert not any("batch_norm" in op or op == "BatchNormalization" for op in ops), ops
    assert not [s for s in report.sites if s.status == "left"], str(report)
    assert fresh_error(run, model, (3, 3, 8, 8)) < 1e-5


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_batchnorm_with_another_reader_is_not_folded_and_says_why(fmt):
    torch.manual_seed(0)
    model = Tokens(shared=True).eval()
    report, run, ops = optimized_graph(fmt, model, torch.randn(2, 3, 8, 8), target="cpu", cost_model="analytic")
    assert outcomes(report, "fold_next_linear") == {"applied": 1}, str(report)
    left = [s for s in report.sites if s.status == "left"]
    assert len(left) == 1 and "2 readers" in left[0].reason, str(report)
    assert fresh_error(run, model, (3, 3, 8, 8)) < 1e-5


def test_plan_is_exact_and_only_removes_work():
    c, n = 6, 5
    gen = torch.Generator().manual_seed(1)
    affine = Affine(rand(c, gen=gen) + 1.5, rand(c, gen=gen))
    linear = Linear(ConvSpec(rand(n, c, 1, 1, gen=gen), rand(n, gen=gen)))
    layers = [affine, Flatten(2, 3), Permute((0, 2, 1)), linear]
    plan = plan_fold_next_linear(layers, (2, c, 4, 4), torch.float64, RewriteOptions(target="cpu").resolved("cpu"))
    assert isinstance(plan, Plan) and plan.removes_work and len(plan.after) == 3
    x = rand(2, c, 4, 4, gen=gen)
    assert max_rel(run_chain(plan.after, x), run_chain(layers, x)) < 1e-12
