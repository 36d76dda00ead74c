"""The fuzzer's judges: output errors, the acceptance rule, untouched inputs, deliberate corruption.

Acceptance (FX): both the original fp32 model and the optimized one are compared with a float64
copy of the original on the same fresh input; the optimized model passes when its relative error
    max|y - ref| / max|ref|  ≤  max(1e-4, 4 · the original's own error, 10 · factorize budget).
ONNX: onnxruntime has no float64 Conv, so the optimized graph is compared with the original graph
in onnxruntime, and the noise floor is the torch model's own fp32 error on that input (doubled:
both sides round).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

FLOOR = 1e-4          # fp32 whole-model tolerance, as rewrite.numerics has it
BASELINE_FACTOR = 4.0


def rel_error(y, ref) -> float:
    """max|y - ref| / max|ref| in float64; inf for a shape mismatch or a non-finite y the ref lacks."""
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).double()
    ref = torch.as_tensor(np.asarray(ref) if not isinstance(ref, torch.Tensor) else ref).double()
    if y.shape != ref.shape:
        return math.inf
    if not torch.isfinite(y).all() and torch.isfinite(ref).all():
        return math.inf
    if ref.numel() == 0:
        return 0.0
    diff, scale = (y - ref).abs().max().item(), ref.abs().max().item()
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def max_rel_error(outs, refs) -> float:
    """The worst rel_error over matching outputs (inf when the output counts differ)."""
    outs, refs = as_list(outs), as_list(refs)
    if len(outs) != len(refs):
        return math.inf
    return max((rel_error(o, r) for o, r in zip(outs, refs)), default=0.0)


def as_list(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def tolerance(baseline: float, budget: float | None, factor: float = BASELINE_FACTOR) -> float:
    """What an optimized model may miss its reference by, given the original's own error."""
    tol = max(FLOOR, factor * baseline)
    return max(tol, 10 * budget) if budget else tol


def snapshot_module(model: torch.nn.Module) -> dict:
    """Everything optimize() must leave alone: each state tensor's bytes and layout, the identity
    of each parameter, buffer and submodule, and the training flags."""
    return {
        "state": {k: (tuple(v.shape), v.stride(), v.dtype, v.detach().cpu().clone().contiguous().numpy().tobytes())
                  for k, v in model.state_dict(keep_vars=True).items()},
        "params": {k: id(p) for k, p in model.named_parameters(remove_duplicate=False)},
        "buffers": {k: id(b) for k, b in model.named_buffers(remove_duplicate=False)},
        "modules": {k: (id(m), m.training, type(m)) for k, m in model.named_modules(remove_duplicate=False)},
    }


def snapshot_diff(before: dict, after: dict) -> str:
    """'' when the two snapshots agree, else what changed."""
    for part in ("params", "buffers", "modules"):
        if before[part] != after[part]:
            keys = {k for k in before[part].keys() | after[part].keys() if before[part].get(k) != after[part].get(k)}
            return f"{part} changed: {sorted(keys)[:5]}"
    if before["state"].keys() != after["state"].keys():
        return f"state_dict keys changed: {sorted(before['state'].keys() ^ after['state'].keys())[:5]}"
    changed = [k for k in before["state"] if before["state"][k] != after["state"][k]]
    return f"state_dict tensors changed (values or layout): {changed[:5]}" if changed else ""


def corrupt_module(model: torch.nn.Module, rel: float = 1e-2) -> str:
    """Scale the largest 4-d weight of `model` by (1 + rel), in place; returns its name."""
    name, p = max(((n, t) for n, t in model.state_dict(keep_vars=True).items()
                   if t.is_floating_point() and t.dim() == 4), key=lambda item: item[1].numel())
    with torch.no_grad():
        p.mul_(1 + rel)
    return name


def corrupt_onnx(model, rel: float = 1e-2):
    """A copy of ModelProto `model` with its largest float initializer scaled by (1 + rel)."""
    from onnx import numpy_helper

    model = copy.deepcopy(model)
    inits = [t for t in model.graph.initializer if numpy_helper.to_array(t).dtype == np.float32]
    target = max(inits, key=lambda t: numpy_helper.to_array(t).size)
    array = numpy_helper.to_array(target) * np.float32(1 + rel)
    target.CopyFrom(numpy_helper.from_array(array, target.name))
    return model
