"""Whole torchvision models on the GPU: ``optimize(model.cuda().half())`` against what a user
would otherwise run, at batch 1 and 64, 224^2, outputs checked against float64.

Implementations: eager NCHW, eager channels_last, ours, torch.compile default (channels_last
model), ours under torch.compile (the optimized model compiled: Inductor fuses what lies
between our fused ops), reduce-overhead, max-autotune (as "max-autotune-no-cudagraphs" inside our CUDA graph).
Everything but reduce-overhead is timed as a captured CUDA graph (launch overhead removed for
all alike; reduce-overhead brings its own graphs and is timed with events around each call).
Jobs run in passes (eager + ours + compile for every model first, then reduce-overhead, then
max-autotune), so a tight budget drops the slowest compiles, never a model.
"""
import copy
import statistics
import time

import torch

from rewrite import optimize
from rewrite.numerics import model_tolerance, rel_error
from tests.benchmarks import bench_fused_sep_conv as bench
from tests.benchmarks.campaign.budget import Budget, error_text

MODELS = ("tv/mobilenet_v2", "tv/mobilenet_v3_large", "tv/efficientnet_b0", "tv/efficientnet_v2_s")
BATCHES = (1, 64)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
PASSES = (("eager_nchw", "eager_cl", "ours", "compile", "ours_compile"), ("reduce_overhead", "ours_reduce_overhead"),
          ("max_autotune", "ours_max_autotune"))
# (dtype, pass) in the order a tight budget keeps them: fp16 against every peer before bf16's
JOBS = (("fp16", 0), ("fp16", 1), ("bf16", 0), ("fp16", 2), ("bf16", 1), ("bf16", 2))


def _event_time(fn, x, replays: int, warmup: int) -> float:
    """Median seconds per call, CUDA events around each call (for modules with their own graphs)."""
    for _ in range(warmup):
        fn(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(replays):
        start.record()
        fn(x)
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
    return statistics.median(samples)


class ModelUnderTest:
    """One model: its fp16 CUDA forms, float64 references per batch, and the results row."""

    def __init__(self, name: str, device: str, dry_run: bool, precision: str = "fp16"):
        import models_under_test as zoo

        self.name, self.device, self.dry_run = name, device, dry_run
        dtype = torch.float32 if dry_run else DTYPES[precision]
        size = 64 if dry_run else 224
        built = zoo.build_real(name)
        self.reference = copy.deepcopy(built).double().to(device)
        self.model = built.to(device, dtype)
        self.inputs = {b: torch.randn(b, 3, size, size, device=device, dtype=dtype) for b in BATCHES}
        with torch.no_grad():
            self.refs = {b: self.reference(x.double()) for b, x in self.inputs.items()}
        self.row = dict(model=name, dtype=str(dtype)[6:], precision=precision, size=size, times_ms={str(b): {} for b in BATCHES},
                        rel_err={str(b): {} for b in BATCHES}, errors={}, tolerance={})
        self.optimized = None

    def build(self, impl: str):
        cl = lambda m: copy.deepcopy(m).to(memory_format=torch.channels_last)  # noqa: E731
        if impl == "eager_nchw":
            return self.model, torch.contiguous_format
        if impl == "eager_cl":
            return cl(self.model), torch.channels_last
        if impl == "ours":
            start = time.perf_counter()
            fast = optimize(self.model, self.inputs[BATCHES[-1]][:8])
            report = fast.rewrite_report
            self.row.update(optimize_s=time.perf_counter() - start, applied={k: c["applied"] for k, c in report.counts().items() if c["applied"]},
                            optimize_rel_error=report.model_rel_error, notes=list(report.notes))
            self.optimized = fast
            return fast, torch.channels_last
        torch._dynamo.reset()
        mode = {"compile": "default", "reduce_overhead": "reduce-overhead",
                "max_autotune": "max-autotune-no-cudagraphs"}[impl.removeprefix("ours_")]
        if impl.startswith("ours_"):  # the optimized model under torch.compile: fused ops stay opaque
            if self.optimized is None:
                raise RuntimeError("optimize() did not run (or failed) for this model")
            return torch.compile(self.optimized, mode=mode, dynamic=False), torch.channels_last
        return torch.compile(cl(self.model), mode=mode, dynamic=False), torch.channels_last

    def measure(self, impl: str) -> None:
        start = time.perf_counter()
        try:
            fn, fmt = self.build(impl)
            for b in BATCHES:
                x = self.inputs[b].contiguous(memory_format=fmt)
                with torch.no_grad():
                    err = rel_error(fn(x), self.refs[b])
                    self.row["rel_err"][str(b)][impl] = err
                    if impl == "eager_nchw":
                        self.row["tolerance"][str(b)] = model_tolerance(x.dtype, None, err)
                    tol = self.row["tolerance"].get(str(b), float("inf"))
                    if not err <= tol:
                        self.row["errors"][f"{impl}@{b}"] = f"rel err {err:.2e} > {tol:.1e}"
                    if self.dry_run:
                        t = bench.wall_time(fn, [x], 1, 0)
                    elif impl.endswith("reduce_overhead"):
                        t = _event_time(fn, x, 20, 5)
                    else:
                        t = bench.cuda_graph_time(fn, [x], replays=20, warmup=3)
                    self.row["times_ms"][str(b)][impl] = t * 1e3
        except Exception as exc:  # noqa: BLE001 - recorded, the campaign goes on
            self.row["errors"][impl] = error_text(exc)
        self.row.setdefault("wall_s", {})[impl] = time.perf_counter() - start
        print(f"  {self.name:24s} {impl:16s} " + " ".join(
            f"b{b}={self.row['times_ms'][str(b)].get(impl, float('nan')):.3f}ms" for b in BATCHES)
            + f" ({time.perf_counter() - start:.0f}s)" + (f" {self.row['errors'].get(impl, '')}"), flush=True)


def finish(row: dict) -> dict:
    """Per batch: best peer, ratio = peer / ours (> 1: ours faster), the same for ours under
    torch.compile (default mode), for the fastest of our forms (best_ours, ratio_best), and ours vs
    eager channels_last."""
    row["ratio"], row["ratio_compiled"], row["best_peer"], row["vs_eager_cl"] = {}, {}, {}, {}
    for b, times in row["times_ms"].items():
        ok = {n: t for n, t in times.items() if n not in row["errors"] and f"{n}@{b}" not in row["errors"]}
        peers = {n: t for n, t in ok.items() if not n.startswith("ours")}
        if not peers:
            continue
        best = min(peers, key=peers.get)
        row["best_peer"][b] = best
        if "ours" in ok:
            row["ratio"][b] = peers[best] / ok["ours"]
            if "eager_cl" in peers:
                row["vs_eager_cl"][b] = peers["eager_cl"] / ok["ours"]
        if "ours_compile" in ok:
            row["ratio_compiled"][b] = peers[best] / ok["ours_compile"]
        ours = {n: t for n, t in ok.items() if n.startswith("ours")}
        if ours:   # the fastest of our forms (eager, or compiled in some mode) against the best peer
            fastest = min(ours, key=ours.get)
            row.setdefault("best_ours", {})[b] = fastest
            row.setdefault("ratio_best", {})[b] = peers[best] / ours[fastest]
    return row


def run(budget: Budget, device: str, dry_run: bool = False, models=MODELS, jobs=JOBS) -> dict:
    """Each (precision, pass) of `jobs` over every model, in order, while the budget lasts; a
    model's forms in a precision are built when that precision's first pass reaches it."""
    under_test, skipped = {}, []
    for precision, index in jobs:
        for name in models:
            key = (name, precision)
            if key not in under_test:
                if budget.spent():
                    skipped.append(f"{name} {precision}")
                    continue
                try:
                    under_test[key] = ModelUnderTest(name, device, dry_run, precision)
                except Exception as exc:  # noqa: BLE001
                    skipped.append(f"{name} {precision} ({error_text(exc)})")
                    under_test[key] = None
            m = under_test[key]
            for impl in PASSES[index] if m is not None else ():
                if dry_run and impl not in ("eager_nchw", "eager_cl", "ours"):
                    continue
                if budget.spent():
                    skipped.append(f"{m.name} {precision} {impl}")
                    continue
                m.measure(impl)
    rows = [finish(m.row) for m in under_test.values() if m is not None]
    return dict(rows=rows, skipped=skipped, batches=list(BATCHES))
