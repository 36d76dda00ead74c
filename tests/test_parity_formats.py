"""optimize() and rewrite-onnx do the same on the same model (issue 33).

Every zoo model with a PyTorch definition goes through optimize() and, exported with the
TorchScript exporter (opset 17), through optimize_onnx (what rewrite-onnx runs), both with the
analytic cost model, so that no timing can make a difference. Here: models_under_test's own
models and its reparameterizable timm models (REPARAM_MODELS) on the CPU target, the checks off
(structure is compared, not numbers; tests/real_models/test_real_models_parity.py checks the numbers and runs
the same comparisons, through the same helpers, on REAL_MODELS at its h100 target, the fuse pass
on). The two results must

  * run the same convs (counted in each result's graph: FX conv2d calls and Conv2d modules,
    ONNX Conv nodes), and leave the same BatchNorms and the same LayerNorms with an affine;
  * make the same structural rewrites: the sites of merge, merge_mixed_dw, factorize, reverse and
    the fuse rules, with the same statuses (folds differ by design: the exporter folds an eval
    BatchNorm into the conv before it, so ONNX has fewer left to fold);
  * say why of every BatchNorm or LayerNorm affine they leave: a report row that did not apply
    (declined, rolled back, or "left" with its reason) for each one (nothing left silently).

Where a difference is right, EXPECTED names the model, what differs and why, and the test holds
the difference to exactly that.
"""
from collections import Counter

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

import models_under_test as zoo
from rewrite import optimize, optimize_onnx
from tests.helpers import to_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx_graphsurgeon")

STRUCTURAL = ("merge", "merge_mixed_dw", "factorize", "reverse", "fuse", "fuse_block", "fuse_mbconv")
NORM_KINDS = ("fold", "fold_linear", "fold_norm", "fold_next_linear", "fold_concat", "merge")   # rows that can account for a norm
SIDE = 32
SIDES = {"xception": 64, "timm/legacy_xception": 64}       # two unpadded stem convs, then six strided stages

# model → {what: (FX, ONNX)}, each with its reason; nothing else may differ
EXPECTED: dict = {}

# mobilevit_xs is not exportable as a whole: optimize() rewrites its submodules, the ONNX path
# the whole graph, so their counts are not of the same thing
MODELS = [n for n in zoo.names() if n != "mobilevit_xs"] + zoo.reparam_names()


def _build(name: str) -> nn.Module:
    return zoo.get(name) if name in zoo.names() else zoo.build_real(name)


def fx_counts(model: nn.Module) -> Counter:
    """Convs, BatchNorms and LayerNorms with an affine an optimize() result runs."""
    counts = Counter()
    for module in model.modules():
        if isinstance(module, fx.GraphModule):
            for node in module.graph.nodes:
                if node.op != "call_function":
                    continue
                target = str(node.target)
                counts["conv"] += "conv2d" in target or "convolution" in target
                counts["batchnorm"] += "batch_norm" in target
                counts["layernorm_affine"] += "layer_norm" in target and any(
                    a is not None for a in list(node.args[2:4]) + [node.kwargs.get("weight"), node.kwargs.get("bias")])
        elif isinstance(module, nn.Conv2d):
            counts["conv"] += 1
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            counts["batchnorm"] += 1
        elif isinstance(module, nn.LayerNorm):
            counts["layernorm_affine"] += module.elementwise_affine
    return counts


def onnx_counts(proto) -> Counter:
    """Conv, BatchNormalization and LayerNormalization nodes with a Scale other than 1 or a B other than 0."""
    import numpy as np
    from onnx import numpy_helper
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    counts = Counter()
    for node in proto.graph.node:
        counts["conv"] += node.op_type == "Conv"
        counts["batchnorm"] += node.op_type == "BatchNormalization"
        if node.op_type == "LayerNormalization":
            scale = values.get(node.input[1]) if len(node.input) > 1 else None
            bias = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            counts["layernorm_affine"] += scale is None or not np.all(scale == 1) or \
                (bias is not None and np.any(bias != 0))
    return counts


def accounted(report) -> int:
    """Rows that may stand for a norm still in the result: not applied, of a kind that removes norms."""
    return sum(s.status != "applied" for s in report.sites if s.kind in NORM_KINDS)


@pytest.fixture(scope="module", params=MODELS)
def both(request):
    name = request.param
    model = _build(name)
    side = SIDES.get(name, SIDE)
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(3))
    options = dict(target="cpu", cost_model="analytic", check=False)
    fx_model = optimize(model, x, **options)
    proto, onnx_report = optimize_onnx(to_onnx(model, x), inputs={"x": x.numpy()}, **options)
    return dict(name=name, fx=(fx_counts(fx_model), fx_model.rewrite_report),
                onnx=(onnx_counts(proto), onnx_report))


def _expected(name: str, what: str, fx_value, onnx_value) -> bool:
    known = EXPECTED.get(name, {}).get(what)
    return known is not None and known[:2] == (fx_value, onnx_value)


def same_counts(name: str, fx_side: tuple, onnx_side: tuple) -> None:
    """The same convs, BatchNorms and LayerNorm affines in both results, except where EXPECTED says."""
    (fx_count, fx_report), (onnx_count, onnx_report) = fx_side, onnx_side
    for what in ("conv", "batchnorm", "layernorm_affine"):
        if fx_count[what] != onnx_count[what]:
            assert _expected(name, what, fx_count[what], onnx_count[what]), \
                f"{name}: {what} FX {fx_count[what]} ONNX {onnx_count[what]}\nFX:\n{fx_report}\n\nONNX:\n{onnx_report}"


def every_norm_has_a_row(name: str, count: Counter, report) -> None:
    left = count["batchnorm"] + count["layernorm_affine"]
    assert accounted(report) >= left, f"{name}: {left} norms left, rows:\n{report}"


def test_same_convs_and_norms_left(both):
    same_counts(both["name"], both["fx"], both["onnx"])


def test_same_structural_rewrites(both):
    name, (_, fx_report), (_, onnx_report) = both["name"], both["fx"], both["onnx"]
    fx_sites = Counter((s.kind, s.status) for s in fx_report.sites if s.kind in STRUCTURAL)
    onnx_sites = Counter((s.kind, s.status) for s in onnx_report.sites if s.kind in STRUCTURAL)
    if fx_sites != onnx_sites:
        assert _expected(name, "structural", dict(fx_sites), dict(onnx_sites)), \
            f"{name}\nFX:\n{fx_report}\n\nONNX:\n{onnx_report}"


def test_every_norm_left_has_a_row(both):
    for count, report in (both["fx"], both["onnx"]):
        every_norm_has_a_row(both["name"], count, report)


def test_the_counts_see_convs_batchnorms_and_layernorm_affines():
    """The comparison's own counters, on a graph with one of each (so a zero above means none)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.ln = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.LayerNorm(8)
            self.plain = nn.LayerNorm(8, elementwise_affine=False)

        def forward(self, x):
            y = torch.relu(self.bn(torch.relu(self.conv(x)))).permute(0, 2, 3, 1)
            return self.plain(self.ln(y))

    model = Net().eval()
    with torch.no_grad():
        model.ln.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 8, 8)
    want = Counter(conv=1, batchnorm=1, layernorm_affine=1)
    assert fx_counts(torch.export.export(model, (x,), strict=False).module()) == want
    assert fx_counts(model) == want
    assert onnx_counts(to_onnx(model, x)) == want
