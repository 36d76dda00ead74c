"""Generic clean-up before the passes, by onnxslim (an optional dependency).

Constant folding (Paddle2ONNX writes every weight as a `Constant` node, and shape arithmetic
around them), dead nodes, shape inference and onnxslim's own generic fusions (but for those into
a conv or a linear: SKIPPED_FUSIONS, the fold pass's sites) are a well-kept library's job; the
passes then do what it does not (merges, folds, reversal, fused kernels). onnxslim runs on a copy and its result keeps the original's graph inputs and outputs
(names, dtypes, dynamic dimensions), IR version and metadata. The whole-model check covers it like
any rewrite (rewrite/entry/onnx_api.py checks the cleaned model alone first and drops it when it misses
the tolerance).
"""
from __future__ import annotations

import contextlib
import io as _io

import onnx

from .io import too_big

# onnxslim's fusions into a conv or a linear are the fold passes' sites: left to them, so that each is
# checked on the spot and reported (and not done twice). FusionGemm too: at static shapes it turns a
# MatMul + Add over channels-last activations into Reshape → Gemm → Reshape, which hides the linear
# from fold_linear / fold_norm (torchvision ConvNeXt lost its 18 layer-scale folds that way)
SKIPPED_FUSIONS = ["FusionConvBN", "FusionConvAdd", "FusionConvMul", "FusionPadConv", "FusionConvTransposeBN",
                   "FusionConvTransposeAdd", "FusionConvTransposeMul", "FusionGemm", "FusionGemmMul", "FusionGemmAdd"]


def slim(model: onnx.ModelProto) -> tuple[onnx.ModelProto | None, str]:
    """(the cleaned copy, or None when not cleaned; a note saying which and why)."""
    try:
        import onnxslim
    except ImportError:
        return None, ("generic clean-up skipped: onnxslim is not installed (pip install onnxslim, or the [onnx] "
                      "extra); the passes run on the model as it is")
    if too_big(model):
        return None, "generic clean-up skipped: the model is over 2 GB"
    if {i.name for i in model.graph.input} & {t.name for t in model.graph.initializer}:
        return None, "generic clean-up skipped: initializers are also graph inputs (overridable), onnxslim would fold them"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):
            out = onnxslim.slim(copy, skip_fusion_patterns=SKIPPED_FUSIONS)
    except Exception as exc:  # noqa: BLE001 - any failure of the library: go on without it
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return None, f"generic clean-up skipped: onnxslim failed ({type(exc).__name__}: {line})"
    if not isinstance(out, onnx.ModelProto):
        return None, "generic clean-up skipped: onnxslim returned no model"
    for field in ("input", "output"):
        if [v.name for v in getattr(out.graph, field)] != [v.name for v in getattr(model.graph, field)]:
            return None, f"generic clean-up skipped: onnxslim changed the graph {field}s"
        del getattr(out.graph, field)[:]
        getattr(out.graph, field).extend(getattr(model.graph, field))
    out.ir_version = model.ir_version
    for key in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(out, key, getattr(model, key))
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    before, after = len(model.graph.node), len(out.graph.node)
    return out, (f"generic clean-up by onnxslim {getattr(onnxslim, '__version__', '')}: {before} -> {after} nodes "
                 "(constant folding, dead nodes, shape inference, its fusions other than into convs and linears)")
