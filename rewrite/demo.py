"""`python -m rewrite.demo [MODEL] [--target cpu|h100] [--full-size] [--json PATH]`

The main job end to end on a built-in example: build a model from `models_under_test` (a real
torchvision / timm model such as `tv/mobilenet_v2`, random init and calibrated BatchNorm, or one
of the project's own definitions), optimize it, print the report, and time original vs
optimized on this machine's CPU (eager): calls alternate between the two, and the speedup is the
median of the per-pair ratios with its 95% confidence interval (rewrite.measure.compare), so
another process on the machine slows both alike and a wide interval says the figure is noisy.
"""
from __future__ import annotations

import argparse
import time

import models_under_test as zoo

from .api import optimize
from .measure import DECISIVE_PAIRS, compare

TIMING_BUDGET_S = 2.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="tv/mobilenet_v2", choices=zoo.real_names() + zoo.names())
    parser.add_argument("--target", default=None, choices=["cpu", "h100"],
                        help="optimize for this device profile (default: where the model runs, this CPU, with "
                             "every candidate site timed); h100 predicts for that GPU ahead of time")
    parser.add_argument("--full-size", action="store_true", help="use the model's full input size")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", help="also write the report as JSON here")
    args = parser.parse_args(argv)

    if args.model in zoo.real_names():
        model = zoo.build_real(args.model)
        size = zoo.REAL_MODELS[args.model].input_size if args.full_size else None
        x = zoo.real_example_input(args.model, batch=args.batch, size=size)
    else:
        model = zoo.get(args.model)
        x = zoo.example_input(args.model, batch=args.batch, small=not args.full_size)
    print(f"optimizing {args.model} on input {tuple(x.shape)} for target {args.target or 'cpu (this machine)'} ...",
          flush=True)
    start = time.perf_counter()
    fast = optimize(model, x, target=args.target)
    print(f"done in {time.perf_counter() - start:.1f}s\n")
    print(fast.rewrite_report)
    timing = compare(model, fast, (x,), 1.0, budget_s=TIMING_BUDGET_S, min_repeats=DECISIVE_PAIRS, calls=1)
    print(f"\nmeasured here (CPU eager, calls alternating): original {timing.before_s * 1e3:.1f} ms, optimized "
          f"{timing.after_s * 1e3:.1f} ms (medians); speedup {timing.describe()}")
    if args.json:
        with open(args.json, "w") as f:
            f.write(fast.rewrite_report.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
