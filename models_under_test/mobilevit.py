"""MobileViT-XS (Mehta & Rastegari, 2022, "MobileViT: Light-weight, General-purpose, and
Mobile-friendly Vision Transformer"), following the ml-cvnets reference ``mobilevit_xs`` config,
256x256.

A hybrid conv/attention network: 3x3 stride-2 stem (16 channels), MobileNetV2 blocks (expansion
4, SiLU), and in the last three stages one MobileViT block after a stride-2 MV2 block:

======  =======  =========  ===========  ============
stage   out      attn dim   transformer  MLP width
======  =======  =========  ===========  ============
3       64       96         2 layers     192
4       80       120        4 layers     240
5       96       144        3 layers     288
======  =======  =========  ===========  ============

then a 1x1 conv-BN-SiLU to 384 channels, global average pooling, dropout 0.1 and the classifier.

The MobileViT block unfolds the feature map into 2x2 patches with Python arithmetic on its
shape, resizing it first when the sides are not multiples of 2 (as the reference does). That
control flow makes ``torch.fx.symbolic_trace`` fail on the whole model; the convolutional parts
(``stem``, the MV2 blocks, each block's ``local_rep``) trace on their own.
"""

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNAct, InvertedResidual


class Attention(nn.Module):
    """Multi-head self-attention with plain tensor ops: fused QKV projection, softmax(QK^T/sqrt(d))V,
    output projection."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out)


class TransformerLayer(nn.Module):
    """Pre-norm transformer encoder layer: x + Attn(LN(x)), then x + MLP(LN(x)) with SiLU."""

    def __init__(self, dim: int, mlp_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.drop1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.SiLU(), nn.Linear(mlp_dim, dim), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop1(self.attn(self.norm1(x)))
        return x + self.mlp(self.norm2(x))


class MobileViTBlock(nn.Module):
    """Local 3x3 conv-BN-SiLU + 1x1 projection to the attention width, unfold into 2x2 patches,
    transformer layers across patches (one sequence per pixel position inside a patch), final
    LayerNorm, fold back, 1x1 conv-BN-SiLU to the input width, concat with the input, and a 3x3
    conv-BN-SiLU fusion."""

    def __init__(
        self, channels: int, dim: int, depth: int, mlp_dim: int, num_heads: int = 4,
        patch_size: int = 2, dropout: float = 0.1,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.local_rep = nn.Sequential(OrderedDict(
            conv_kxk=ConvBNAct(channels, channels, 3, act=nn.SiLU),
            conv_1x1=nn.Conv2d(channels, dim, 1, bias=False),
        ))
        self.global_rep = nn.Sequential(
            *(TransformerLayer(dim, mlp_dim, num_heads, dropout) for _ in range(depth)),
            nn.LayerNorm(dim),
        )
        self.conv_proj = ConvBNAct(dim, channels, 1, act=nn.SiLU)
        self.fusion = ConvBNAct(2 * channels, channels, 3, act=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.local_rep(x)
        patches, orig_size = self._unfold(y)
        y = self._fold(self.global_rep(patches), y.shape[0], orig_size)
        return self.fusion(torch.cat((x, self.conv_proj(y)), dim=1))

    def _unfold(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """[B, C, H, W] -> [B * P, N, C] with P pixels per patch and N patches."""
        p = self.patch_size
        batch, channels = x.shape[0], x.shape[1]
        orig_h, orig_w = int(x.shape[2]), int(x.shape[3])
        new_h, new_w = math.ceil(orig_h / p) * p, math.ceil(orig_w / p) * p
        if new_h != orig_h or new_w != orig_w:
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        n_h, n_w = new_h // p, new_w // p
        x = x.reshape(batch * channels * n_h, p, n_w, p).transpose(1, 2)
        x = x.reshape(batch, channels, n_h * n_w, p * p).transpose(1, 3)
        return x.reshape(batch * p * p, n_h * n_w, channels), (orig_h, orig_w)

    def _fold(self, patches: torch.Tensor, batch: int, orig_size: tuple[int, int]) -> torch.Tensor:
        """Inverse of ``_unfold``: [B * P, N, C] -> [B, C, H, W], resized back to ``orig_size``."""
        p = self.patch_size
        orig_h, orig_w = orig_size
        n_h, n_w = math.ceil(orig_h / p), math.ceil(orig_w / p)
        channels = patches.shape[-1]
        x = patches.reshape(batch, p * p, n_h * n_w, channels).transpose(1, 3)
        x = x.reshape(batch * channels * n_h, n_w, p, p).transpose(1, 2)
        x = x.reshape(batch, channels, n_h * p, n_w * p)
        if n_h * p != orig_h or n_w * p != orig_w:
            x = F.interpolate(x, size=orig_size, mode="bilinear", align_corners=False)
        return x


def _mv2(in_channels: int, out_channels: int, stride: int) -> InvertedResidual:
    """MobileNetV2 block of MobileViT: expansion 4, SiLU."""
    return InvertedResidual(
        in_channels, out_channels, expanded=4 * in_channels, stride=stride, act=nn.SiLU,
    )


class MobileViT(nn.Module):
    """MobileViT-XS: 2.3M parameters."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, 2, act=nn.SiLU)
        self.layer1 = nn.Sequential(_mv2(16, 32, 1))
        self.layer2 = nn.Sequential(_mv2(32, 48, 2), _mv2(48, 48, 1), _mv2(48, 48, 1))
        self.layer3 = nn.Sequential(_mv2(48, 64, 2), MobileViTBlock(64, 96, depth=2, mlp_dim=192))
        self.layer4 = nn.Sequential(_mv2(64, 80, 2), MobileViTBlock(80, 120, depth=4, mlp_dim=240))
        self.layer5 = nn.Sequential(_mv2(80, 96, 2), MobileViTBlock(96, 144, depth=3, mlp_dim=288))
        self.conv_1x1_exp = ConvBNAct(96, 384, 1, act=nn.SiLU)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(384, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        x = self.conv_1x1_exp(self.layer5(self.layer4(self.layer3(x))))
        return self.classifier(torch.flatten(self.pool(x), 1))
