"""Activations go back in place after the passes (passes/fx/inplace.py): only where their input is
a fresh buffer nothing else reads, the values stay the same, and autograd still works."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from rewrite import optimize
from tests.helpers import batchnorm, count_ops, max_rel


class Mixed(nn.Module):
    """relu of a conv read only by it (in place), silu of a BN'd conv whose output the residual
    also reads (stays), relu of a view of the input (stays); relu of a parameter depends on no
    input, so capture folds it into a constant (passes/fx/constants.py)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = batchnorm(8, seed=3)
        self.scale = nn.Parameter(torch.randn(1, 8, 1, 1))

    def forward(self, x):
        y = F.relu(self.conv1(x))                    # fresh, one reader: in place
        z = self.bn(self.conv2(y))
        z = F.silu(z) + z                            # z has two readers: out of place
        flat = F.relu(x.reshape(x.shape[0], -1))     # a view of the input: out of place
        return z * F.relu(self.scale), flat          # a parameter: folded into a constant


def test_activations_on_private_fresh_buffers_go_in_place_and_nothing_else():
    model = Mixed().eval()
    x = torch.randn(2, 4, 10, 10)
    opt = optimize(model, x, target="cpu", cost_model="analytic")
    assert count_ops(opt, "relu_") == 1 and count_ops(opt, "relu") == 1, opt.code
    assert "_constant_relu" in opt.code, opt.code
    assert count_ops(opt, "silu") == 1 and count_ops(opt, "silu_") == 0, opt.code
    fresh = torch.randn(3, 4, 10, 10)
    with torch.no_grad():
        want = model.double()(fresh.double())
        model.float()
        got = opt(fresh)
    assert all(max_rel(g.double(), w) < 1e-5 for g, w in zip(got, want))
    before = fresh.clone()
    with torch.no_grad():
        opt(fresh)
    assert torch.equal(fresh, before)


def test_an_in_place_model_still_differentiates():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), batchnorm(8), nn.SiLU(),
                          nn.Conv2d(8, 8, 1), nn.ReLU6()).eval()
    opt = optimize(model, torch.randn(2, 3, 8, 8), target="cpu", cost_model="analytic")
    assert count_ops(opt, "silu_") == 1 and count_ops(opt, "hardtanh_") == 1, opt.code
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    (grad_opt,) = torch.autograd.grad(opt(x).square().sum(), x)
    (grad_ref,) = torch.autograd.grad(model(x).square().sum(), x)
    assert max_rel(grad_opt, grad_ref) < 1e-4
