"""The dw + pw family: a depthwise conv and the 1x1 conv after it in one fused op.

    y = act2(pw(act_after_gate(act1(dw(x) + b1) [* gate])) + b2) [+ residual]

MobileNetV1's separable convs, the dw + pw tail of every inverted residual, and, with a
squeeze-excitation between the two convs, the blocks of EfficientNet-B0's first stage, ReXNet,
MobileNetV3's small stages. The files divide the work as the op's path runs:

    checks.py           the operands each path accepts and the output's geometry (one message per refusal)
    reference.py        the torch references: ground truth in float64, the CPU fallback otherwise
    fused_sep_conv.py   the Triton kernel and its launcher: dw result kept in registers, one launch
    sep_conv_se.py      the squeeze-excitation form in three launches (dw stage, excitation MLP, gated GEMM)
    tiles.py            the launcher's tile, chosen by regime from the problem's shape (no timing)
    tuning.py           opt-in autotuning over that table, kept on disk (DWSEP_AUTOTUNE=1)
    ops.py              torch.ops.dwsep.fused_sep_conv and sep_conv_se: custom ops with fake implementations
    modules.py          FusedSepConv2d and FusedSepConvSE2d, the nn.Modules the graph passes build

What both families use (activations, the shared checks, the Triton device functions of
kernels/tiles.py, module parameters, the sm_90 static build) is at kernels/' top level. Only
fused_sep_conv.py, sep_conv_se.py and tuning.py's timing import Triton; this file imports nothing.
"""
