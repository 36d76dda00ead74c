"""A transposed conv whose kernel equals its stride as a 1x1 conv followed by depth_to_space.

With kernel = stride = s, no padding, no output padding, dilation 1 and one group, every input
pixel writes its own s×s output block and no two blocks overlap:

    y[o, s·i + a, s·j + b] = bias[o] + Σ_c x[c, i, j] · W[c, o, a, b]        (a, b < s)

which is the 1x1 conv z = conv1x1(x; W', b') over C_out·s² channels ordered (o, a, b),

    W'[o·s² + a·s + b, c] = W[c, o, a, b],     b'[o·s² + a·s + b] = bias[o],

followed by y = depth_to_space(z, s) in the "CRD" order (torch's pixel_shuffle):
y[o, s·i + a, s·j + b] = z[o·s² + a·s + b, i, j]. Exact: each output is the same sum of the same
products; only where it is computed changes. Both forms do the same multiply-adds; which is faster
is the runtime's business (eager PyTorch on a CPU runs conv_transpose2d through a slow path), so
the rule that uses this is timed.
"""
from __future__ import annotations

from ..ir import ConvSpec, DepthToSpace, TransposedConv


def check_deconv_as_shuffle(deconv: TransposedConv) -> str | None:
    """None when the transposed conv is a 1x1 conv followed by depth_to_space, else why not."""
    (kh, kw), (sh, sw) = deconv.kernel_size, deconv.stride
    if (kh, kw) != (sh, sw):
        return f"kernel {kh}x{kw} is not its stride {sh}x{sw}: the output blocks overlap"
    if sh != sw:
        return f"stride {sh}x{sw} is not square (depth_to_space takes one block size)"
    if sh < 2:
        return "stride 1: already a 1x1 conv"
    if any(deconv.padding) or any(deconv.output_padding):
        return f"padding {deconv.padding} / output padding {deconv.output_padding} crop or extend the output"
    if deconv.dilation != (1, 1):
        return f"dilation {deconv.dilation}"
    if deconv.groups != 1:
        return f"grouped (groups={deconv.groups})"
    return None


def deconv_as_shuffle(deconv: TransposedConv) -> tuple[ConvSpec, DepthToSpace]:
    """(conv1x1, depth_to_space) computing the transposed conv (see the module docstring)."""
    reason = check_deconv_as_shuffle(deconv)
    if reason:
        raise ValueError(reason)
    s = deconv.stride[0]
    cin, cout = deconv.in_channels, deconv.out_channels
    weight = deconv.weight.permute(1, 2, 3, 0).reshape(cout * s * s, cin, 1, 1).contiguous()
    bias = None if deconv.bias is None else deconv.bias.repeat_interleave(s * s)
    return ConvSpec(weight, bias), DepthToSpace(s)
