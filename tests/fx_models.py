"""Small torch modules that each exercise one FX rewrite (or one reason to decline it)."""
from __future__ import annotations

import torch
import torch.nn as nn

from rewrite.algebra import collapse_dw_pw
from tests.helpers import batchnorm, dw_spec, pw_spec


class ConvBN(nn.Module):
    def __init__(self, cin=8, cout=16, k=3, groups=1, extra_user=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False)
        self.bn = batchnorm(cout)
        self.extra_user = extra_user

    def forward(self, x):
        y = self.conv(x)
        out = torch.relu(self.bn(y))
        return out + y if self.extra_user else out


class SeparableConv(nn.Module):
    """Xception-style dw → pw with nothing between; optional activation or BN between."""

    def __init__(self, c=32, n=64, between=None, stride=1):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False)
        self.between = between or nn.Identity()
        self.pw = nn.Conv2d(c, n, 1, bias=False)
        self.bn = batchnorm(n)

    def forward(self, x):
        return self.bn(self.pw(self.between(self.dw(x))))


def factorable_conv(cin=16, cout=24, k=3, r=1, padding=None, seed=0) -> nn.Conv2d:
    """A dense conv whose weight is exactly a collapsed dw→pw chain (rank r per input channel)."""
    g = torch.Generator().manual_seed(seed)
    spec = collapse_dw_pw(dw_spec(cin, k, r, gen=g), pw_spec(cin * r, cout, gen=g))
    conv = nn.Conv2d(cin, cout, k, padding=k // 2 if padding is None else padding)
    with torch.no_grad():
        conv.weight.copy_(spec.weight.float())
        conv.bias.copy_(spec.bias.float())
    return conv.eval()


class SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1, self.bn2 = batchnorm(8, 1), batchnorm(8, 2)

    def forward(self, x):
        return self.bn2(self.conv(self.bn1(self.conv(x))))


class TiedWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.b.weight = self.a.weight
        self.bn_a, self.bn_b = batchnorm(8, 1), batchnorm(8, 2)

    def forward(self, x):
        return self.bn_b(self.b(self.bn_a(self.a(x))))


class ControlFlow(nn.Module):
    """Top level not capturable (a branch on the data); its children are."""

    def __init__(self):
        super().__init__()
        self.head = ConvBN(3, 16)
        self.sep = SeparableConv(16, 32)

    def forward(self, x):
        if x.mean() > 0:
            x = x * 2
        return self.sep(self.head(x))


class SaturatedHead(nn.Module):
    """conv+BN → a sigmoid whose input cancels two ~1e8 terms: in float32 the logits are rounding noise
    of several units, so the sigmoid's tiny outputs differ from float64 by more than their own size (a
    detector head on noise inputs does the same)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), batchnorm(8, seed=2))
        self.big = nn.Conv2d(8, 2, 1)
        self.diff = nn.Conv2d(2, 1, 1)
        with torch.no_grad():
            self.big.weight.fill_(1e7)
            self.big.weight[1] *= 1 + 1e-7
            self.big.bias.zero_()
            self.diff.weight.copy_(torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1))
            self.diff.bias.fill_(-20.0)

    def forward(self, x):
        return torch.sigmoid(self.diff(self.big(torch.relu(self.body(x)))))

