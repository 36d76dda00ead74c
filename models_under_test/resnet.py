"""ResNet-18 and ResNet-50 (He et al., 2016, "Deep Residual Learning for Image Recognition"),
Table 1 of the paper, 224x224, in the torchvision layout ("ResNet v1.5": the bottleneck's stride is
on its 3x3 conv). Module names match torchvision's, so its checkpoints load as they are.

Stem: 7x7 stride-2 conv-BN-ReLU and a 3x3 stride-2 max pool; four stages of BasicBlocks (ResNet-18,
2-2-2-2) or Bottlenecks (ResNet-50, 3-4-6-3), widths 64..512 (x4 for bottlenecks); the first block
of stages 2-4 has stride 2 and a 1x1 conv-BN projection shortcut. Global average pool and the
fully connected classifier.
"""

import torch
from torch import nn


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """The 1x1 conv-BN shortcut of a block that changes the shape ("option B" of the paper)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with a ReLU between, plus the (projected) input, then ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = (
            _projection(in_channels, width, stride) if stride != 1 or in_channels != width else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand (x4), each conv-BN, ReLUs between; plus the
    (projected) input, then ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = (
            _projection(in_channels, out_channels, stride)
            if stride != 1 or in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet from a block type and the number of blocks per stage."""

    def __init__(
        self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int],
        num_classes: int = 1000,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = 64
        stages = []
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = []
            for j in range(blocks):
                stage.append(block(channels, width, 2 if i > 0 and j == 0 else 1))
                channels = width * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18: BasicBlocks 2-2-2-2, 11.7M parameters, 1.8 GFLOPs."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50: Bottlenecks 3-4-6-3, 25.6M parameters, 4.1 GFLOPs."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes)
