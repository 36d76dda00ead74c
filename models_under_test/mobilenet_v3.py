"""MobileNetV3-Large and -Small (Howard et al., 2019, "Searching for MobileNetV3"), width 1.0,
224x224: Tables 1 and 2 of the paper.

A 3x3 stride-2 hard-swish stem conv (16 channels), inverted-residual blocks with ReLU or hard-swish
and, where the table says so, squeeze-excite (ReLU / hard-sigmoid, squeeze width = expanded / 4
rounded to a multiple of 8) between the depthwise conv and the projection; then a 1x1 conv-BN
hard-swish, global average pooling, a 1x1 "conv" (here ``nn.Linear``, equivalent on a pooled 1x1
map) with hard-swish and no BN, dropout 0.2 and the classifier.
"""

from typing import NamedTuple

import torch
from torch import nn

from .blocks import ConvBNAct, InvertedResidual, make_divisible


class BlockConfig(NamedTuple):
    """One row of the paper's table: kernel, expanded width, output width, SE, activation, stride."""

    kernel: int
    expanded: int
    out: int
    se: bool
    act: type[nn.Module]
    stride: int


_RE, _HS = nn.ReLU, nn.Hardswish

LARGE = (
    BlockConfig(3, 16, 16, False, _RE, 1),
    BlockConfig(3, 64, 24, False, _RE, 2),
    BlockConfig(3, 72, 24, False, _RE, 1),
    BlockConfig(5, 72, 40, True, _RE, 2),
    BlockConfig(5, 120, 40, True, _RE, 1),
    BlockConfig(5, 120, 40, True, _RE, 1),
    BlockConfig(3, 240, 80, False, _HS, 2),
    BlockConfig(3, 200, 80, False, _HS, 1),
    BlockConfig(3, 184, 80, False, _HS, 1),
    BlockConfig(3, 184, 80, False, _HS, 1),
    BlockConfig(3, 480, 112, True, _HS, 1),
    BlockConfig(3, 672, 112, True, _HS, 1),
    BlockConfig(5, 672, 160, True, _HS, 2),
    BlockConfig(5, 960, 160, True, _HS, 1),
    BlockConfig(5, 960, 160, True, _HS, 1),
)

SMALL = (
    BlockConfig(3, 16, 16, True, _RE, 2),
    BlockConfig(3, 72, 24, False, _RE, 2),
    BlockConfig(3, 88, 24, False, _RE, 1),
    BlockConfig(5, 96, 40, True, _HS, 2),
    BlockConfig(5, 240, 40, True, _HS, 1),
    BlockConfig(5, 240, 40, True, _HS, 1),
    BlockConfig(5, 120, 48, True, _HS, 1),
    BlockConfig(5, 144, 48, True, _HS, 1),
    BlockConfig(5, 288, 96, True, _HS, 2),
    BlockConfig(5, 576, 96, True, _HS, 1),
    BlockConfig(5, 576, 96, True, _HS, 1),
)


class MobileNetV3(nn.Module):
    """MobileNetV3 from a block table, a last-conv width and a classifier hidden width."""

    def __init__(
        self,
        blocks: tuple[BlockConfig, ...],
        last_channels: int,
        hidden_channels: int,
        num_classes: int = 1000,
    ):
        super().__init__()
        layers = [ConvBNAct(3, 16, 3, 2, act=nn.Hardswish)]
        channels = 16
        for cfg in blocks:
            layers.append(InvertedResidual(
                channels, cfg.out, expanded=cfg.expanded, stride=cfg.stride, kernel_size=cfg.kernel,
                act=cfg.act, se_channels=make_divisible(cfg.expanded / 4) if cfg.se else None,
                se_act=nn.ReLU, se_gate=nn.Hardsigmoid,
            ))
            channels = cfg.out
        layers.append(ConvBNAct(channels, last_channels, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last_channels, hidden_channels),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(hidden_channels, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mobilenet_v3_large(num_classes: int = 1000) -> MobileNetV3:
    """MobileNetV3-Large 1.0 (Table 1): 5.4M parameters, 219M multiply-adds."""
    return MobileNetV3(LARGE, last_channels=960, hidden_channels=1280, num_classes=num_classes)


def mobilenet_v3_small(num_classes: int = 1000) -> MobileNetV3:
    """MobileNetV3-Small 1.0 (Table 2): 2.5M parameters, 56M multiply-adds."""
    return MobileNetV3(SMALL, last_channels=576, hidden_channels=1024, num_classes=num_classes)
