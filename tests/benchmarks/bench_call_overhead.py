"""Per-call overhead of an optimized model against the original, on inputs so small that the call
itself dominates (batch 1, 32², one thread): paired, alternating calls (rewrite.measure.compare),
the median per-pair ratio original / optimized with its 95% interval (above 1: the optimized
model is faster per call). Rows: real zoo models (their whole graph exported) and a model whose
top level cannot be exported, optimized submodule by submodule (tests/test_fx_plain.py).

    python -m tests.benchmarks.bench_call_overhead --out results/call_overhead_cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

import models_under_test as zoo
from rewrite import optimize
from rewrite.measure import compare

MODELS = ("tv/mobilenet_v2", "tv/efficientnet_b0", "timm/mobilenetv4_conv_small", "timm/mobileone_s0")


def _rows(names, size: int, budget_s: float):
    from tests.test_fx_plain import DataDependentTop

    cases = [(name, zoo.build_real(name), zoo.real_example_input(name, batch=1, size=size)) for name in names]
    cases.append(("submodules (DataDependentTop)", DataDependentTop().eval(), torch.randn(1, 3, size, size)))
    for name, model, x in cases:
        fast = optimize(model, x, target="cpu", cost_model="analytic")
        c = compare(model, fast, (x,), 1.0, budget_s=budget_s, min_repeats=20)
        applied = {k: v["applied"] for k, v in fast.rewrite_report.counts().items() if v["applied"]}
        yield dict(model=name, result=type(fast).__name__, applied=applied, original_us=round(c.before_s * 1e6, 1),
                   optimized_us=round(c.after_s * 1e6, 1), speedup=round(c.speedup, 3), low=round(c.low, 3),
                   high=round(c.high, 3), pairs=c.pairs)
        print(name, c.describe(), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of paired calls per row (extended "
                        "while the interval is unsettled)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    rows = list(_rows(MODELS, args.size, args.budget))
    meta = dict(command=" ".join(["python -m tests.benchmarks.bench_call_overhead", *(sys.argv[1:] if argv is None else argv)]),
                date=datetime.date.today().isoformat(), machine=f"{platform.machine()} CPU, {platform.node() and 'this project'}'s 2-core machine, 1 thread",
                torch=torch.__version__, commit=commit or "unknown", batch=1, size=args.size)
    args.out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [f"# Per-call overhead, batch 1, {args.size}², one thread", "", f"`{meta['command']}` ({meta['date']}, "
             f"{meta['machine']}, torch {meta['torch']}, commit {meta['commit']})", "",
             "| model | optimized result | original µs | optimized µs | original / optimized (95% CI) | pairs |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['result']} | {r['original_us']} | {r['optimized_us']} | {r['speedup']} "
              f"({r['low']}-{r['high']}) | {r['pairs']} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
