"""MobileNetV2 (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks"),
width multiplier 1.0, 224x224: Table 2 of the paper.

A 3x3 stride-2 stem conv (32 channels), 17 inverted-residual blocks with ReLU6 and linear
bottlenecks (the first, expansion t=1, has no expand conv), a 1x1 conv to 1280 channels, global
average pooling, dropout 0.2 and a fully connected classifier.
"""

import torch
from torch import nn

from .blocks import ConvBNAct, InvertedResidual

# (expansion t, output channels c, repeats n, first stride s), Table 2.
_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2-1.0: 3.5M parameters, 300M multiply-adds at 224x224."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers = [ConvBNAct(3, 32, 3, 2, act=nn.ReLU6)]
        channels = 32
        for t, c, n, s in _STAGES:
            for i in range(n):
                layers.append(InvertedResidual(
                    channels, c, expanded=channels * t, stride=s if i == 0 else 1, act=nn.ReLU6,
                ))
                channels = c
        layers.append(ConvBNAct(channels, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
