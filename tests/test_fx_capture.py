"""The torch.export front end: any wrapper, in-place ops, pads, functional convs, tied weights,
data-dependent control flow, dynamic batch, state_dict, and the optimized model under
torch.export and torch.compile."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from passes.fx.capture import slow_dynamic_export_warning
from rewrite import optimize
from tests.helpers import batchnorm, count_ops, max_rel


class Functional(nn.Module):
    """Conv weights read by F.conv2d, BN inside a wrapper, an in-place activation, an explicit
    asymmetric zero pad (TF "same" at stride 2) before a conv, and a residual."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(16, 8, 3, 3) * 0.2)
        self.bn1 = batchnorm(16, seed=1)
        self.dw = nn.Conv2d(16, 16, 3, stride=2, groups=16, bias=False)
        self.bn2 = batchnorm(16, seed=2)
        self.pw = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        y = F.relu_(self.bn1(F.conv2d(x, self.w1, padding=1)))
        y = self.bn2(self.dw(F.pad(y, (0, 1, 0, 1))))
        return self.pw(F.silu(y)) + y


def reference(model, x):
    with torch.no_grad():
        return model.double()(x.double()), model.float()


def test_functional_convs_inplace_ops_and_pads_are_rewritten():
    model = Functional().eval()
    x = torch.randn(2, 8, 20, 20)
    opt = optimize(model, x, target="cpu", cost_model="analytic")
    report = opt.rewrite_report
    folds = [s for s in report.sites if s.kind == "fold"]
    assert len(folds) == 3 and all(s.status == "applied" for s in folds), str(report)
    assert any("pad(0,1,0,1)" in s.before for s in folds)
    assert count_ops(opt, "batch_norm") == 0 and count_ops(opt, "pad") == 0
    fresh = torch.randn(5, 8, 20, 20)
    ref, _ = reference(model, fresh)
    with torch.no_grad():
        assert max_rel(opt(fresh).double(), ref) < 1e-5


def test_state_dict_keeps_the_conv_keys_and_loads_back():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), batchnorm(8), nn.ReLU()).eval()
    opt = optimize(model, torch.randn(1, 3, 16, 16), target="cpu", cost_model="analytic")
    keys = set(opt.state_dict())
    assert {"0.weight", "0.bias"} <= keys and not any(k.startswith("1.") for k in keys)
    clone = optimize(model, torch.randn(1, 3, 16, 16), target="cpu", cost_model="analytic")
    clone.load_state_dict(opt.state_dict())
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(clone(x), opt(x))


def test_any_batch_size_and_export_and_compile_keep_working():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), batchnorm(8), nn.ReLU6(inplace=True),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), batchnorm(8, 3), nn.Conv2d(8, 4, 1)).eval()
    opt = optimize(model, torch.randn(1, 3, 16, 16), target="cpu", cost_model="analytic")
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = opt(x)
        assert max_rel(expected, model(x)) < 1e-5
        exported = torch.export.export(opt, (x,), strict=False).module()
        assert max_rel(exported(x), expected) < 1e-6
        compiled = torch.compile(opt, backend="aot_eager")
        assert max_rel(compiled(x), expected) < 1e-6
        # another height or width: a clear error with the remedy, not the export guard's bare assertion
        with pytest.raises(ValueError, match=r"the optimized model was captured for inputs of shape \(batch, 3, 16, "
                                             r"16\) and got input 0 of shape \(3, 3, 16, 20\).*dynamic_spatial=True"):
            opt(torch.randn(3, 3, 16, 20))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), batchnorm(8), nn.ReLU())
        self.tail = nn.Sequential(nn.Conv2d(8, 8, 1), batchnorm(8, 4))

    def forward(self, x):
        y = self.head(x)
        if y.mean() > 0:          # data-dependent control flow: export cannot capture the whole model
            y = y * 2
        return self.tail(y)


def test_data_dependent_control_flow_falls_back_to_submodules():
    model = DataDependent().eval()
    x = torch.randn(2, 3, 16, 16)
    opt = optimize(model, x, target="cpu", cost_model="analytic")
    notes = " ".join(opt.rewrite_report.notes)
    assert "<model> could not be captured by torch.export" in notes
    assert sum(s.status == "applied" and s.kind == "fold" for s in opt.rewrite_report.sites) == 2
    fresh = torch.randn(3, 3, 16, 16)
    ref, _ = reference(model, fresh)
    with torch.no_grad():
        assert max_rel(opt(fresh).double(), ref) < 1e-5


class Tied(nn.Module):
    """A conv whose weight a functional call reads again (the fuzzer's case)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = batchnorm(8)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return F.conv2d(y, self.conv.weight, self.conv.bias, padding=1)


@pytest.mark.parametrize("check", [True, False])
def test_tied_weights_fold_on_a_private_copy(check):
    """The fuzzer's case: folding the BatchNorm makes new conv weights; the functional call still
    reads the original ones, checks on or off."""
    model = Tied().eval()
    x = torch.randn(2, 8, 12, 12)
    opt = optimize(model, x, target="cpu", check=check, cost_model="analytic")
    folds = [s for s in opt.rewrite_report.sites if s.kind == "fold"]
    assert len(folds) == 1 and folds[0].status == "applied"
    assert count_ops(opt, "batch_norm") == 0
    ref, _ = reference(model, x)
    with torch.no_grad():
        assert max_rel(opt(x).double(), ref) < 1e-5


def test_input_model_is_left_untouched():
    model = Functional().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize(model, torch.randn(2, 8, 20, 20), target="h100", force_fuse=True)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_wrong_input_rank_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), batchnorm(8)).eval()
    with pytest.raises(ValueError, match="fails on the example inputs"):
        optimize(model, torch.randn(3, 16, 16, 1, 1), target="h100")


class Uncapturable(nn.Module):
    """A leaf whose forward branches on a value: neither it nor any part of it exports."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))

    def forward(self, x):
        y = F.conv2d(x, self.weight)
        return y * 2 if y.mean() > 0 else y


def test_a_model_export_cannot_capture_is_returned_unchanged_with_the_reason():
    model = Uncapturable().eval()
    x = torch.randn(2, 3, 8, 8)
    opt = optimize(model, x, target="h100")
    notes = " ".join(opt.rewrite_report.notes)
    assert "could not be captured by torch.export" in notes and "nothing rewritten" in notes
    assert not opt.rewrite_report.sites
    with torch.no_grad():
        assert torch.equal(opt(x), model(x))


def test_dynamic_spatial_survives_a_layer_of_size_one():
    """Found by the fuzzer: a 7x9 input strided by 8 is 1x2, which export would pin."""
    m = nn.Sequential(nn.Conv2d(3, 8, 1, stride=8)).eval()
    fast = optimize(m, torch.randn(1, 3, 7, 9), dynamic_spatial=True, target="h100")
    x = torch.randn(2, 3, 10, 12)
    with torch.no_grad():
        assert torch.allclose(fast(x), m(x), atol=1e-6)


class _Conv2dSame(nn.Conv2d):
    """A stride-2 conv with TF "same" padding computed from the input size, as timm's Conv2dSame."""

    def forward(self, x):
        pads = [max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0) for n in x.shape[-2:]]
        return super().forward(F.pad(x, (pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2)))


class _TFSame(nn.Module):
    """A conv after a fixed zero pad, then a conv padded TF "same" at stride 2."""

    def __init__(self):
        super().__init__()
        self.head, self.conv = nn.Conv2d(3, 8, 3), _Conv2dSame(8, 8, 3, stride=2)

    def forward(self, x):
        return self.conv(self.head(F.pad(x, (1, 1, 1, 1))))


def test_dynamic_spatial_warns_up_front_of_pads_computed_from_the_input_size():
    """torch.export's symbolic-shape work over such pads takes minutes on a real model: the
    warning names the modules and the alternative; fixed pads say nothing."""
    m = _TFSame().eval()
    said = slow_dynamic_export_warning(m, (torch.randn(2, 3, 16, 16),))
    assert said is not None and "1 module(s)" in said and "(conv:" in said and "dynamic_spatial=False" in said
    assert slow_dynamic_export_warning(m.head, (torch.randn(2, 3, 16, 16),)) is None
    with pytest.warns(UserWarning, match="compute their pad widths from the input size"):
        fast = optimize(m, torch.randn(2, 3, 16, 16), dynamic_spatial=True, target="h100")
    assert said in fast.rewrite_report.notes
    x = torch.randn(3, 3, 21, 18)
    with torch.no_grad():
        assert max_rel(fast(x).double(), m.double()(x.double())) < 1e-4


class _Cond(nn.Module):
    def forward(self, x):
        return x * 2 if x.mean() > 0 else x


class _ListNet(nn.Module):
    """Blocks in a ModuleList, iterated by a forward that export cannot capture (found by the fuzzer)."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), batchnorm(8, seed=5)), _Cond()])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_fallback_capture_descends_into_module_lists():
    m = _ListNet().eval()
    x = torch.randn(2, 3, 8, 8)
    fast = optimize(m, x, target="h100")
    assert [s.kind for s in fast.rewrite_report.applied] == ["fold"]
    fresh = torch.randn(3, 3, 8, 8) * 2 + 0.5
    with torch.no_grad():
        assert torch.allclose(fast(fresh), m(fresh), atol=1e-5)


def test_dynamic_spatial_keeps_a_model_that_pins_its_resolution_at_its_own():
    """A model whose flatten → linear fixes H×W: the enlarged export fails or specializes, so the
    capture falls back to the example's own resolution."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), batchnorm(4, seed=7), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    fast = optimize(m, x, dynamic_spatial=True, target="h100")
    fresh = torch.randn(3, 3, 8, 8) * 2 + 0.5
    with torch.no_grad():
        assert torch.allclose(fast(fresh), m(fresh), atol=1e-5)
    assert [s.kind for s in fast.rewrite_report.applied] == ["fold"]


def test_dynamic_spatial_runs_where_a_layer_becomes_size_one():
    """Found by the fuzzer: three stride-2 convs take 8² to 1²; the result must run at 8² (its
    own example), at 11² and at 3²."""
    m = nn.Sequential(*(nn.Conv2d(c, 8, 1, stride=2) for c in (4, 8, 8))).eval()
    fast = optimize(m, torch.randn(1, 4, 8, 8), dynamic_spatial=True, target="h100")
    for side in (8, 11, 3):
        x = torch.randn(3, 4, side, side)
        with torch.no_grad():
            assert torch.allclose(fast(x), m(x), atol=1e-6)


class _Tap(nn.Identity):
    pass


class _InspectsItsBlocks(nn.Module):
    """A forward that asks its blocks' types (found by the fuzzer): replacing a block by a
    captured graph changes what the model returns, so nothing is installed."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), batchnorm(8, seed=6)), _Tap(),
                                     _Cond()])

    def forward(self, x):
        taps = []
        for block in self.blocks:
            x = block(x)
            if isinstance(block, _Tap):
                taps.append(x)
        return (x, *taps)


@pytest.mark.parametrize("check", [True, False])
def test_a_forward_that_inspects_its_submodules_is_left_alone(check):
    m = _InspectsItsBlocks().eval()
    x = torch.randn(2, 3, 8, 8)
    fast = optimize(m, x, check=check, target="h100")
    fresh = torch.randn(3, 3, 8, 8) * 2 + 0.5
    with torch.no_grad():
        got, want = fast(fresh), m(fresh)
    assert len(got) == len(want) == 2 and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want))
    assert any("depends on its submodules' types" in n for n in fast.rewrite_report.notes)


class PositionalConv(nn.Module):
    """x + conv1x1(fourier grid): the grid is built from zeros(B, H, W) (EdgeNeXt's positional
    encoding), so the conv reads nothing that depends on x's values, only on its batch size."""

    def __init__(self, c=8):
        super().__init__()
        self.proj, self.pw = nn.Conv2d(4, c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        grid = (~torch.zeros(b, h, w, dtype=torch.bool)).cumsum(1, dtype=torch.float32)
        pos = torch.stack([grid.sin(), grid.cos(), grid, grid * 0.5], dim=1)
        return self.pw(x + self.proj(pos))


def test_capture_folds_what_does_not_depend_on_the_input_values():
    """Issue 33: a subgraph that reads only parameters and the batch size is evaluated once (a
    buffer expanded to the batch), as onnxslim folds it in ONNX; the result is the same at any batch."""
    from passes.fx.capture import capture_regions
    torch.manual_seed(0)
    model = PositionalConv().eval()
    (region,) = capture_regions(model, (torch.randn(2, 8, 6, 6),))
    convs = [n for n in region.module.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    assert len(convs) == 1, region.module.graph       # pw only: proj(pos) is a buffer
    assert not any("cumsum" in str(n.target) or "zeros" in str(n.target) for n in region.module.graph.nodes)
    for batch in (1, 3):
        x = torch.randn(batch, 8, 6, 6)
        with torch.no_grad():
            assert torch.allclose(region.module(x), model(x), atol=1e-6)


def test_capture_keeps_weights_read_through_views_and_what_reads_the_input():
    from passes.fx.capture import capture_regions
    from passes.fx.constants import fold_constants
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    (region,) = capture_regions(model, (torch.randn(2, 3, 8, 8),))
    assert fold_constants(region.module) == 0
    assert not any(n.op == "get_attr" and n.target.startswith("_constant") for n in region.module.graph.nodes)
