"""`python -m rewrite.entry.demo [MODEL] [--target cpu|h100] [--full-size] [--json PATH]`

The main job end to end on a built-in example: build a model from `models_under_test` (a real
torchvision / timm model such as `tv/mobilenet_v2`, random init and calibrated BatchNorm, or one
of the project's own definitions), optimize it, print the report, and time original vs
optimized on this machine's CPU (eager): calls alternate between the two, and the speedup is the
median of the per-pair ratios with its 95% confidence interval (rewrite.measure.compare), so
another process on the machine slows both alike; the times printed are those of the pair at the
median speedup (so they agree with it), and an interval too wide to tell is said to be.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

import models_under_test as zoo

from .api import optimize
from ..cost_model import PRESENT_GPU, PROFILES
from ..measure import DECISIVE_PAIRS, WIDE, Comparison, compare

TIMING_BUDGET_S = 2.0


@dataclass
class DemoRun:
    """What the demo printed, with the objects behind it (the tests check one against the other)."""
    model: torch.nn.Module
    x: torch.Tensor
    fast: torch.nn.Module
    seconds: float
    timing: Comparison          # original against optimized, paired (rewrite.measure.compare)


def run(name: str, *, target: str | None = None, full_size: bool = False, batch: int = 1, log=print) -> DemoRun:
    """Build `name`, optimize it with default options (but `target`), time both in eager."""
    if name in zoo.real_names():
        model = zoo.build_real(name)
        size = zoo.REAL_MODELS[name].input_size if full_size else None
        x = zoo.real_example_input(name, batch=batch, size=size)
    else:
        model = zoo.get(name)
        x = zoo.example_input(name, batch=batch, small=not full_size)
    log(f"optimizing {name} on input {tuple(x.shape)} for target {target or 'cpu (this machine)'} ...", flush=True)
    start = time.perf_counter()
    fast = optimize(model, x, target=target)
    seconds = time.perf_counter() - start
    timing = compare(model, fast, (x,), 1.0, budget_s=TIMING_BUDGET_S, min_repeats=DECISIVE_PAIRS, calls=1)
    return DemoRun(model, x, fast, seconds, timing)


def timing_lines(timing: Comparison) -> str:
    """The demo's timing, in figures that cannot contradict each other: the speedup is the median
    of the per-pair ratios with its interval, and the times are those of the pair at that median
    (Comparison.times_at_median), so their ratio is the speedup. Each form's median over all
    pairs can disagree with it under load (the demo once printed 31.2 ms against 6.5 ms beside
    1.31x); an interval too wide to tell a speedup is said to be one."""
    before, after = timing.times_at_median()
    lines = [f"measured here (CPU eager, calls alternating): speedup {timing.describe()}",
             f"  per call, in the {'pair' if timing.pairs % 2 else 'two pairs (their mean)'} at the median speedup: "
             f"original {before * 1e3:.1f} ms, optimized "
             f"{after * 1e3:.1f} ms"]
    if timing.too_wide():
        lines.append(f"  the machine was busy: the interval ({timing.low:.2f}-{timing.high:.2f}) spans more than "
                     f"{WIDE}x, too wide to tell the speedup; rerun when the machine is quiet")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="tv/mobilenet_v2", choices=zoo.real_names() + zoo.names())
    parser.add_argument("--target", default=None, choices=sorted(PROFILES) + list(PRESENT_GPU),
                        help="optimize for this device profile (default: where the model runs, this CPU, with "
                             "every candidate site timed); h100 or h200 predicts for that GPU ahead of time, "
                             "cuda / gpu for the one present")
    parser.add_argument("--full-size", action="store_true", help="use the model's full input size")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", help="also write the report as JSON here")
    args = parser.parse_args(argv)

    result = run(args.model, target=args.target, full_size=args.full_size, batch=args.batch)
    print(f"done in {result.seconds:.1f}s\n")
    print(result.fast.rewrite_report)
    print("\n" + timing_lines(result.timing))
    if args.json:
        with open(args.json, "w") as f:
            f.write(result.fast.rewrite_report.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
