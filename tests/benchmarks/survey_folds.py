"""Which BatchNorms and LayerNorm affines are left after the folds, per model and format (a script,
not a test; tests/rules/test_fold_models.py checks the fastest models in CI).

    PYTHONPATH=. python -m tests.benchmarks.survey_folds [--models convnext_atto,...] [--size 64] [--out f.json]

For each model (timm, random init, eval; torchvision convnext_tiny as "tv_convnext_tiny"):
optimize(model, x) and optimize_onnx(export) with the fold passes only, then counts in the
returned graph: BatchNorms (FX aten.batch_norm, ONNX BatchNormalization) and LayerNorms that still
carry an affine (weight/bias given, resp. Scale not all ones or a nonzero B), the sites per kind
and status, and the relative error on a fresh input against the original in float64.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections import Counter

import numpy as np
import torch

from rewrite import optimize, optimize_onnx
from rewrite.rules import RULES
from tests.helpers import max_rel, to_onnx

MODELS = ("convnext_atto", "convnextv2_atto", "edgenext_x_small", "inception_next_atto", "levit_128s",
          "tf_mixnet_s", "mixnet_m", "ghostnetv2_100", "rexnet_100", "tv_convnext_tiny")
FOLDS = tuple(k for k in RULES if k.startswith("fold"))


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith("tv_"):
        import torchvision
        model = getattr(torchvision.models, name[3:])(weights=None)
    else:
        import timm
        model = timm.create_model(name, pretrained=False)
    _calibrate(model)
    return model.eval()


def _calibrate(model) -> None:
    """Non-trivial BatchNorm statistics and norm affines (random init leaves γ = 1, β = 0)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm, torch.nn.GroupNorm)) \
                    and getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def fx_counts(module) -> Counter:
    import torch.fx as fx

    from passes.fx.graph import op_name
    counts = Counter()
    for gm in module.modules():
        if not isinstance(gm, fx.GraphModule):
            continue
        for node in gm.graph.nodes:
            if node.op == "call_function" and op_name(node.target) == "batch_norm":
                counts["batchnorm"] += 1
            if node.op == "call_function" and op_name(node.target) == "layer_norm":
                counts["layernorm"] += 1
                args = list(node.args) + [None] * 4
                counts["layernorm_affine"] += args[2] is not None or args[3] is not None
        for node in gm.graph.nodes:
            if node.op != "call_module":
                continue
            m = gm.get_submodule(node.target)
            counts["batchnorm"] += isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            if isinstance(m, torch.nn.LayerNorm):
                counts["layernorm"] += 1
                counts["layernorm_affine"] += m.elementwise_affine
    if not any(isinstance(gm, fx.GraphModule) for gm in module.modules()):    # returned unchanged
        return fx_counts(torch.export.export(module, (torch.randn(1, 3, 64, 64),), strict=False).module())
    return counts


def onnx_counts(proto) -> Counter:
    from onnx import numpy_helper
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in proto.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    values = {**inits, **consts}
    counts = Counter()
    for n in proto.graph.node:
        if n.op_type == "BatchNormalization":
            counts["batchnorm"] += 1
        if n.op_type == "LayerNormalization":
            counts["layernorm"] += 1
            scale = values.get(n.input[1])
            bias = values.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            plain = scale is not None and np.all(scale == 1) and (bias is None or not np.any(bias))
            counts["layernorm_affine"] += not plain
    return counts


def sites(report) -> dict:
    counts = Counter((s.kind, s.status) for s in report.sites)
    return {f"{k}:{s}": n for (k, s), n in sorted(counts.items())}


def survey(name: str, size: int, formats=("fx", "onnx")) -> dict:
    model = build(name)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    fresh = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = copy.deepcopy(model).double()(fresh.double())
    row = {"model": name, "size": size}
    if "fx" in formats:
        row["fx_before"] = dict(fx_counts(torch.export.export(model, (x,), strict=False).module()))
        t = time.perf_counter()
        out = optimize(copy.deepcopy(model), x, passes=FOLDS, target="cpu", cost_model="analytic")
        row["fx_seconds"] = round(time.perf_counter() - t, 1)
        row["fx_after"] = dict(fx_counts(out))
        row["fx_sites"] = sites(out.rewrite_report)
        with torch.no_grad():
            row["fx_error"] = max_rel(out(fresh).double(), want)
    if "onnx" in formats:
        import onnxruntime as ort
        proto = to_onnx(model, x)
        row["onnx_before"] = dict(onnx_counts(proto))
        t = time.perf_counter()
        new, report = optimize_onnx(proto, passes=FOLDS, target="cpu", cost_model="analytic")
        row["onnx_seconds"] = round(time.perf_counter() - t, 1)
        row["onnx_after"] = dict(onnx_counts(new))
        row["onnx_sites"] = sites(report)
        sess = ort.InferenceSession(new.SerializeToString(), providers=["CPUExecutionProvider"])
        row["onnx_error"] = max_rel(torch.from_numpy(sess.run(None, {"x": fresh.numpy()})[0]).double(), want)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--formats", default="fx,onnx")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        size = 224 if name.startswith("levit") else args.size     # LeViT's attention biases fix its input size
        row = survey(name, size, tuple(args.formats.split(",")))
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": " ".join(sys.argv), "commit": _commit(), "folds": FOLDS, "rows": rows}, f, indent=1)


def _commit() -> str | None:
    """The checkout's commit, with "+changes" when the tree differs from it (None outside git)."""
    import subprocess
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    main()
