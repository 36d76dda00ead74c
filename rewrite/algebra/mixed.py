"""Merge a mixed depthwise conv (a split of the channels, one depthwise conv per part, a concat)
into one depthwise conv whose kernel embeds each part's kernel in zeros.

With x's channels split into consecutive parts S_1, …, S_k covering them in order, and dw_i a
depthwise conv (multiplier r, stride s, dilation 1) with kernel kh_i x kw_i and padding
(top_i, bottom_i, left_i, right_i):

    cat(dw_1(x[:, S_1]), …, dw_k(x[:, S_k])) = dw(x)

where dw has the same stride and multiplier, groups = Σ |S_i|, and

    top = max_i top_i,  left = max_i left_i
    K_h = max_i (top − top_i + kh_i),  K_w = max_i (left − left_i + kw_i)
    W[c_i + j, 0, top − top_i + u, left − left_i + v] = W_i[j, 0, u, v]   (zero elsewhere)
    b = cat(b_1, …, b_k)   (a branch without bias contributes zeros)
    bottom = K_h + e_h − top,  right = K_w + e_w − left

with c_i the offset of branch i's output channels and e_h = top_i + bottom_i − kh_i the same for
every branch (likewise e_w): output row y of branch i reads padded rows y·s − top_i + u, u < kh_i,
and dw reads y·s − top + u' with u' = u + (top − top_i) at the same weight, the other taps zero,
so both read the same pixels, and where x ends both read zeros. The output height
⌊(H + e_h)/s⌋ + 1 is then the same for dw as for every branch at ANY input height; branches
whose e_h differ agree on the output height only at some heights, and are declined. Under equal
extents bottom = bottom_i + (K_h − (top − top_i) − kh_i) ≥ bottom_i ≥ 0 for every i, so the merged
padding is never negative. Exact: every output is the same sum of the same products (the zero taps
add exact zeros). Computed in float64 and cast back to the weights' dtype.
"""
from __future__ import annotations

import torch

from ..ir import ConvSpec


def check_merge_mixed_dw(convs) -> str | None:
    """None when the branch convs merge into one depthwise conv, else why not."""
    if len(convs) < 2:
        return "fewer than two branches"
    for i, conv in enumerate(convs, 1):
        if not conv.is_depthwise:
            return f"branch {i} ({conv.describe()}) is not a depthwise conv"
        if conv.dilation != (1, 1):
            return f"branch {i} is dilated {conv.dilation}"
    first = convs[0]
    for i, conv in enumerate(convs[1:], 2):
        if conv.stride != first.stride:
            return f"the branches' strides differ ({first.stride} in branch 1, {conv.stride} in branch {i})"
        if conv.multiplier != first.multiplier:
            return (f"the branches' channel multipliers differ ({first.multiplier} in branch 1, "
                    f"{conv.multiplier} in branch {i})")
        if conv.weight.dtype != first.weight.dtype:
            return f"the branches' weight dtypes differ ({first.weight.dtype}, {conv.weight.dtype})"
    extents = {_extents(conv) for conv in convs}
    if len(extents) > 1:
        return ("the branches' output sizes agree only at some input sizes (padding minus kernel per axis "
                f"differs: {sorted(extents)})")
    return None


def _extents(conv: ConvSpec) -> tuple[int, int]:
    """(e_h, e_w) = (top + bottom − kh, left + right − kw): the output side is ⌊(H + e)/s⌋ + 1."""
    t, b, l, r = conv.padding
    kh, kw = conv.kernel_size
    return t + b - kh, l + r - kw


def merge_mixed_dw(convs) -> ConvSpec:
    """The one depthwise conv computing cat(conv_i(x[:, S_i])) (see the module docstring)."""
    reason = check_merge_mixed_dw(convs)
    if reason:
        raise ValueError(reason)
    top = max(conv.padding[0] for conv in convs)
    left = max(conv.padding[2] for conv in convs)
    kh = max(top - conv.padding[0] + conv.kernel_size[0] for conv in convs)
    kw = max(left - conv.padding[2] + conv.kernel_size[1] for conv in convs)
    e_h, e_w = _extents(convs[0])
    weight = torch.zeros(sum(conv.out_channels for conv in convs), 1, kh, kw, dtype=torch.float64)
    start = 0
    for conv in convs:
        (h, w), rows, cols = conv.kernel_size, top - conv.padding[0], left - conv.padding[2]
        weight[start:start + conv.out_channels, :, rows:rows + h, cols:cols + w] = conv.weight.double()
        start += conv.out_channels
    bias = None
    if any(conv.bias is not None for conv in convs):
        bias = torch.cat([conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels,
                                                                                       dtype=torch.float64)
                          for conv in convs])
    dtype = convs[0].weight.dtype
    return ConvSpec(weight.to(dtype), None if bias is None else bias.to(dtype), convs[0].stride,
                    (top, kh + e_h - top, left, kw + e_w - left), (1, 1), sum(conv.in_channels for conv in convs))
