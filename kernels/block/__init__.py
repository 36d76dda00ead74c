"""The whole-block family: an inverted-residual or Fused-MBConv block in one fused op, the expanded
tensor never written to device memory.

    inverted residual   y = act2(pw(act_after_gate(act1(dw(act0(ex(x)))) [* gate]))) [+ residual]
                        (MobileNetV2/V3, EfficientNet, MNASNet, MobileNetV4's IB)
    Fused-MBConv        y = act2(pw(act1(conv_kxk(x)))) [+ residual]
                        (EfficientNetV2's early stages, MobileNetV4's FusedIB)

(biases omitted: each conv has its own, BatchNorm folded into them beforehand).

The files divide the work as kernels/sep_conv/ does:

    checks.py               the operands each path accepts and the blocks' geometry
    reference.py            the torch references (the expansion, then the dw + pw family's reference)
    inverted_residual.py    the inverted-residual kernel and its launchers (one launch; three with an SE)
    fused_mbconv.py         the Fused-MBConv kernel and its launcher
    ops.py                  torch.ops.dwsep.inverted_residual, inverted_residual_se and fused_mbconv
    modules.py              FusedInvertedResidual2d, FusedInvertedResidualSE2d and FusedMBConv2d

A block's tail is a separable conv, so this family builds on kernels/sep_conv/ and never the other
way: reference.py composes the separable conv's references, and the SE form of
inverted_residual.py runs sep_conv/sep_conv_se.py's excitation kernel. What both families use is
at kernels/' top level. Only inverted_residual.py and fused_mbconv.py import Triton; this file
imports nothing.
"""
