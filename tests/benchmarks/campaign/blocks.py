"""Whole blocks: the inverted-residual block (kernels/block/inverted_residual.py, with and without its
squeeze-excitation) and the Fused-MBConv block (kernels/block/fused_mbconv.py) in one fused op, against
the eager block in channels_last (cuDNN convs), torch.compile of it, and our split form (the
expansion as a cuDNN conv, then the fused dw+pw kernel: what the fuse rule alone makes of a block).
fp16, batch 64, CUDA graphs. The fuse_block rule chooses among these forms per block; this
section is what the choice rests on (issue: whole inverted-residual blocks in one kernel).

Shapes are MobileNetV2's, EfficientNet-B0's and EfficientNetV2-S's blocks at 224^2: input
channels C, expansion e (hidden Hd = C·e), input size H, kernel k, stride s, output channels N,
squeeze channels S (0: no SE), activation, residual (stride 1 and N == C), fused (Fused-MBConv:
a dense k x k expansion, no depthwise conv).
"""
import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from tests.benchmarks import bench_fused_sep_conv as bench
from tests.benchmarks.campaign.budget import Budget, rows_within, time_forms

_ACT = {"silu": nn.SiLU, "relu6": nn.ReLU6, "relu": nn.ReLU, "hardswish": nn.Hardswish}


@dataclass(frozen=True)
class Block:
    C: int
    e: int
    H: int
    k: int
    s: int
    N: int
    S: int
    act: str
    fused: bool = False

    @property
    def hidden(self) -> int:
        return self.C * self.e

    @property
    def residual(self) -> bool:
        return self.s == 1 and self.N == self.C

    @property
    def name(self) -> str:
        kind = "fmb" if self.fused else "ir"
        return (f"{kind}-C{self.C}-e{self.e}-H{self.H}-k{self.k}-s{self.s}-N{self.N}"
                + (f"-S{self.S}" if self.S else "") + f"-{self.act}")


SUITE = (
    Block(24, 6, 56, 3, 1, 24, 0, "relu6"), Block(24, 6, 56, 3, 2, 32, 0, "relu6"),
    Block(32, 6, 28, 3, 1, 32, 0, "relu6"), Block(64, 6, 14, 3, 1, 64, 0, "relu6"),
    Block(96, 6, 14, 3, 1, 96, 0, "relu6"), Block(160, 6, 7, 3, 1, 160, 0, "relu6"),
    Block(24, 6, 56, 3, 1, 24, 6, "silu"), Block(40, 6, 28, 5, 1, 40, 10, "silu"),
    Block(80, 6, 14, 3, 1, 80, 20, "silu"), Block(112, 6, 14, 5, 1, 112, 28, "silu"),
    Block(192, 6, 7, 5, 1, 192, 48, "silu"),
    Block(24, 4, 112, 3, 2, 48, 0, "silu", fused=True), Block(48, 4, 56, 3, 1, 48, 0, "silu", fused=True),
    Block(64, 4, 28, 3, 1, 64, 0, "silu", fused=True),
)


class UnfusedBlock(nn.Module):
    """The block as the networks build it, BatchNorm folded: expand → act → dw → act (→ SE) → pw
    (+ x); for a Fused-MBConv block a dense k x k conv → act → pw (+ x)."""

    def __init__(self, b: Block):
        super().__init__()
        hd, self.b = b.hidden, b
        if b.fused:
            self.expand = nn.Conv2d(b.C, hd, b.k, b.s, b.k // 2)
        else:
            self.expand = nn.Conv2d(b.C, hd, 1)
            self.dw = nn.Conv2d(hd, hd, b.k, b.s, b.k // 2, groups=hd)
        if b.S:
            self.fc1, self.fc2 = nn.Conv2d(hd, b.S, 1), nn.Conv2d(b.S, hd, 1)
        self.pw = nn.Conv2d(hd, b.N, 1)
        self.act = _ACT[b.act]()

    def forward(self, x):
        a = self.act(self.expand(x))
        if not self.b.fused:
            a = self.act(self.dw(a))
        if self.b.S:
            a = a * torch.sigmoid(self.fc2(torch.nn.functional.silu(self.fc1(a.mean((2, 3), keepdim=True)))))
        y = self.pw(a)
        return y + x if self.b.residual else y

    def ours(self) -> nn.Module:
        """The whole block as one fused module (the residual, x itself, passed to it)."""
        import kernels

        b, act = self.b, self.b.act
        if b.fused:
            return _WithResidual(kernels.FusedMBConv2d(self.expand.weight, self.expand.bias, self.pw.weight,
                                                       self.pw.bias, stride=b.s, padding=b.k // 2, act1=act),
                                 b.residual)
        weights = (self.expand.weight, self.expand.bias, self.dw.weight, self.dw.bias, self.pw.weight, self.pw.bias)
        common = dict(stride=b.s, padding=b.k // 2, act0=act, act1=act)
        if b.S:
            fused = kernels.FusedInvertedResidualSE2d(*weights, self.fc1.weight, self.fc1.bias, self.fc2.weight,
                                                      self.fc2.bias, se_act="silu", se_gate="sigmoid", **common)
        else:
            fused = kernels.FusedInvertedResidual2d(*weights, **common)
        return _WithResidual(fused, b.residual)

    def split(self) -> nn.Module | None:
        """The expansion as a conv (cuDNN) + act, then the fused dw+pw kernel (None for Fused-MBConv)."""
        import kernels

        b, act = self.b, self.b.act
        if b.fused:
            return None
        dw = (self.dw.weight, self.dw.bias, self.pw.weight, self.pw.bias)
        if b.S:
            sep = kernels.FusedSepConvSE2d(*dw, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                                           se_act="silu", se_gate="sigmoid", stride=b.s, padding=b.k // 2, act1=act)
        else:
            sep = kernels.FusedSepConv2d(*dw, stride=b.s, padding=b.k // 2, act1=act)
        return _Split(copy.deepcopy(self.expand), _ACT[act](), sep, b.residual)


class _WithResidual(nn.Module):
    def __init__(self, fused, residual: bool):
        super().__init__()
        self.fused, self.residual = fused, residual

    def forward(self, x):
        return self.fused(x, x if self.residual else None)


class _Split(nn.Module):
    def __init__(self, expand, act, sep, residual: bool):
        super().__init__()
        self.expand, self.act, self.sep, self.residual = expand, act, sep, residual

    def forward(self, x):
        return self.sep(self.act(self.expand(x)), x if self.residual else None)


def floor_seconds(b: Block, batch: int, bandwidth: float = bench.BANDWIDTH) -> float:
    """max(bytes / bandwidth, FLOPs / matrix rate) for fp16: x, y (+ residual) and the weights
    once; the expansion, depthwise and projection FLOPs once (the halo recompute is ours to pay)."""
    ho = (b.H + 2 * (b.k // 2) - b.k) // b.s + 1
    hd = b.hidden
    acts = batch * (b.C * b.H * b.H + (2 if b.residual else 1) * b.N * ho * ho)
    weights = (hd * b.C * (b.k * b.k if b.fused else 1) + (0 if b.fused else hd * b.k * b.k) + hd * b.N
               + 2 * hd * b.S)
    if b.fused:   # the dense conv and the projection, both at the output size
        flops = 2 * batch * ho * ho * hd * (b.C * b.k * b.k + b.N)
    else:         # the expansion at the input size, the depthwise conv and the projection at the output's
        flops = 2 * batch * (b.H * b.H * hd * b.C + ho * ho * hd * (b.k * b.k + b.N))
    return max(2 * (acts + weights) / bandwidth, flops / bench.MATRIX_RATE["fp16"])


def run_block(b: Block, batch: int, device: str, l2_bytes: int, dry_run: bool) -> dict:
    torch.manual_seed(0)
    block = UnfusedBlock(b).eval().requires_grad_(False)
    for p in block.parameters():  # weights at the scale trained networks have (no saturated activations)
        p.data.mul_(0.5)
    dtype = torch.float32 if dry_run else torch.float16
    eager = copy.deepcopy(block).to(device, dtype).to(memory_format=torch.channels_last)
    x = torch.randn(batch, b.C, b.H, b.H, device=device, dtype=dtype)
    with torch.no_grad():
        ref = copy.deepcopy(block).double().to(device)(x.double())
    impls = {"ours": eager.ours().to(device, dtype).eval(), "eager_cl": eager}
    split = eager.split()
    if split is not None:
        impls["ours_split"] = split.to(device, dtype).eval()
    if not dry_run:
        torch._dynamo.reset()
        impls["compile"] = torch.compile(copy.deepcopy(eager))
    nbytes = 2 * batch * (b.C * b.H * b.H + b.N * b.H * b.H // (b.s * b.s))
    n_rot = bench.rotation(nbytes, l2_bytes)
    row = dict(layer=b.name, **asdict(b), batch=batch, times_us={}, rel_err={}, errors={})
    tolerance = bench.TOLERANCE["fp32" if dry_run else "fp16"] * (10 if dry_run else 1)
    time_forms(row, {name: (fn, torch.channels_last) for name, fn in impls.items()}, x, ref, n_rot, tolerance, dry_run)
    ok = {n: t for n, t in row["times_us"].items() if n not in row["errors"]}
    peers = {n: t for n, t in ok.items() if not n.startswith("ours")}
    if peers:
        row["best_peer"] = min(peers, key=peers.get)
        for ours in ("ours", "ours_split"):
            if ours in ok:
                row["ratio" if ours == "ours" else "ratio_split"] = peers[row["best_peer"]] / ok[ours]
    row["floor_us"] = floor_seconds(b, batch) * 1e6
    if "ours" in ok:
        row["frac_floor"] = row["floor_us"] / ok["ours"]
    return row


def run(budget: Budget, device: str, l2_bytes: int, batch: int = 64, dry_run: bool = False, blocks=None) -> dict:
    batch = 2 if dry_run else batch
    rows, skipped = rows_within(budget, SUITE if blocks is None else blocks,
                                lambda b: run_block(b, batch, device, l2_bytes, dry_run), "block")
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    splits = [r["ratio_split"] for r in rows if "ratio_split" in r]
    return dict(batch=batch, rows=rows, skipped=skipped,
                summary=dict(geomean_ratio=bench.geomean(ratios), min_ratio=min(ratios, default=float("nan")),
                             geomean_split=bench.geomean(splits), layers=len(ratios)))
