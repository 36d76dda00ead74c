"""fold_linear, through both front ends: a layer scale into the Linear before it over channels-last
activations (EdgeNeXt: · γ[C] before the permute; ConvNeXt / torchvision: · γ[C, 1, 1] after it) and
over tokens [B, N, C]; LeViT's LinearNorm, whose reshape_as reads the linear's shape; and the plan's
algebra against run_chain."""
import pytest
import torch
import torch.nn as nn

from rewrite.ir import Affine, ConvSpec, Flatten, Linear, Permute, run_chain
from rewrite.options import RewriteOptions
from rewrite.rules import Plan
from rewrite.rules.fold_linear import plan_fold_linear
from tests.helpers import max_rel, rand
from tests.rules.formats import FORMATS, fresh_error, optimized, outcomes


class ScaledLinears(nn.Module):
    """x + permute(fc(x_nhwc) · γ1) ; x + permute(fc(x_nhwc)) · γ2[C,1,1] ; tokens: t + fc(t) · γ3."""

    def __init__(self, c=8):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.g1 = nn.Parameter(torch.rand(c) + 0.5)
        self.g2 = nn.Parameter(torch.rand(c, 1, 1) + 0.5)
        self.g3 = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        x = x + (self.fc1(x.permute(0, 2, 3, 1)) * self.g1).permute(0, 3, 1, 2)
        x = x + self.fc2(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) * self.g2
        t = x.flatten(2).transpose(1, 2)
        return t + self.fc3(t) * self.g3


@pytest.mark.parametrize("fmt", FORMATS)
def test_fold_linear_folds_layer_scales_into_the_linear_before_them(fmt):
    torch.manual_seed(0)
    model = ScaledLinears().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 6, 6), passes=("fold_linear",), target="cpu",
                            cost_model="analytic")
    assert outcomes(report, "fold_linear") == {"applied": 3}
    assert fresh_error(run, model, (3, 8, 6, 6)) < 1e-5


class LinearNorm(nn.Module):
    """timm LeViT's LinearNorm: Linear over tokens, BatchNorm1d over the flattened tokens, back to
    the linear's shape with reshape_as (which reads the linear's output for its shape)."""

    def __init__(self, c_in, c_out, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.linear, self.bn = nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out)
        with torch.no_grad():
            self.bn.weight.copy_(torch.rand(c_out, generator=g) + 0.5)
            self.bn.bias.copy_(torch.randn(c_out, generator=g))
            self.bn.running_mean.copy_(torch.randn(c_out, generator=g))
            self.bn.running_var.copy_(torch.rand(c_out, generator=g) + 0.5)

    def forward(self, x):
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class LeViTMlp(nn.Module):
    """t + LinearNorm(hardswish(LinearNorm(t))), widening 8 → 16 → 8 (so no shape reader can be
    served by the block's input)."""

    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = LinearNorm(8, 16, 1), LinearNorm(16, 8, 2)

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)
        return t + self.ln2(nn.functional.hardswish(self.ln1(t)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_fold_linear_folds_levit_batchnorms_read_back_with_reshape_as(fmt):
    torch.manual_seed(0)
    model = LeViTMlp().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, 4, 4), passes=("fold_linear",), target="cpu",
                            cost_model="analytic")
    assert outcomes(report, "fold_linear") == {"applied": 2}
    assert fresh_error(run, model, (3, 8, 4, 4)) < 1e-5


def test_fold_linear_plan_is_exact():
    opts = RewriteOptions(target="cpu").resolved("cpu")
    g = torch.Generator().manual_seed(0)
    linear = Linear(ConvSpec(rand(6, 4, 1, 1, gen=g), rand(6, gen=g)))
    affine = Affine(rand(6, gen=g), rand(6, gen=g))
    cases = [([linear, Permute((0, 3, 1, 2)), affine], rand(2, 5, 7, 4, gen=g)),
             ([linear, Affine(affine.scale, affine.shift, -1)], rand(2, 5, 7, 4, gen=g)),
             ([linear, Flatten(0, 1), affine], rand(2, 9, 4, gen=g))]
    for chain, x in cases:
        plan = plan_fold_linear(chain, (2, 4, 35, 1), torch.float32, opts)
        assert isinstance(plan, Plan) and plan.removes_work and len(plan.after) == len(chain) - 1
        assert max_rel(run_chain(plan.after, x), run_chain(chain, x)) < 1e-12
