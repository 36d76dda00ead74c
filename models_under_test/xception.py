"""Xception (Chollet, 2017, "Xception: Deep Learning with Depthwise Separable Convolutions"),
Figure 5 of the paper, 299x299.

Entry flow: two unpadded 3x3 convs (32 stride 2, 64), then three residual blocks (128, 256, 728
channels) each ending in a 3x3 stride-2 max pool, with a 1x1 stride-2 conv-BN shortcut. Middle
flow: eight residual blocks of three ReLU -> SeparableConv(728) -> BN. Exit flow: a residual block
(728 -> 1024, with shortcut), SeparableConv(1536)-BN-ReLU, SeparableConv(2048)-BN-ReLU, global
average pooling and the classifier (the optional fully connected layers of the figure are not
used, as in the reference model).

A separable conv is a 3x3 depthwise conv immediately followed by a 1x1 pointwise conv, with no BN
or non-linearity in between (section 4.3 of the paper); BN comes after the pointwise conv.
"""

from collections import OrderedDict

import torch
from torch import nn


class SeparableConv2d(nn.Sequential):
    """3x3 depthwise conv (padding 1) directly followed by a 1x1 pointwise conv, both without bias."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(OrderedDict(
            depthwise=nn.Conv2d(in_channels, in_channels, 3, 1, 1, groups=in_channels, bias=False),
            pointwise=nn.Conv2d(in_channels, out_channels, 1, bias=False),
        ))


class XceptionBlock(nn.Module):
    """``reps`` x (ReLU -> SeparableConv -> BN), an optional 3x3 max pool, plus a shortcut.

    ``start_with_relu=False`` drops the leading ReLU (first entry-flow block, whose input already
    went through the stem's ReLU). With ``grow_first`` the first separable conv changes the width,
    otherwise the last one does (the exit-flow block). The shortcut is a 1x1 conv-BN with the
    block's stride when the shape changes, the identity otherwise.
    """

    def __init__(
        self, in_channels: int, out_channels: int, reps: int, stride: int,
        start_with_relu: bool = True, grow_first: bool = True,
    ):
        super().__init__()
        widths = [in_channels] + (
            [out_channels] * reps if grow_first else [in_channels] * (reps - 1) + [out_channels]
        )
        layers = []
        for i in range(reps):
            if i > 0 or start_with_relu:
                layers.append(nn.ReLU(inplace=False))
            layers += [SeparableConv2d(widths[i], widths[i + 1]), nn.BatchNorm2d(widths[i + 1])]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                bn=nn.BatchNorm2d(out_channels),
            ))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x) + self.shortcut(x)


class Xception(nn.Module):
    """Xception: 22.9M parameters, 8.4B multiply-adds at 299x299."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.entry_flow = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=False),
            nn.Conv2d(32, 64, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=False),
            XceptionBlock(64, 128, 2, 2, start_with_relu=False),
            XceptionBlock(128, 256, 2, 2),
            XceptionBlock(256, 728, 2, 2),
        )
        self.middle_flow = nn.Sequential(*(XceptionBlock(728, 728, 3, 1) for _ in range(8)))
        self.exit_flow = nn.Sequential(
            XceptionBlock(728, 1024, 2, 2, grow_first=False),
            SeparableConv2d(1024, 1536), nn.BatchNorm2d(1536), nn.ReLU(inplace=False),
            SeparableConv2d(1536, 2048), nn.BatchNorm2d(2048), nn.ReLU(inplace=False),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.exit_flow(self.middle_flow(self.entry_flow(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
