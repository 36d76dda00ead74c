"""Layers shared by several families of the zoo.

Every block is built from ``nn.Conv2d`` / ``nn.BatchNorm2d`` / activation *modules* (no functional
activations), so that ``torch.fx.symbolic_trace`` sees each conv, norm and activation as its own
``call_module`` node for the rewrite passes to match.
"""

from collections import OrderedDict

import torch
from torch import nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never going below 90 % of it.

    The rounding rule of the TensorFlow MobileNet reference code, used by MobileNetV2/V3 for the
    squeeze-excite widths.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """``Conv2d`` (no bias, "same" padding for odd kernels) -> ``BatchNorm2d`` -> optional activation.

    Submodules are named ``conv``, ``bn`` and ``act``; ``act`` is absent when ``act`` is ``None``
    (the linear bottleneck projections of MobileNetV2 and its descendants).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ):
        layers = OrderedDict(
            conv=nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                groups=groups, bias=False,
            ),
            bn=nn.BatchNorm2d(out_channels),
        )
        if act is not None:
            layers["act"] = act()
        super().__init__(layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018): global average pool -> 1x1 conv reduce -> activation
    -> 1x1 conv expand -> gate, and the input is rescaled channel-wise by the gate.

    MobileNetV3 uses ReLU / hard-sigmoid, EfficientNet SiLU / sigmoid.
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        act: type[nn.Module] = nn.ReLU,
        gate: type[nn.Module] = nn.Hardsigmoid,
    ):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class StochasticDepth(nn.Module):
    """Per-sample stochastic depth (Huang et al., 2016) on a residual branch.

    In training, each sample's branch is dropped with probability ``p`` and the survivors are scaled
    by ``1 / (1 - p)``; in eval it is the identity and leaves no node in an FX trace.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep) / keep


class ResidualBlock(nn.Module):
    """``block(x)``, plus ``x`` when ``use_residual`` (set by the subclasses when the stride is 1
    and the width unchanged), through stochastic depth when ``drop_path > 0``.

    Base of the inverted-residual / MBConv and Fused-MBConv blocks.
    """

    def __init__(self, block: nn.Sequential, *, use_residual: bool, drop_path: float = 0.0):
        super().__init__()
        self.block = block
        self.use_residual = use_residual
        self.drop_path = StochasticDepth(drop_path) if use_residual and drop_path > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if not self.use_residual:
            return out
        if self.drop_path is not None:
            out = self.drop_path(out)
        return x + out


class InvertedResidual(ResidualBlock):
    """Inverted residual / MBConv block (MobileNetV2, Sandler et al., 2018; MobileNetV3; EfficientNet).

    ``block`` is: 1x1 expand conv-BN-act (omitted when ``expanded == in_channels``, i.e. expansion
    ratio 1) -> kxk depthwise conv-BN-act -> optional squeeze-excite -> 1x1 linear projection conv-BN.
    The input is added back when ``stride == 1`` and ``in_channels == out_channels``, through
    stochastic depth when ``drop_path > 0``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        expanded: int,
        stride: int = 1,
        kernel_size: int = 3,
        act: type[nn.Module] = nn.ReLU6,
        se_channels: int | None = None,
        se_act: type[nn.Module] = nn.ReLU,
        se_gate: type[nn.Module] = nn.Hardsigmoid,
        drop_path: float = 0.0,
    ):
        layers = OrderedDict()
        if expanded != in_channels:
            layers["expand"] = ConvBNAct(in_channels, expanded, 1, act=act)
        layers["dw"] = ConvBNAct(expanded, expanded, kernel_size, stride, groups=expanded, act=act)
        if se_channels is not None:
            layers["se"] = SqueezeExcite(expanded, se_channels, se_act, se_gate)
        layers["project"] = ConvBNAct(expanded, out_channels, 1, act=None)
        super().__init__(
            nn.Sequential(layers),
            use_residual=stride == 1 and in_channels == out_channels,
            drop_path=drop_path,
        )
