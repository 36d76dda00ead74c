"""Answers: Does optimize() keep every zoo model's function and apply exactly the expected rewrites?
Takes about 4 min (45 tests) on the 2-core development machine shared with other jobs
(2026-12-07). Was tests/test_e2e_zoo.py.

optimize() on every zoo model, CPU, float32: outputs within 1e-4 relative on fresh inputs,
every BatchNorm that follows a conv folded, the rewrites each model gets (a table, every model),
MobileViT captured whole by torch.export. This file runs the GPU target with force_fuse (every
site the kernel can run); the default path is tests/test_default_path.py."""
from collections import Counter

import pytest
import torch
import torch.nn as nn

import models_under_test as zoo
from rewrite import optimize
from tests.helpers import count_ops, max_rel


@pytest.fixture(scope="module", params=zoo.names())
def optimized(request):
    name = request.param
    model = zoo.get(name)
    example = zoo.example_input(name, batch=2, small=True, seed=1)
    return name, model, optimize(model, example, target="h100", force_fuse=True)  # every site the kernel can run


def test_outputs_match_on_fresh_inputs(optimized):
    name, model, opt = optimized
    report = opt.rewrite_report
    assert report.model_rel_error is not None and report.model_rel_error <= 1e-4, str(report)
    fresh = zoo.example_input(name, batch=3, small=True, seed=7)
    with torch.no_grad():
        ref = model.double()(fresh.double())
        model.float()
        assert max_rel(opt(fresh).double(), ref) <= 1e-4


def test_batchnorms_after_convs_are_folded(optimized):
    name, model, opt = optimized
    folds = [s for s in opt.rewrite_report.sites if s.kind == "fold" and s.before.endswith("affine")]
    assert all(s.status == "applied" for s in folds), [s for s in folds if s.status != "applied"]
    remaining = count_ops(opt, "batch_norm")
    original = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert remaining == original - len(folds)
    if name != "convnext_tiny":  # ConvNeXt normalizes with LayerNorm: no BatchNorm (its affines are fold_norm's)
        assert folds and remaining == 0


# Applied rewrites per model, by kind, on this fixture's path (target="h100", force_fuse=True: the
# analytic cost model decides, so the counts are deterministic). Every model has a row.
EXPECTED_APPLIED = {
    "mobilenet_v1": {"fold": 27, "fuse": 13},
    "mobilenet_v2": {"fold": 52, "fuse": 17, "reverse": 2},
    "mobilenet_v3_large": {"fold": 46, "fuse": 15},
    "mobilenet_v3_small": {"fold": 34, "fuse": 11, "reverse": 1},
    "efficientnet_b0": {"fold": 49, "fuse": 16, "reverse": 2},
    "efficientnet_v2_s": {"fold": 110, "fuse": 30},
    "xception": {"fold": 40, "fuse": 34},
    "convnext_tiny": {"fold": 6, "fold_linear": 18, "fold_norm": 19},   # layer scales, LayerNorm affines
    "resnet18": {"fold": 20},
    "resnet50": {"fold": 53},
    "mobilevit_xs": {"fold": 32, "fold_norm": 18, "fuse": 7, "reverse": 1},   # the transformer's LayerNorms
}


def test_every_zoo_model_has_an_expected_outcome():
    assert set(EXPECTED_APPLIED) == set(zoo.names())


def test_model_specific_outcomes(optimized):
    name, model, opt = optimized
    report = opt.rewrite_report
    applied = dict(Counter(s.kind for s in report.applied))
    assert applied == EXPECTED_APPLIED[name], f"{name}: applied {applied}\n{report}"
    assert not [s for s in report.sites if s.status == "rolled_back"], str(report)
    if name == "xception":  # linear dw→pw separable convs: the fused kernel beats the dense collapse
        reverse = [s for s in report.sites if s.kind == "reverse"]
        assert any(s.predicted_speedup is not None for s in reverse)   # linear pairs get a cost decision
    if name == "mobilevit_xs":
        assert not any("could not be captured" in n for n in report.notes)   # export takes it whole
    if name.startswith("mobilenet_v2"):
        reasons = {s.reason for s in report.sites if s.kind == "reverse"}
        assert any("nonlinearity (relu6)" in r for r in reasons)


def test_separable_sites_fuse_and_stay_channels_last(optimized):
    """On the default GPU target every dw→pw site of the depthwise-separable models fuses, the
    squeeze-excitation ones (MobileNetV3, EfficientNet) included, and the fused modules' inputs
    arrive channels_last."""
    from kernels import FusedSepConv2d, FusedSepConvSE2d

    name, model, opt = optimized
    expected_se = {"mobilenet_v3_large": 8, "mobilenet_v3_small": 9, "efficientnet_b0": 16, "efficientnet_v2_s": 30}
    fused = [m for m in opt.modules() if isinstance(m, FusedSepConv2d)]
    assert sum(isinstance(m, FusedSepConvSE2d) for m in fused) == expected_se.get(name, 0)
    if name.startswith(("mobilenet", "efficientnet", "xception")):
        assert fused and all(s.status == "applied" for s in opt.rewrite_report.sites if s.kind == "fuse")
    layouts = []
    hooks = [m.register_forward_pre_hook(lambda m, a: layouts.append(a[0].is_contiguous(memory_format=torch.channels_last)))
             for m in fused]
    with torch.no_grad():
        opt(zoo.example_input(name, batch=2, small=True, seed=2))
    for h in hooks:
        h.remove()
    assert all(layouts) and len(layouts) >= len(fused)
