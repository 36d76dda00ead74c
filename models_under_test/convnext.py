"""ConvNeXt-T (Liu et al., 2022, "A ConvNet for the 2020s"), following the official implementation
(facebookresearch/ConvNeXt), 224x224.

Stem: 4x4 stride-4 conv + channels-first LayerNorm. Four stages of depths (3, 3, 9, 3) and widths
(96, 192, 384, 768), with a LayerNorm + 2x2 stride-2 conv between stages. Block: 7x7 depthwise
conv -> permute to NHWC -> LayerNorm -> Linear (4x) -> GELU -> Linear -> layer-scale ``gamma`` ->
permute back to NCHW -> stochastic depth -> residual add. Head: global average pool, LayerNorm,
Linear. Stochastic depth grows linearly to 0.1 (the ConvNeXt-T setting); identity in eval.

The layer-scale init defaults to 0.1 rather than the paper's 1e-6: the zoo's models are randomly
initialised, and with 1e-6 every block would be numerically invisible to the optimizer's checks.
"""

import torch
from torch import nn

from .blocks import StochasticDepth


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an NCHW tensor (the official ``channels_first`` mode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """dw7x7 -> NHWC LayerNorm -> Linear(4x) -> GELU -> Linear -> gamma -> NCHW, plus the input."""

    def __init__(self, dim: int, drop_path: float, layer_scale_init: float):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = StochasticDepth(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXt(nn.Module):
    """ConvNeXt; the defaults are ConvNeXt-T: 28.6M parameters, 4.5 GFLOPs at 224x224."""

    def __init__(
        self,
        num_classes: int = 1000,
        depths: tuple[int, ...] = (3, 3, 9, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        drop_path: float = 0.1,
        layer_scale_init: float = 0.1,
    ):
        super().__init__()
        self.downsample_layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6)),
        ])
        for i in range(1, len(dims)):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dims[i], 2, 2),
            ))
        total, index = sum(depths), 0
        self.stages = nn.ModuleList()
        for depth, dim in zip(depths, dims):
            self.stages.append(nn.Sequential(*(
                ConvNeXtBlock(dim, drop_path * (index + j) / max(total - 1, 1), layer_scale_init)
                for j in range(depth)
            )))
            index += depth
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return self.head(self.norm(x.mean((-2, -1))))
