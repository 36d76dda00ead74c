"""merge_mixed_dw, through both front ends: a split of the channels → one depthwise conv per part →
concat (MixNet's mixed convs) becomes one depthwise conv, the split and the concat gone from the
returned graph; declined with its reason where a part is read elsewhere, a branch is not
depthwise, the parts do not cover the channels in order, or the strides differ; the algebra
against torch on random inputs, TF "same" (asymmetric) padding included."""
import itertools
import math
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rewrite.algebra import check_merge_mixed_dw, merge_mixed_dw
from rewrite.ir import ConvSpec, MixedConv
from rewrite.options import RewriteOptions
from rewrite.rules import Decline, Plan
from rewrite.rules.merge_mixed_dw import plan_merge_mixed_dw
from tests.helpers import max_rel, rand
from tests.rules.formats import FORMATS, fresh_error, optimized, optimized_graph, outcomes

SIDE = 12
OPTIONS = dict(passes=("fold", "merge_mixed_dw"), target="h100", cost_model="analytic")   # launch-bound: merged


def tf_same(k: int, stride: int, side: int = SIDE) -> tuple:
    """TF "same" padding (top, bottom, left, right) of a k x k conv at `stride` on a side² input:
    the total ⌈side/s⌉·s − s + k − side, the odd row or column at the bottom / right."""
    total = max((math.ceil(side / stride) - 1) * stride + k - side, 0)
    return (total // 2, total - total // 2) * 2


class MixedDw(nn.Module):
    """pw(relu(cat(dw_k(x_i)))) with x_i the parts of x (torch.split, or x[:, a:b] slices); TF
    "same" padding as a zero pad before each conv (as timm's Conv2dSame does at stride 2)."""

    def __init__(self, sizes, kernels, stride=1, tf=False, bias=False, slicing=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.sizes, self.slicing = list(sizes), slicing
        self.pads = [tf_same(k, stride) if tf else None for k in kernels]
        self.dws = nn.ModuleList(nn.Conv2d(c, c, k, stride, padding=0 if tf else k // 2, groups=c, bias=bias)
                                 for c, k in zip(sizes, kernels))
        self.pw = nn.Conv2d(sum(sizes), 8, 1)

    def parts(self, x):
        if not self.slicing:
            return torch.split(x, self.sizes, 1)
        bounds = [0, *itertools.accumulate(self.sizes)]
        return [x[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def forward(self, x):
        outs = []
        for conv, pad, part in zip(self.dws, self.pads, self.parts(x)):
            if pad is not None:
                t, b, l, r = pad
                part = F.pad(part, (l, r, t, b))
            outs.append(conv(part))
        return self.pw(torch.relu(torch.cat(outs, 1)))


CASES = {
    "equal 3/5/7": dict(sizes=(8, 8, 8), kernels=(3, 5, 7)),
    "unequal 3/5/7/9 bias": dict(sizes=(4, 4, 8, 8), kernels=(3, 5, 7, 9), bias=True),
    "unequal 3/5/7 stride 2": dict(sizes=(4, 8, 12), kernels=(3, 5, 7), stride=2, bias=True),
    "tf same 3/5/7/9 stride 2": dict(sizes=(6, 6, 6, 6), kernels=(3, 5, 7, 9), stride=2, tf=True),
    "tf same unequal stride 2 bias": dict(sizes=(4, 12), kernels=(3, 5), stride=2, tf=True, bias=True),
    "slices 3/5": dict(sizes=(8, 16), kernels=(3, 5), slicing=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_merge_mixed_dw_merges_the_branches_into_one_conv(fmt, case):
    model = MixedDw(**CASES[case]).eval()
    channels = sum(model.sizes)
    report, run, ops = optimized_graph(fmt, model, torch.randn(2, channels, SIDE, SIDE), **OPTIONS)
    assert outcomes(report, "merge_mixed_dw") == {"applied": 1}
    [site] = [s for s in report.sites if s.kind == "merge_mixed_dw"]
    kernel = max(CASES[case]["kernels"])
    assert site.after.startswith(f"dw{kernel}x{kernel} {channels}->{channels}")
    assert fresh_error(run, model, (3, channels, SIDE, SIDE)) < 1e-5
    left = {"split_with_sizes", "slice", "cat", "pad", "Split", "Slice", "Concat", "Pad"} & set(ops)
    assert not left, ops
    convs = ops["Conv"] if fmt == "onnx" else ops["Conv2d"] + ops["PaddedConv2d"] + ops["conv2d"]
    assert convs == 2                              # the merged dw and the pw


class PartReadElsewhere(MixedDw):
    def forward(self, x):
        parts = torch.split(x, self.sizes, 1)
        y = self.pw(torch.relu(torch.cat([conv(p) for conv, p in zip(self.dws, parts)], 1)))
        return y + parts[0].mean(1, keepdim=True)


class NotDepthwise(MixedDw):
    def __init__(self):
        super().__init__((4, 4), (3, 5))
        self.dws[1] = nn.Conv2d(4, 4, 5, padding=2)


class OutOfOrder(MixedDw):
    def forward(self, x):
        a, b = torch.split(x, self.sizes, 1)
        return self.pw(torch.cat([self.dws[0](b), self.dws[1](a)], 1))


class StridesDiffer(MixedDw):
    """dw3x3 stride 2 (pad 1) and dw7x7 stride 1 (no pad): both 6x6 on a 12x12 input."""

    def __init__(self):
        super().__init__((4, 4), (3, 7))
        self.dws = nn.ModuleList([nn.Conv2d(4, 4, 3, 2, padding=1, groups=4), nn.Conv2d(4, 4, 7, groups=4)])


class SplitAlsoReadElsewhere(MixedDw):
    """The concat reads the first part of a split and a slice of the same channels as its second
    part, whose reader is elsewhere: the split cannot go with the site."""

    def __init__(self):
        super().__init__((4, 4), (3, 5))

    def forward(self, x):
        a, b = torch.split(x, self.sizes, 1)
        y = self.pw(torch.cat([self.dws[0](a), self.dws[1](x[:, 4:8])], 1))
        return y + b.mean(1, keepdim=True)


DECLINES = {
    "part read elsewhere": (lambda: PartReadElsewhere((4, 4), (3, 5)),
                            r"the part \[0:4\] \((split_with_sizes|Split)\) of branch 1 also feeds"),
    "not depthwise": (NotDepthwise, re.escape("branch 2 (conv5x5 4->4) is not a depthwise conv")),
    "out of order": (lambda: OutOfOrder((4, 4), (3, 5)), "the parts .* do not cover the 8 channels of their input in order"),
    "strides differ": (StridesDiffer, re.escape("strides differ ((2, 2) in branch 1, (1, 1) in branch 2)")),
    "split read elsewhere": (SplitAlsoReadElsewhere, r"the part \[4:8\] of the (split_with_sizes|Split) is also read"),
}


@pytest.mark.parametrize("case", sorted(DECLINES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_merge_mixed_dw_declines_with_its_reason(fmt, case):
    build, reason = DECLINES[case]
    model = build().eval()
    report, run = optimized(fmt, model, torch.randn(2, 8, SIDE, SIDE), **OPTIONS)
    [site] = [s for s in report.sites if s.kind == "merge_mixed_dw"]
    assert site.status == "declined" and re.search(reason, site.reason), site.reason
    assert fresh_error(run, model, (3, 8, SIDE, SIDE)) < 1e-5


# -- the algebra ---------------------------------------------------------------------------------

def _branch(c, k, stride, padding, bias, r=1, gen=None):
    kh, kw = k if isinstance(k, tuple) else (k, k)
    return ConvSpec(rand(c * r, 1, kh, kw, gen=gen), rand(c * r, gen=gen) if bias else None, (stride, stride),
                    padding, groups=c)


@pytest.mark.parametrize("stride", (1, 2))
@pytest.mark.parametrize("side", (11, 16))
@pytest.mark.parametrize("tf", (False, True))
def test_merged_conv_computes_the_concat_of_the_branches(stride, side, tf):
    """Square and non-square kernels, multiplier 2, a branch without bias, against torch in float64."""
    g = torch.Generator().manual_seed(side + stride)
    kernels = [3, 5, (3, 7), 9]
    convs = []
    for i, k in enumerate(kernels):
        kh, kw = k if isinstance(k, tuple) else (k, k)
        pad = (tf_same(kh, stride, side)[:2] + tf_same(kw, stride, side)[2:]) if tf else \
            (kh // 2, kh // 2, kw // 2, kw // 2)
        convs.append(_branch(2 + i, k, stride, pad, bias=i != 1, r=2, gen=g))
    x = rand(2, sum(c.in_channels for c in convs), side, side, gen=g)
    merged = merge_mixed_dw(convs)
    assert merged.kernel_size == (9, 9) and merged.is_depthwise and merged.multiplier == 2
    assert merged.padding[0] == max(c.padding[0] for c in convs)
    assert max_rel(merged.apply(x), MixedConv(tuple(convs)).apply(x)) < 1e-12
    assert merged.has_symmetric_padding == (not tf or stride == 1 or side % 2 == 1)   # TF pads odd totals after


def test_tf_same_stride_2_offsets_each_kernel_by_its_top_padding():
    """3x3 (0, 1) and 7x7 (2, 3) at stride 2: the 3x3 kernel sits 2 rows and columns down and right
    in the 7x7, the merged padding is (2, 3, 2, 3)."""
    g = torch.Generator().manual_seed(0)
    small, large = _branch(2, 3, 2, tf_same(3, 2), True, gen=g), _branch(2, 7, 2, tf_same(7, 2), True, gen=g)
    merged = merge_mixed_dw([small, large])
    assert merged.padding == (2, 3, 2, 3) and merged.kernel_size == (7, 7)
    assert torch.equal(merged.weight[:2, :, 2:5, 2:5], small.weight) and merged.weight[:2, :, :2].abs().sum() == 0


@pytest.mark.parametrize("convs, reason", [
    ([ConvSpec(torch.ones(2, 1, 3, 3), padding=(1,) * 4, groups=2), ConvSpec(torch.ones(2, 2, 3, 3), padding=(1,) * 4)],
     "branch 2 (conv3x3 2->2) is not a depthwise conv"),
    ([ConvSpec(torch.ones(2, 1, 3, 3), padding=(1,) * 4, groups=2),
      ConvSpec(torch.ones(2, 1, 3, 3), stride=(2, 2), padding=(1,) * 4, groups=2)], "strides differ"),
    ([ConvSpec(torch.ones(2, 1, 3, 3), padding=(2,) * 4, dilation=(2, 2), groups=2),
      ConvSpec(torch.ones(2, 1, 3, 3), padding=(1,) * 4, groups=2)], "dilated"),
    ([ConvSpec(torch.ones(2, 1, 3, 3), padding=(0, 1, 0, 1), stride=(2, 2), groups=2),
      ConvSpec(torch.ones(2, 1, 5, 5), padding=(2,) * 4, stride=(2, 2), groups=2)], "output sizes agree only"),
])
def test_check_names_what_stops_the_merge(convs, reason):
    assert reason in check_merge_mixed_dw(convs)


def test_plan_follows_the_cost_model():
    """Small maps: k launches and the concat cost more than the merged conv (applied); a large map
    with a large kernel on the CPU roofline: the zero taps cost more (declined, with the prediction)."""
    opts = RewriteOptions(target="cpu", cost_model="analytic").resolved("cpu")
    g = torch.Generator().manual_seed(0)
    small = MixedConv((_branch(8, 3, 1, (1,) * 4, False, gen=g), _branch(8, 5, 1, (2,) * 4, False, gen=g)))
    plan = plan_merge_mixed_dw(small.to(torch.float32), (1, 16, 8, 8), torch.float32, opts)
    assert isinstance(plan, Plan) and plan.predicted_speedup > 1 and not plan.removes_work
    large = MixedConv((_branch(64, 3, 1, (1,) * 4, False, gen=g), _branch(64, 9, 1, (4,) * 4, False, gen=g)))
    decline = plan_merge_mixed_dw(large.to(torch.float32), (8, 128, 112, 112), torch.float32, opts)
    assert isinstance(decline, Decline) and "cost model predicts the merged 9x9" in decline.reason
