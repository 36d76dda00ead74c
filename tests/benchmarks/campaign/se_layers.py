"""Squeeze-excitation layers: FusedSepConvSE2d (kernels/sep_conv/sep_conv_se.py: depthwise stage, excitation MLP, gated GEMM)
vs the eager block dw -> act -> SE -> pw and torch.compile of it, fp16, batch 64, CUDA graphs.

Shapes are EfficientNet-B0's and MobileNetV3-Large's SE blocks at 224^2 (expanded channels C,
input size H, kernel k, stride s, output channels N, squeeze channels S, activations).
"""
import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from kernels import FusedSepConvSE2d
from tests.benchmarks import bench_fused_sep_conv as bench
from tests.benchmarks.campaign.budget import Budget, rows_within, time_forms

_ACT = {"silu": nn.SiLU, "relu": nn.ReLU, "hardswish": nn.Hardswish}
_GATE = {"sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid}


@dataclass(frozen=True)
class SELayer:
    C: int
    H: int
    k: int
    s: int
    N: int
    S: int
    act: str
    gate: str

    @property
    def name(self) -> str:
        return f"C{self.C}-H{self.H}-k{self.k}-s{self.s}-N{self.N}-S{self.S}-{self.act}"


SUITE = (
    SELayer(96, 112, 3, 2, 24, 4, "silu", "sigmoid"), SELayer(144, 56, 3, 1, 24, 6, "silu", "sigmoid"),
    SELayer(144, 56, 5, 2, 40, 6, "silu", "sigmoid"), SELayer(240, 28, 5, 1, 40, 10, "silu", "sigmoid"),
    SELayer(480, 14, 3, 1, 80, 20, "silu", "sigmoid"), SELayer(672, 14, 5, 1, 112, 28, "silu", "sigmoid"),
    SELayer(1152, 7, 5, 1, 192, 48, "silu", "sigmoid"), SELayer(120, 28, 5, 1, 40, 32, "relu", "hardsigmoid"),
    SELayer(672, 14, 3, 1, 112, 168, "hardswish", "hardsigmoid"),
    SELayer(960, 7, 5, 1, 160, 240, "hardswish", "hardsigmoid"),
)


class SEBlock(nn.Module):
    """dw -> act -> x * gate(fc2(relu(fc1(mean)))) -> pw, as the two networks build it (BN folded)."""

    def __init__(self, layer: SELayer):
        super().__init__()
        self.dw = nn.Conv2d(layer.C, layer.C, layer.k, layer.s, layer.k // 2, groups=layer.C)
        self.act = _ACT[layer.act]()
        self.se_act = nn.SiLU() if layer.act == "silu" else nn.ReLU()
        self.fc1, self.fc2 = nn.Conv2d(layer.C, layer.S, 1), nn.Conv2d(layer.S, layer.C, 1)
        self.gate = _GATE[layer.gate]()
        self.pw = nn.Conv2d(layer.C, layer.N, 1)
        self.layer = layer

    def forward(self, x):
        a = self.act(self.dw(x))
        return self.pw(a * self.gate(self.fc2(self.se_act(self.fc1(a.mean((2, 3), keepdim=True))))))

    def fused(self) -> FusedSepConvSE2d:
        return FusedSepConvSE2d(self.dw.weight, self.dw.bias, self.pw.weight, self.pw.bias, self.fc1.weight,
                                self.fc1.bias, self.fc2.weight, self.fc2.bias,
                                se_act="silu" if self.layer.act == "silu" else "relu", se_gate=self.layer.gate,
                                stride=self.layer.s, padding=self.layer.k // 2, act1=self.layer.act).eval()


def run_layer(layer: SELayer, batch: int, device: str, l2_bytes: int, dry_run: bool) -> dict:
    torch.manual_seed(0)
    block = SEBlock(layer).eval().requires_grad_(False)
    for p in block.parameters():  # SE weights at the scale trained networks have (gate not saturated)
        p.data.mul_(0.5)
    fused = block.fused().to(device, torch.float16)
    eager = copy.deepcopy(block).to(device, torch.float16)
    cl = copy.deepcopy(eager).to(memory_format=torch.channels_last)
    x = torch.randn(batch, layer.C, layer.H, layer.H, device=device, dtype=torch.float16)
    with torch.no_grad():
        ref = copy.deepcopy(block).double().to(device)(x.double())
    impls = {"ours": (fused, torch.channels_last), "eager_nchw": (eager, torch.contiguous_format),
             "eager_cl": (cl, torch.channels_last)}
    if not dry_run:
        torch._dynamo.reset()
        impls["compile"] = (torch.compile(copy.deepcopy(cl)), torch.channels_last)
    geometry = bench.Layer(layer.C, layer.H, layer.k, layer.s, layer.N, layer.act, "none")
    n_rot = bench.rotation(bench.layer_bytes(geometry, batch, 2), l2_bytes)
    row = dict(layer=layer.name, **asdict(layer), batch=batch, times_us={}, rel_err={}, errors={})
    time_forms(row, impls, x, ref, n_rot, bench.TOLERANCE["fp16"], dry_run)
    peers = {n: t for n, t in row["times_us"].items() if n != "ours" and n not in row["errors"]}
    if peers:
        row["best_peer"] = min(peers, key=peers.get)
        if "ours" in row["times_us"] and "ours" not in row["errors"]:
            row["ratio"] = peers[row["best_peer"]] / row["times_us"]["ours"]
    row["floor_us"] = bench.floor_seconds(geometry, batch, "fp16") * 1e6
    if "ours" in row["times_us"]:
        row["frac_floor"] = row["floor_us"] / row["times_us"]["ours"]
    return row


def run(budget: Budget, device: str, l2_bytes: int, batch: int = 64, dry_run: bool = False, layers=None) -> dict:
    batch = 2 if dry_run else batch
    rows, skipped = rows_within(budget, SUITE if layers is None else layers,
                                lambda layer: run_layer(layer, batch, device, l2_bytes, dry_run), "SE")
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    return dict(batch=batch, rows=rows, skipped=skipped,
                summary=dict(geomean_ratio=bench.geomean(ratios), min_ratio=min(ratios, default=float("nan")),
                             layers=len(ratios)))
