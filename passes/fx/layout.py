"""Keep a fused model channels_last (NHWC) end to end.

The fused kernel reads and writes NHWC. A conv whose weight is channels_last makes a
channels_last output from any input (cuDNN and oneDNN both follow the weight's format), and
elementwise ops, pooling and adds keep the format of their inputs, so converting every conv
weight once turns the whole activation path NHWC: the first conv transposes the model's input,
and no fused site then pays a layout copy. Only conv weights are touched: other 4-d parameters
may be read with .view(), which a permuted layout would break.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from rewrite.report import Report
from rewrite.rules import registered


def wants_channels_last(setting: bool | None, report: Report) -> bool:
    """True for channels_last=True, or for None (auto) when a site of a rule that wants NHWC
    activations (Rule.channels_last: fuse) was applied."""
    if setting is not None:
        return setting
    rules = registered()
    return any(s.status == "applied" and s.kind in rules and rules[s.kind].channels_last for s in report.sites)


def conv_weights(root: nn.Module) -> list:
    """The 4-d weights of every conv: nn.Conv2d modules, and aten.conv2d calls in exported graphs."""
    from .graph import fetch_attr

    weights = {id(m.weight): m.weight for m in root.modules() if isinstance(m, nn.Conv2d)}
    for gm in (m for m in root.modules() if isinstance(m, fx.GraphModule)):
        for node in gm.graph.nodes:
            if node.op == "call_function" and node.target is torch.ops.aten.conv2d.default and \
                    isinstance(node.args[1], fx.Node) and node.args[1].op == "get_attr":
                weight = fetch_attr(gm, node.args[1].target)
                weights[id(weight)] = weight
    return [w for w in weights.values() if isinstance(w, torch.Tensor) and w.dim() == 4]


def keep_channels_last(root: nn.Module, example_inputs: tuple) -> str:
    """Lay out every 2-d conv weight channels_last (values unchanged) and run the model once; if
    it no longer runs (code that .view()s an activation, say), put the weights back. Returns the
    note for the report."""
    changed = [w for w in conv_weights(root) if not w.is_contiguous(memory_format=torch.channels_last)]
    for weight in changed:
        weight.data = weight.data.contiguous(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            root(*example_inputs)
    except Exception as exc:  # noqa: BLE001 - any failure means: keep the original layout
        for weight in changed:
            weight.data = weight.data.contiguous()
        return f"channels_last: not kept, the model fails to run with it ({type(exc).__name__}: {exc})"
    return (f"channels_last: {len(changed)} conv weight(s) laid out NHWC (1x1 and depthwise weights "
            "already are), so activations stay NHWC between layers and fused sites read their input "
            "without a copy")
