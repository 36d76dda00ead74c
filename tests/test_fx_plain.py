"""Submodules optimized one by one (the model's top level cannot be exported) are installed as
plain GraphModules: no per-call pytree flattening or export input-check hooks, same outputs."""
import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from passes.fx.plain import plain_graph_module
from rewrite import optimize
from tests.helpers import batchnorm, max_rel


class Block(nn.Module):
    def __init__(self, c=8, seed=0):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), batchnorm(c, seed=seed)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class DataDependentTop(nn.Module):
    """The loop's condition reads a value, so torch.export cannot capture the top level."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList(Block(seed=i) for i in range(3))

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x) if x.sum() > -1e9 else x
        return x


def test_installed_submodules_are_plain_and_correct():
    model, x = DataDependentTop().eval(), torch.randn(2, 3, 16, 16)
    fast = optimize(model, x, target="cpu", cost_model="analytic")
    assert [s.status for s in fast.rewrite_report.sites if s.kind == "fold"] == ["applied"] * 3
    for block in fast.blocks:
        assert isinstance(block, fx.GraphModule) and not block._forward_pre_hooks
        assert "pytree" not in type(block.graph._codegen).__name__.lower()
    fresh = torch.randn(5, 3, 16, 16)        # another batch size, as the capture's dynamic batch allows
    with torch.no_grad():
        assert max_rel(fast(fresh).double(), model.double()(fresh.double())) < 1e-5


def test_only_plain_calling_conventions_are_unwrapped():
    class Pair(nn.Module):
        def forward(self, x, scale=None):
            return x * 2, [x + 1]             # a list inside the output: the pytree wrapping stays

    x = torch.randn(2, 3)
    single = torch.export.export(nn.ReLU(), (x,)).module()
    plain = plain_graph_module(single)
    assert plain is not single and torch.equal(plain(x), single(x)) and not plain._forward_pre_hooks
    nested = torch.export.export(Pair(), (x,)).module()
    assert plain_graph_module(nested) is nested


def test_model_with_installed_submodules_saves_and_loads(tmp_path):
    """Export's shape guard and tracer class do not pickle; the installed GraphModules carry neither."""
    model, x = DataDependentTop().eval(), torch.randn(2, 3, 16, 16)
    fast = optimize(model, x, target="cpu", cost_model="analytic")
    torch.save(fast, tmp_path / "fast.pt")
    loaded = torch.load(tmp_path / "fast.pt", weights_only=False)
    assert type(loaded) is DataDependentTop and all(isinstance(b, fx.GraphModule) for b in loaded.blocks)
    with torch.no_grad():
        assert torch.equal(loaded(x), fast(x))
        with pytest.raises(ValueError, match=r"submodule blocks.0 was captured for inputs of shape \(batch, 8, 16, 16\)"):
            loaded.blocks[0](torch.randn(1, 8, 16, 20))
