"""The folds on real models, both formats (timm, random init with non-trivial norm affines and
BatchNorm statistics, eval): the sites each fold kind applies and declines, the LayerNorm affines
and BatchNorms left in the returned graph, the error on a fresh input. The fastest models only;
tests/benchmarks/survey_folds.py runs the whole table of issue 21."""
import copy

import pytest
import torch

from rewrite import optimize
from tests.benchmarks.survey_folds import FOLDS, build, fx_counts, onnx_counts, sites
from tests.helpers import max_rel, to_onnx

pytest.importorskip("timm")

# model: sites per kind:status (the same in both formats, or per format where the ONNX exporter
# already folded the BatchNorms that follow a conv directly), and what is left
EXPECTED = {
    "convnext_atto": ({"fold:applied": 12, "fold_norm:applied": 16, "fold_norm:declined": 1},
                      {"layernorm_affine": 1, "batchnorm": 0}),
    # GRN's constant adds (the eps after its mean; in ONNX its gamma/beta too) have no rule: "left" rows
    "convnextv2_atto": ({"fx": {"fold_norm:applied": 16, "fold_norm:declined": 1, "fold:left": 12},
                         "onnx": {"fold_norm:applied": 16, "fold_norm:declined": 1, "fold:left": 24}},
                        {"layernorm_affine": 1, "batchnorm": 0}),
    "tf_mixnet_s": ({"fx": {"fold:applied": 28, "fold_concat:applied": 34},      # BN after each mixed conv's cat
                     "onnx": {"fold:applied": 13, "fold_concat:applied": 34}},
                    {"batchnorm": 0}),
}


@pytest.mark.parametrize("fmt", ("fx", "onnx"))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_folds_on_real_models(name, fmt):
    model = build(name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fresh = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    options = dict(passes=FOLDS, target="cpu", cost_model="analytic")
    if fmt == "fx":
        out = optimize(copy.deepcopy(model), x, **options)
        report, left = out.rewrite_report, fx_counts(out)
        with torch.no_grad():
            y = out(fresh)
    else:
        pytest.importorskip("onnx_graphsurgeon")
        import onnxruntime as ort

        from rewrite import optimize_onnx
        proto, report = optimize_onnx(to_onnx(model, x), **options)
        left = onnx_counts(proto)
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        y = torch.from_numpy(session.run(None, {"x": fresh.numpy()})[0])
    want_sites, want_left = EXPECTED[name]
    assert sites(report) == want_sites.get(fmt, want_sites)
    assert {k: left.get(k, 0) for k in want_left} == want_left
    declined = [s for s in report.sites if s.status == "declined"]
    assert all("stem" in s.name and "reads it alone" in s.reason for s in declined)
    with torch.no_grad():
        assert max_rel(y.double(), copy.deepcopy(model).double()(fresh.double())) < 1e-4


@pytest.mark.parametrize("fmt", ("fx", "onnx"))
def test_convnextv2_fuse_declines_name_the_layernorm(fmt):
    """ConvNeXt-V2's dw → pw site: the LayerNorm between them blocks the fusion (the GRN sits later,
    between the two pointwise linears), and the decline says so in the graph's own terms."""
    model = build("convnextv2_atto")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    options = dict(target="h100", force_fuse=True, check=False)
    if fmt == "fx":
        report = optimize(model, x, **options).rewrite_report
    else:
        pytest.importorskip("onnx_graphsurgeon")
        from rewrite import optimize_onnx
        _, report = optimize_onnx(to_onnx(model, x), **options)
    fuse = [s for s in report.sites if s.kind == "fuse"]
    label = "layer_norm" if fmt == "fx" else "LayerNormalization"
    assert len(fuse) == 12 and all(s.status == "declined" for s in fuse)
    assert {s.reason for s in fuse} == {f"{label} between the depthwise and pointwise convs blocks the fusion"}
