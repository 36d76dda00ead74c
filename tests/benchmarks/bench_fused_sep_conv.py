"""Benchmark the fused dw+pw kernel against what a user would otherwise run, on the DESIGN.md suite.

    python -m tests.benchmarks.bench_fused_sep_conv --out results/

For every layer (C, H, k, s, N) of the reference suite at batch 64, in fp16 and fp32: check each
implementation against a float64 reference (fresh random inputs), then time it inside a captured
CUDA graph (CUDA events, warm-up, median of many replays; inputs rotated so that the working set
exceeds L2). Implementations: ours (FusedSepConv2d -> dwsep::fused_sep_conv -> Triton), and the
peers: eager NCHW and eager channels_last (cuDNN dw conv + act + pw conv + act),
torch.compile default and max-autotune (the latter as "max-autotune-no-cudagraphs": everything
runs inside our own CUDA graph; a compile failure is recorded and the run goes on).

Reported per layer: each time, ratio = best peer time / our time, the floor = max(bytes moved /
bandwidth, pw FLOPs / matrix rate) and our fraction of it; the geometric mean of the ratios.
fp32 runs in tf32 mode by default (cuDNN's own default for convs; ours with allow_tf32=True,
floor at the tf32 rate); ``--fp32 exact`` turns tf32 off everywhere. Results: a JSON file (device,
date, versions, command line, settings, per-layer rows) and a markdown table under --out.
``--dry-run`` runs the plumbing on CPU at batch 2 with wall-clock timing (numbers meaningless).
"""
import argparse
import copy
import datetime
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from kernels.checks import Geometry
from kernels.sep_conv.tiles import tile_for

BANDWIDTH = 3.0e12  # bytes/s, measured copy bandwidth of the H100 here (DESIGN.md)
MATRIX_RATE = {"fp16": 800e12, "bf16": 800e12, "tf32": 400e12, "fp32": 60e12}  # dense FLOP/s, H100
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
TOLERANCE = {"fp16": 1e-2, "bf16": 2e-2, "tf32": 1e-2, "fp32": 1e-5}  # max abs err / max abs ref


@dataclass(frozen=True)
class Layer:
    """One dw(k, s) -> act1 -> pw(N) -> act2 layer of the suite (padding k // 2)."""
    C: int
    H: int
    k: int
    s: int
    N: int
    act1: str
    act2: str

    @property
    def Ho(self) -> int:
        return (self.H + 2 * (self.k // 2) - self.k) // self.s + 1

    @property
    def name(self) -> str:
        return f"C{self.C}-H{self.H}-k{self.k}-s{self.s}-N{self.N}"


# DESIGN.md reference suite (MobileNetV1 / V2 / EfficientNet-B0 dw+pw at 224^2) with the
# activations those networks use there: V1 dw-ReLU-pw-ReLU, V2 project dw-ReLU6-pw (linear
# bottleneck), EfficientNet dw-SiLU-pw.
SUITE = (
    Layer(32, 112, 3, 1, 64, "relu", "relu"), Layer(64, 112, 3, 2, 128, "relu", "relu"),
    Layer(128, 56, 3, 1, 128, "relu", "relu"), Layer(256, 28, 3, 1, 256, "relu", "relu"),
    Layer(512, 14, 3, 1, 512, "relu", "relu"), Layer(1024, 7, 3, 1, 1024, "relu", "relu"),
    Layer(144, 56, 3, 1, 24, "relu6", "none"), Layer(192, 28, 3, 1, 32, "relu6", "none"),
    Layer(384, 14, 3, 1, 64, "relu6", "none"), Layer(576, 14, 3, 1, 96, "relu6", "none"),
    Layer(960, 7, 3, 1, 160, "relu6", "none"), Layer(240, 28, 5, 1, 40, "silu", "none"),
)


def layer_bytes(layer: Layer, batch: int, elem_size: int) -> int:
    """Bytes that must move: x read once, y written once, dw/pw weights and biases read once."""
    x = batch * layer.C * layer.H * layer.H
    y = batch * layer.N * layer.Ho * layer.Ho
    weights = layer.C * layer.k * layer.k + layer.C + layer.N * layer.C + layer.N
    return (x + y + weights) * elem_size


def layer_flops(layer: Layer, batch: int) -> int:
    """FLOPs of the pointwise GEMM (2 * M * K * N), the part that runs on the matrix units."""
    return 2 * batch * layer.Ho * layer.Ho * layer.C * layer.N


def floor_seconds(layer: Layer, batch: int, precision: str, bandwidth: float = BANDWIDTH) -> float:
    """max(bytes / bandwidth, pw FLOPs / matrix rate); precision in fp16 / bf16 / tf32 / fp32."""
    elem_size = 2 if precision in ("fp16", "bf16") else 4
    return max(layer_bytes(layer, batch, elem_size) / bandwidth, layer_flops(layer, batch) / MATRIX_RATE[precision])


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


# ---------------------------------------------------------------------------------------------
# Implementations
# ---------------------------------------------------------------------------------------------
_ACT = {"none": nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "hardswish": nn.Hardswish,
        "gelu": nn.GELU}


def build(layer: Layer, dtype: torch.dtype, device: str, allow_tf32: bool):
    """(unfused nn.Sequential, FusedSepConv2d) with the same random weights."""
    from kernels import FusedSepConv2d

    dw = nn.Conv2d(layer.C, layer.C, layer.k, layer.s, layer.k // 2, groups=layer.C)
    pw = nn.Conv2d(layer.C, layer.N, 1)
    seq = nn.Sequential(dw, _ACT[layer.act1](), pw, _ACT[layer.act2]()).to(device, dtype).eval().requires_grad_(False)
    fused = FusedSepConv2d.from_convs(dw, pw, act1=layer.act1, act2=layer.act2, allow_tf32=allow_tf32)
    return seq, fused


def implementations(seq: nn.Module, fused: nn.Module, peers, dry_run: bool):
    """name -> (module, memory format of its input); compiled modules compile on their first call."""
    cl = copy.deepcopy(seq).to(memory_format=torch.channels_last)
    impls = {"ours": (fused, torch.channels_last)}
    if "eager_nchw" in peers:
        impls["eager_nchw"] = (seq, torch.contiguous_format)
    if "eager_cl" in peers:
        impls["eager_cl"] = (cl, torch.channels_last)
    if not dry_run and {"compile", "compile_max"} & set(peers):
        torch._dynamo.reset()  # a fresh cache per layer: no recompile limit reached, no stale guards
    for name, mode in (("compile", "default"), ("compile_max", "max-autotune-no-cudagraphs")):
        if name in peers and not dry_run:
            impls[name] = (torch.compile(copy.deepcopy(cl), mode=mode), torch.channels_last)
    return impls


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def cuda_graph_time(fn, inputs, replays: int, warmup: int) -> float:
    """Median seconds per call of fn over ``inputs`` (rotated), captured in one CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            for x in inputs:
                fn(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for x in inputs:
            fn(x)
    for _ in range(warmup):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(replays):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3 / len(inputs))
    del graph
    return statistics.median(samples)


def wall_time(fn, inputs, replays: int, warmup: int) -> float:
    """CPU stand-in for --dry-run: median wall-clock seconds per call."""
    for x in inputs[:1] * warmup:
        fn(x)
    samples = []
    for _ in range(replays):
        t = time.perf_counter()
        for x in inputs:
            fn(x)
        samples.append((time.perf_counter() - t) / len(inputs))
    return statistics.median(samples)


def rotation(nbytes: int, l2_bytes: int) -> int:
    """How many copies of a call's working set (nbytes) to rotate through so that together they
    exceed twice the L2 size, i.e. every call starts from DRAM as in a real network (1 to 16)."""
    return max(1, min(16, math.ceil(2 * l2_bytes / max(nbytes, 1))))


# ---------------------------------------------------------------------------------------------
# One layer, the whole run
# ---------------------------------------------------------------------------------------------
def run_layer(layer: Layer, precision: str, args, device: str, l2_bytes: int) -> dict:
    dtype = DTYPES["fp32" if precision in ("tf32", "fp32") else precision]
    torch.manual_seed(0)
    seq, fused = build(layer, dtype, device, allow_tf32=precision == "tf32")
    x = torch.randn(args.batch, layer.C, layer.H, layer.H, device=device, dtype=dtype)
    with torch.no_grad():
        ref = copy.deepcopy(seq).double()(x.double())
    row = dict(layer=layer.name, **asdict(layer), precision=precision, batch=args.batch, times_us={}, rel_err={},
               errors={})
    n_rot = rotation(layer_bytes(layer, args.batch, x.element_size()), l2_bytes)
    timer = wall_time if args.dry_run else cuda_graph_time
    for name, (fn, fmt) in implementations(seq, fused, args.peers, args.dry_run).items():
        inputs = [torch.randn_like(x).contiguous(memory_format=fmt) for _ in range(n_rot - 1)]
        inputs.insert(0, x.contiguous(memory_format=fmt))
        try:
            with torch.no_grad():
                y = fn(inputs[0])
                err = ((y.double() - ref).abs().max() / ref.abs().max()).item() if torch.isfinite(y).all() else math.inf
                row["rel_err"][name] = err
                if not err <= TOLERANCE[precision]:
                    row["errors"][name] = f"rel err {err:.2e} > {TOLERANCE[precision]:.0e}"
                row["times_us"][name] = timer(fn, inputs, args.replays, args.warmup) * 1e6
        except Exception as e:  # a peer that fails (e.g. a compile error) is recorded, the run goes on
            row["errors"][name] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        if name == "ours":
            row["config"] = ours_tile(layer, args.batch, dtype)
    peers = {n: t for n, t in row["times_us"].items() if n != "ours" and n not in row["errors"]}
    ours = row["times_us"].get("ours") if "ours" not in row["errors"] else None
    floor = floor_seconds(layer, args.batch, precision) * 1e6
    row.update(floor_us=floor, bytes=layer_bytes(layer, args.batch, 2 if dtype != torch.float32 else 4),
               pw_flops=layer_flops(layer, args.batch))
    if peers:
        row["best_peer"] = min(peers, key=peers.get)
    if peers and ours:
        row["ratio"] = peers[row["best_peer"]] / ours
    if ours:
        row["frac_floor"] = floor / ours
    return row


def ours_tile(layer: Layer, batch: int, dtype: torch.dtype) -> str:
    """The table's tile for this layer (what the launcher runs unless DWSEP_AUTOTUNE is set)."""
    g = Geometry(batch, layer.C, 1, layer.k, layer.k, layer.k // 2, layer.k // 2, layer.H, layer.H, layer.N,
                 layer.Ho, layer.Ho, dtype)
    return str(tile_for(g, layer.s))


def markdown(report: dict) -> str:
    names = ["ours", "eager_nchw", "eager_cl", "compile", "compile_max"]
    lines = [f"# Fused dw+pw kernel vs peers — {report['device']} — {report['date']}", "",
             f"`{report['command']}`  ", f"torch {report['torch']}, triton {report['triton']}, batch "
             f"{report['settings']['batch']}; times in µs (median, CUDA graph); ratio = best peer / ours; "
             f"floor = max(bytes / {BANDWIDTH / 1e12:.1f} TB/s, pw FLOPs / matrix rate)", "",
             "| layer | prec | " + " | ".join(names) + " | best peer | ratio | floor | % floor | notes |",
             "|" + "---|" * (len(names) + 7)]
    for r in report["rows"]:
        cells = [f"{r['times_us'][n]:.1f}" if n in r["times_us"] else ("fail" if n in r["errors"] else "-")
                 for n in names]
        notes = "; ".join(f"{n}: {e}" for n, e in r["errors"].items())
        lines.append(f"| {r['layer']} | {r['precision']} | " + " | ".join(cells) +
                     f" | {r.get('best_peer', '-')} | {r.get('ratio', float('nan')):.2f} | {r['floor_us']:.1f} | "
                     f"{100 * r.get('frac_floor', float('nan')):.0f} | {notes} |")
    lines += ["", "| precision | geomean ratio | min ratio | layers |", "|---|---|---|---|"]
    for p, s in report["summary"].items():
        lines.append(f"| {p} | {s['geomean_ratio']:.2f} | {s['min_ratio']:.2f} | {s['layers']} |")
    return "\n".join(lines) + "\n"


def summary(rows) -> dict:
    out = {}
    for p in dict.fromkeys(r["precision"] for r in rows):
        ratios = [r["ratio"] for r in rows if r["precision"] == p and "ratio" in r]
        out[p] = dict(geomean_ratio=geomean(ratios), min_ratio=min(ratios, default=float("nan")), layers=len(ratios))
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_fused_sep_conv", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: results/)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dtypes", nargs="+", default=["fp16", "fp32"], choices=["fp16", "bf16", "fp32"])
    p.add_argument("--fp32", choices=["tf32", "exact"], default="tf32",
                   help="fp32 mode for every implementation (default tf32, cuDNN's default for convs)")
    p.add_argument("--layers", type=int, nargs="+", help="indices into the suite (default: all 12)")
    p.add_argument("--peers", nargs="+", default=["eager_nchw", "eager_cl", "compile", "compile_max"],
                   choices=["eager_nchw", "eager_cl", "compile", "compile_max"])
    p.add_argument("--replays", type=int, default=50, help="timed graph replays per implementation")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dry-run", action="store_true", help="CPU plumbing check: batch 2, wall clock, no compile")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        device, args.batch, args.replays, args.warmup = "cpu", 2, 1, 0
    elif not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA GPU (torch.cuda.is_available() is False); "
              "use --dry-run to check the plumbing on CPU", file=sys.stderr)
        return 2
    else:
        device = "cuda"
    tf32 = args.fp32 == "tf32"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    l2 = torch.cuda.get_device_properties(0).L2_cache_size if device == "cuda" else 0  # dry run: no rotation
    import triton  # noqa: F401  (fail early, with the import error, when Triton is missing)

    layers = [SUITE[i] for i in args.layers] if args.layers else list(SUITE)
    precisions = [("tf32" if tf32 else "fp32") if d == "fp32" else d for d in args.dtypes]
    report = dict(device=torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)",
                  date=datetime.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
                  triton=triton.__version__, cuda=torch.version.cuda,
                  command=" ".join(["python -m tests.benchmarks.bench_fused_sep_conv",
                                    *(sys.argv[1:] if argv is None else argv)]),
                  settings=dict(batch=args.batch, fp32=args.fp32, peers=args.peers, replays=args.replays,
                                bandwidth=BANDWIDTH, matrix_rate=MATRIX_RATE, l2_bytes=l2,
                                compile_max_mode="max-autotune-no-cudagraphs"),
                  rows=[])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"fused_sep_conv_{'dryrun' if args.dry_run else 'gpu'}_{report['date'].replace(':', '')}"
    for precision in precisions:
        for layer in layers:
            row = run_layer(layer, precision, args, device, l2)
            report["rows"].append(row)
            times = " ".join(f"{n}={t:.1f}us" for n, t in row["times_us"].items())
            print(f"{layer.name:28s} {precision:5s} {times} ratio={row.get('ratio', float('nan')):.2f} "
                  f"floor%={100 * row.get('frac_floor', float('nan')):.0f}"
                  + (f" errors={row['errors']}" if row["errors"] else ""), flush=True)
            report["summary"] = summary(report["rows"])
            stem.with_suffix(".json").write_text(json.dumps(report, indent=2))  # partial results survive a timeout
            stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
