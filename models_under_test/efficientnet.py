"""EfficientNet-B0 and EfficientNetV2-S.

* EfficientNet-B0 (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
  Networks"), Table 1: MBConv blocks with SiLU and squeeze-excite (squeeze width = 1/4 of the
  block's *input* channels, sigmoid gate), 224x224.
* EfficientNetV2-S (Tan & Le, 2021, "EfficientNetV2: Smaller Models and Faster Training"),
  Table 4: three Fused-MBConv stages (no SE), then MBConv stages with SE; trained up to 300x300
  and evaluated at 384x384.

Both: 3x3 stride-2 stem conv-BN-SiLU, the stages, a 1x1 conv-BN-SiLU to 1280 channels, global
average pooling, dropout 0.2 and a fully connected classifier. Stochastic depth on the residual
branches grows linearly with block index up to 0.2 (the reference training setting); it is the
identity in eval mode.
"""

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from .blocks import ConvBNAct, InvertedResidual, ResidualBlock


class FusedMBConv(ResidualBlock):
    """Fused-MBConv (EfficientNetV2, Figure 2): the 1x1 expand and the depthwise 3x3 of MBConv are
    replaced by one dense 3x3 conv-BN-SiLU, followed by a 1x1 linear projection conv-BN. With
    expansion 1 the block is the single 3x3 conv-BN-SiLU. Residual when the shape is unchanged.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, expand_ratio: int, kernel_size: int,
        stride: int, drop_path: float,
    ):
        if expand_ratio == 1:
            layers = OrderedDict(
                fused=ConvBNAct(in_channels, out_channels, kernel_size, stride, act=nn.SiLU),
            )
        else:
            expanded = in_channels * expand_ratio
            layers = OrderedDict(
                fused=ConvBNAct(in_channels, expanded, kernel_size, stride, act=nn.SiLU),
                project=ConvBNAct(expanded, out_channels, 1, act=None),
            )
        super().__init__(
            nn.Sequential(layers),
            use_residual=stride == 1 and in_channels == out_channels,
            drop_path=drop_path,
        )


class StageConfig(NamedTuple):
    """One row of the papers' tables."""

    fused: bool
    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    layers: int


B0_STAGES = (
    StageConfig(False, 1, 3, 1, 32, 16, 1),
    StageConfig(False, 6, 3, 2, 16, 24, 2),
    StageConfig(False, 6, 5, 2, 24, 40, 2),
    StageConfig(False, 6, 3, 2, 40, 80, 3),
    StageConfig(False, 6, 5, 1, 80, 112, 3),
    StageConfig(False, 6, 5, 2, 112, 192, 4),
    StageConfig(False, 6, 3, 1, 192, 320, 1),
)

V2_S_STAGES = (
    StageConfig(True, 1, 3, 1, 24, 24, 2),
    StageConfig(True, 4, 3, 2, 24, 48, 4),
    StageConfig(True, 4, 3, 2, 48, 64, 4),
    StageConfig(False, 4, 3, 2, 64, 128, 6),
    StageConfig(False, 6, 3, 1, 128, 160, 9),
    StageConfig(False, 6, 3, 2, 160, 256, 15),
)


class EfficientNet(nn.Module):
    """EfficientNet / EfficientNetV2 body from a stage table (see the module docstring)."""

    def __init__(
        self,
        stages: tuple[StageConfig, ...],
        num_classes: int = 1000,
        head_channels: int = 1280,
        drop_path: float = 0.2,
        dropout: float = 0.2,
    ):
        super().__init__()
        total_blocks = sum(s.layers for s in stages)
        layers = [ConvBNAct(3, stages[0].in_channels, 3, 2, act=nn.SiLU)]
        index = 0
        for stage in stages:
            blocks = []
            for i in range(stage.layers):
                in_channels = stage.in_channels if i == 0 else stage.out_channels
                stride = stage.stride if i == 0 else 1
                p = drop_path * index / total_blocks
                if stage.fused:
                    blocks.append(FusedMBConv(
                        in_channels, stage.out_channels, expand_ratio=stage.expand_ratio,
                        kernel_size=stage.kernel, stride=stride, drop_path=p,
                    ))
                else:
                    blocks.append(InvertedResidual(
                        in_channels, stage.out_channels, expanded=in_channels * stage.expand_ratio,
                        stride=stride, kernel_size=stage.kernel, act=nn.SiLU,
                        se_channels=max(1, in_channels // 4), se_act=nn.SiLU, se_gate=nn.Sigmoid,
                        drop_path=p,
                    ))
                index += 1
            layers.append(nn.Sequential(*blocks))
        layers.append(ConvBNAct(stages[-1].out_channels, head_channels, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def efficientnet_b0(num_classes: int = 1000) -> EfficientNet:
    """EfficientNet-B0: 5.3M parameters, 0.39B FLOPs at 224x224."""
    return EfficientNet(B0_STAGES, num_classes)


def efficientnet_v2_s(num_classes: int = 1000) -> EfficientNet:
    """EfficientNetV2-S: 22M parameters (21.5M with this 1000-class head), 8.8B FLOPs at 384x384."""
    return EfficientNet(V2_S_STAGES, num_classes)
