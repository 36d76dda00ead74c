"""merge_mixed_dw on MixNet (timm, random init with non-trivial BatchNorm statistics, eval), both
formats, on the GPU target with the fuse pass forced: the mixed depthwise convs merged, their
grouped pointwise convs (split → 1x1 per part → cat) declined as not depthwise, the fuse pass
after them; the same sites in FX and ONNX; the result on a fresh input against float64."""
import copy
from collections import Counter

import pytest
import torch

from rewrite import optimize
from tests.benchmarks.survey_folds import build
from tests.helpers import max_rel, to_onnx

pytest.importorskip("timm")

OPTIONS = dict(target="h100", force_fuse=True)
SHAPE = (2, 3, 64, 64)
NOT_DEPTHWISE = "is not a depthwise conv"
SPLIT_AFTER = "the depthwise output is split"

# model: sites per kind:status, the fuse declines per reason (a fragment of it), merged sites fused
EXPECTED = {
    # 13 mixed dw convs merged (3x3 to 11x11); no merged conv fuses: 11 meet a grouped pw (split
    # after the dw, as do two unmerged dw convs), the stride-2 TF "same" 7x7 pads (2, 3, 2, 3), one is
    # 11x11; the one fused site is the first block's plain dw3x3
    "tf_mixnet_s": ({"merge_mixed_dw:applied": 13, "merge_mixed_dw:declined": 21, "fuse:applied": 1,
                     "fuse:declined": 15},
                    {SPLIT_AFTER: 13, "asymmetric depthwise padding (2, 3, 2, 3)": 1,
                     "depthwise kernel 11x11 is larger than 7x7": 1}, 0),
    # 16 merged (symmetric padding): blocks.3.0's 7x7 s2 is fused with its SE and pw, two 9x9 sites
    # with a plain pw after them are declined for their kernel, the others meet a grouped pw
    "mixnet_m": ({"merge_mixed_dw:applied": 16, "merge_mixed_dw:declined": 25, "fuse:applied": 3,
                  "fuse:declined": 16},
                 {SPLIT_AFTER: 14, "depthwise kernel 9x9 is larger than 7x7": 2}, 1),
}


def _run(name: str, fmt: str):
    model = build(name)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    fresh = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    if fmt == "fx":
        out = optimize(copy.deepcopy(model), x, **OPTIONS)
        report = out.rewrite_report
        with torch.no_grad():
            y = out(fresh)
    else:
        pytest.importorskip("onnx_graphsurgeon")
        import onnxruntime as ort

        from rewrite import optimize_onnx
        proto, report = optimize_onnx(to_onnx(model, x), inputs={"x": x.numpy()}, **OPTIONS)
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        y = torch.from_numpy(session.run(None, {"x": fresh.numpy()})[0])
    with torch.no_grad():
        error = max_rel(y.double(), copy.deepcopy(model).double()(fresh.double()))
    return report, error


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def both(request):
    return request.param, {fmt: _run(request.param, fmt) for fmt in ("fx", "onnx")}


def _sites(report, kinds=("merge_mixed_dw", "fuse")) -> Counter:
    return Counter(f"{s.kind}:{s.status}" for s in report.sites if s.kind in kinds)


def test_mixed_convs_merged_then_fused_where_the_kernel_allows(both):
    name, results = both
    want_sites, want_fuse_declines, want_fused = EXPECTED[name]
    for fmt, (report, error) in results.items():
        assert _sites(report) == want_sites, (fmt, _sites(report))
        merge_declines = [s for s in report.sites if s.kind == "merge_mixed_dw" and s.status == "declined"]
        assert all(NOT_DEPTHWISE in s.reason and "(pw " in s.reason for s in merge_declines), fmt
        fuse_declines = [s.reason for s in report.sites if s.kind == "fuse" and s.status == "declined"]
        assert {k: sum(k in r for r in fuse_declines) for k in want_fuse_declines} == want_fuse_declines, fmt
        merged, fused = ({s.name for s in report.sites if s.kind == kind and s.status == "applied"}
                         for kind in ("merge_mixed_dw", "fuse"))
        assert len(merged & fused) == want_fused, fmt
        assert error < 1e-4, (fmt, error)


def test_same_sites_in_fx_and_onnx(both):
    """The same mixed convs (by what they are), merged or declined alike, and the same fuse sites."""
    _, results = both
    fx, onnx = (Counter((s.kind, s.status, s.before) for s in results[fmt][0].sites
                        if s.kind in ("merge_mixed_dw", "fuse")) for fmt in ("fx", "onnx"))
    assert fx == onnx
