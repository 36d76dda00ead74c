"""MobileNetV1 (Howard et al., 2017, "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications"), width multiplier 1.0, 224x224: Table 1 of the paper.

A 3x3 stride-2 stem conv, then 13 depthwise-separable blocks (3x3 depthwise conv-BN-ReLU ->
1x1 pointwise conv-BN-ReLU), global average pooling and a fully connected classifier.
"""

from collections import OrderedDict

import torch
from torch import nn

from .blocks import ConvBNAct

# (pointwise output channels, depthwise stride) of the 13 separable blocks, Table 1.
_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv-BN-ReLU followed by 1x1 pointwise conv-BN-ReLU (Figure 3 of the paper)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(OrderedDict(
            dw=ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels),
            pw=ConvBNAct(in_channels, out_channels, 1),
        ))


class MobileNetV1(nn.Module):
    """MobileNetV1-1.0: 4.2M parameters, 569M multiply-adds at 224x224."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers = [ConvBNAct(3, 32, 3, 2)]
        channels = 32
        for out_channels, stride in _BLOCKS:
            layers.append(DepthwiseSeparable(channels, out_channels, stride))
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
