"""What the fused modules of both families keep alike: their parameters and the squeeze-excitation's.

    _param            a tensor as a frozen nn.Parameter (requires_grad=False: the fused ops are inference only)
    _tap_major        a depthwise weight [K, 1, kh, kw] laid out taps outermost (the kernels read a tap's
                      K weights as one vector); _is_tap_major tells whether it already is
    check_flag        allow_tf32 must be a bool
    SqueezeExciteParameters
                      the mixin that checks and stores a squeeze-excitation's weights and names

Used by kernels/sep_conv/modules.py (FusedSepConv2d, FusedSepConvSE2d) and kernels/block/modules.py
(FusedInvertedResidual2d, FusedInvertedResidualSE2d, FusedMBConv2d). Imports no Triton.
"""
from typing import Optional

import torch
from torch import nn

from kernels.activations import SE_GATES, activation
from kernels.checks import check_se_weights


def _param(t: Optional[torch.Tensor]) -> Optional[nn.Parameter]:
    return None if t is None else nn.Parameter(t.detach(), requires_grad=False)


def _tap_major(w: torch.Tensor) -> torch.Tensor:
    """w [K, 1, kh, kw] with the same values, strides (1, kh*kw*K, kw*K, K): taps outermost."""
    return w.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)


def _is_tap_major(w: torch.Tensor) -> bool:
    return w.permute(1, 2, 3, 0).is_contiguous()


def check_flag(allow_tf32) -> None:
    if not isinstance(allow_tf32, bool):
        raise TypeError(f"allow_tf32 must be a bool, got {type(allow_tf32).__name__}")


class SqueezeExciteParameters:
    """The squeeze-excitation's weights and names on a fused module (FusedSepConvSE2d in
    kernels/sep_conv/modules.py, FusedInvertedResidualSE2d in kernels/block/modules.py): checked once, stored as 2-d
    parameters [S, K] / [K, S] over the module's K depthwise channels."""

    def _init_se(self, se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias, channels: int,
                 se_act: str, se_gate: str, act_after_gate: str) -> None:
        squeeze = check_se_weights(se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias, channels)
        if se_gate not in SE_GATES:
            raise ValueError(f"se_gate={se_gate!r} is not supported; expected one of {tuple(SE_GATES)}")
        activation(se_act)  # a ValueError names the valid choices
        activation(act_after_gate)
        self.se_reduce_weight = _param(se_reduce_weight.reshape(squeeze, channels))
        self.se_reduce_bias = _param(se_reduce_bias)
        self.se_expand_weight = _param(se_expand_weight.reshape(channels, squeeze))
        self.se_expand_bias = _param(se_expand_bias)
        self.se_act, self.se_gate, self.act_after_gate = se_act, se_gate, act_after_gate

    def se_weights(self) -> tuple:
        return self.se_reduce_weight, self.se_reduce_bias, self.se_expand_weight, self.se_expand_bias
