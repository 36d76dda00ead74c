"""Approximate decoupling through optimize() on a PyTorch model with trained weights: PP-OCRv4's
text detector converted to PyTorch (tests/benchmarks/torch_detector.py), judged as
bench_approximate judges the ONNX file: detection F and character accuracy of rapidocr's own
pipeline (the detector's forward swapped for the PyTorch model's) on rendered pages none of which
is in the calibration set.

    python -m tests.benchmarks.bench_approximate_torch --out results/approximate/ppocr_det_torch \\
        [--budgets 0.05,0.1,0.2] [--metric-drop 0.5] [--dry-run]

First the exact rewrites alone (optimize(model, x), no calibration), so that the table shows what
the approximation adds. Per budget: optimize(model, x, approximate=REL, calibration=pages) with the defaults (the CPU
target, sites timed), its wall time, the held-out error, the sites, the whole model against the
original in eager PyTorch (1 thread, 640x640, paired medians and their 95% interval), and the
task metric. With --metric-drop, one more run passes the task metric itself to optimize()
(metric=, max_metric_drop=) at the loosest budget. Needs onnx2torch and the OCR pipeline's extras.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .bench_approximate import CALIBRATION_SEED, TEST_SEED
from .ocr_pages import detector_input, fonts_present, ocr_engine, render, score
from .torch_detector import torch_detector


def torch_metric(pages: list):
    """metric(model) -> {"det_f", "char_acc"}: the pipeline with its detector's forward swapped for `model`."""
    def metric(model) -> dict:
        engine = ocr_engine()
        with torch.no_grad():
            engine.text_det.infer = lambda img: [model(torch.from_numpy(np.ascontiguousarray(img))).numpy()]
            result = score(engine, pages)
        return {"det_f": result["det_f"], "char_acc": result["char_acc"]}
    return metric


def speedup(original, optimized, x) -> list:
    from rewrite.measure import compare, one_thread
    with torch.no_grad(), one_thread():
        result = compare(original, optimized, (x,), 1.0, budget_s=6.0, min_repeats=25)
    return [result.speedup, result.low, result.high, result.pairs]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budgets", default="0.05,0.1,0.2")
    p.add_argument("--calibration-pages", type=int, default=20)
    p.add_argument("--test-pages", type=int, default=30)
    p.add_argument("--metric-drop", type=float, default=None, help="also run with the task metric given to optimize()")
    p.add_argument("--dry-run", action="store_true", help="4 calibration pages, 1 test page, one budget")
    args = p.parse_args(argv)
    if not fonts_present():
        print("bench_approximate_torch: the DejaVu fonts are missing", file=sys.stderr)
        return 2
    from rewrite import optimize
    say = lambda m: print(f"bench_approximate_torch: {m}", file=sys.stderr, flush=True)  # noqa: E731
    side = 640
    if args.dry_run:
        args.calibration_pages, args.test_pages, args.budgets = 4, 1, "0.3"
    cal = torch.from_numpy(np.concatenate([detector_input(render(CALIBRATION_SEED + i))
                                           for i in range(args.calibration_pages)])[:, :, :side, :side].copy())
    metric = torch_metric([render(TEST_SEED + i) for i in range(args.test_pages)])
    model = torch_detector()
    x = cal[-1:]
    rows = [{"budget": 0.0, "metric": metric(model), "speedup": [1.0, 1.0, 1.0, 0]}]
    say("exact rewrites only: optimizing")
    started = time.perf_counter()
    exact = optimize(model, x)
    rows.append({"budget": None, "optimize_s": time.perf_counter() - started, "sites": [],
                 "speedup": speedup(model, exact, x), "metric": metric(exact)})
    say(json.dumps(rows[-1]))
    runs = [(float(b), None) for b in args.budgets.split(",") if b]
    if args.metric_drop is not None:
        runs.append((max(b for b, _ in runs), args.metric_drop))
    for budget, drop in runs:
        say(f"budget {budget:g}" + (f", metric drop {drop:g}" if drop is not None else "") + ": optimizing")
        started = time.perf_counter()
        task = None if drop is None else (lambda m: metric(m)["char_acc"])
        optimized = optimize(model, x, approximate=budget, calibration=cal, metric=task,
                             max_metric_drop=drop)
        took = time.perf_counter() - started
        report = optimized.rewrite_report
        row = {"budget": budget, "metric_drop": drop, "optimize_s": took, "held_out_error": report.model_held_out_error,
               "sites": [{"site": s.name, "form": s.after, "fitted_error": s.fitted_error} for s in report.approximated],
               "model_metric": report.model_metric}
        say(f"budget {budget:g}: timing and metric")
        row["speedup"] = speedup(model, optimized, x)
        row["metric"] = metric(optimized)
        rows.append(row)
        say(json.dumps({k: v for k, v in row.items() if k != "sites"}))
    out = {"model": "PP-OCRv4 det (rapidocr-onnxruntime 1.4.4) via onnx2torch", "side": side, "rows": rows,
           "run": {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
                   "machine": f"{platform.machine()} x{__import__('os').cpu_count()}",
                   "command": "python -m tests.benchmarks.bench_approximate_torch " + " ".join(argv or sys.argv[1:])}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "approximate_torch.json").write_text(json.dumps(out, indent=2))
    lines = ["| budget | metric given to optimize() | speedup, eager (95% CI) | held-out error | sites | optimize s | "
             "det F | char acc. |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, m = r["speedup"], r["metric"]
        budget = "original" if r["budget"] == 0 else "exact only" if r["budget"] is None else f"{r['budget']:g}"
        given = "-" if r.get("metric_drop") is None else f"char acc., max drop {r['metric_drop']:g}"
        error = "-" if r.get("held_out_error") is None else f"{r['held_out_error']:.3f}"
        lines.append(f"| {budget} | {given} | {s[0]:.2f}x ({s[1]:.2f}-{s[2]:.2f}) | {error} | {len(r.get('sites', []))} | "
                     f"{r.get('optimize_s', 0):.0f} | {m['det_f']:.1f} | {m['char_acc']:.1f} |")
    (args.out / "approximate_torch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
