"""How long optimize() itself takes on real models, checks on (a benchmark script, not a test).

    python -m tests.benchmarks.bench_optimizer_speed [--models tv/efficientnet_b0:224,tv/efficientnet_v2_s:384]

For each model (torchvision / timm, random init, calibrated BatchNorm, batch 1, the given
resolution, default GPU target so every pass runs): the wall time of optimize(), median of
--repeats runs, with the time spent in torch.export, in the site checks and in the whole-model
check, and the report's counts. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch

import models_under_test as zoo
import passes.fx.capture as capture
import passes.manager as manager
from rewrite import optimize

DEFAULT = "tv/efficientnet_b0:224,tv/efficientnet_v2_s:384,tv/mobilenet_v2:224"


@contextmanager
def timed(module, name: str, totals: dict):
    """Add the time spent in module.name to totals[name] while the block runs."""
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, real)


def run(name: str, size: int, repeats: int) -> dict:
    model = zoo.build_real(name)
    x = zoo.real_example_input(name, batch=1, size=size)
    walls, parts = [], []
    for _ in range(repeats):
        totals: dict = {}
        with timed(capture, "_export", totals), timed(manager, "check_site", totals):
            start = time.perf_counter()
            opt = optimize(model, x)
            walls.append(time.perf_counter() - start)
        parts.append(totals)
    best = parts[walls.index(statistics.median_low(walls))]
    counts = opt.rewrite_report.counts()
    return dict(model=name, size=size, seconds=statistics.median(walls), export=best.get("_export", 0.0),
                checks=best.get("check_site", 0.0),
                applied={k: c["applied"] for k, c in counts.items() if c["applied"]},
                error=opt.rewrite_report.model_rel_error)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT, help="NAME:SIZE,... (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| model | input | optimize() s (median) | torch.export s | site checks s | applied | model rel error |")
    print("|---|---|---|---|---|---|---|")
    for item in args.models.split(","):
        name, _, size = item.partition(":")
        r = run(name, int(size or 224), args.repeats)
        print(f"| {r['model']} | {r['size']}² | {r['seconds']:.1f} | {r['export']:.1f} | {r['checks']:.1f} | "
              f"{r['applied']} | {r['error']:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
