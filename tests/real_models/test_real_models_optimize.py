"""Answers: What does optimize() do to each real torchvision / timm model: folds, fuses, float64 agreement?
Takes about 7 min (57 tests) on the 2-core development machine shared with other jobs
(2026-12-07). Was tests/test_real_models_e2e.py.

Real torchvision and timm models (random init, calibrated BatchNorm) through optimize() on the
default GPU target, small resolution, CPU, float32: what a real model must get.

* every BatchNorm that can be folded is folded (a fold site is applied, or declined because the
  BatchNorm's input has other readers or the weight is shared);
* every depthwise conv has a fuse site: applied, or declined with the reason naming what stands
  in the way;
* the whole model matches float64 within 1e-4 on a fresh input at another batch size;
* a model with no site says why in its report.
"""
import pytest
import torch

import models_under_test as zoo
from kernels import FusedSepConv2d
from rewrite import optimize
from passes.fx.graph import op_name
from tests.helpers import max_rel

# "no rule matches": a "left" row, an affine no matcher took up (what reads it is checked below)
LEGITIMATE_FOLD_DECLINES = ("readers", "the pad stays so the conv can fuse", "no rule matches")
# The depthwise → pointwise sites each model must fuse at least (others decline with a reason).
MIN_FUSED = {"tv/mobilenet_v2": 17, "tv/mobilenet_v3_large": 15, "tv/efficientnet_b0": 16, "tv/mnasnet1_0": 16,
             "tv/shufflenet_v2_x1_0": 19, "timm/efficientnet_lite0": 16, "timm/mobilenetv3_large_100": 15,
             "timm/fbnetc_100": 12, "timm/lcnet_100": 13, "timm/legacy_xception": 30, "timm/ghostnet_100": 1}


@pytest.fixture(scope="module", params=zoo.real_names())
def optimized(request):
    name = request.param
    model = zoo.build_real(name)
    example = zoo.real_example_input(name, batch=2, seed=1)
    return name, model, optimize(model, example, target="h100", force_fuse=True)  # every site the kernel can run


def test_whole_model_matches_float64_at_another_batch_size(optimized):
    name, model, opt = optimized
    fresh = zoo.real_example_input(name, batch=3, seed=7)
    with torch.no_grad():
        ref = model.double()(fresh.double())
        model.float()
        assert max_rel(opt(fresh).double(), ref) <= 1e-4, str(opt.rewrite_report)


def test_every_foldable_batchnorm_is_folded(optimized):
    """No fold declined without a legitimate reason, and every BatchNorm left reads either
    something other than a conv, or a conv whose output has other readers."""
    name, model, opt = optimized
    folds = [s for s in opt.rewrite_report.sites if s.kind == "fold"]
    unexplained = [s for s in folds if s.status != "applied" and not any(w in s.reason for w in LEGITIMATE_FOLD_DECLINES)]
    assert not unexplained, unexplained
    for gm in (m for m in opt.modules() if isinstance(m, torch.fx.GraphModule)):
        for node in gm.graph.nodes:
            if node.op == "call_function" and op_name(node.target) == "batch_norm":
                source = node.args[0]
                is_conv = source.op == "call_module" or op_name(source.target) == "conv2d"
                assert not is_conv or len(source.users) > 1, f"{name}: {node.name} after {source.name} not folded"


def test_every_depthwise_conv_is_fused_or_says_why(optimized):
    name, model, opt = optimized
    report = opt.rewrite_report
    fuse = [s for s in report.sites if s.kind == "fuse"]
    assert all(s.status == "applied" or s.reason for s in fuse)
    fused = sum(isinstance(m, FusedSepConv2d) for m in opt.modules())
    assert fused == sum(s.status == "applied" for s in fuse)
    assert fused >= MIN_FUSED.get(name, 0), str(report)
    if name.endswith("convnext_tiny"):
        assert all("layer_norm" in s.reason for s in fuse)
    if not report.sites:
        assert any("no candidate site" in n for n in report.notes)
