"""Decision quality of the cost models on this CPU (a benchmark script, not a test).

    python -m tests.benchmarks.bench_decisions [--models tv/mobilenet_v2,...] [--repeats 20] [--out FILE]

For each real model of models_under_test (torchvision / timm, random init, calibrated BatchNorm,
eval) at --size² and batch 1 and 8, in one process on this machine's CPU:
  * optimize(model, x) with the defaults: target = the model's device (cpu), cost model
    "measured" (each merge / factorize / reverse / fuse site timed both ways; a fresh timing
    cache per run, so everything is measured);
  * the original and the optimized model, median of --repeats paired, interleaved runs: the
    optimized model must never be slower (the script reports every row where it is);
  * per timed site, the analytic roofline's pick (predicted speedup >= min_speedup) against the
    measured one: the share of sites where they agree, and the time the analytic pick would
    lose where they do not (sum over those sites of |original - rewritten| measured, as a share
    of the original model's time).
Prints a markdown table; --out writes every number as JSON with versions and the command.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time

import torch

import models_under_test as zoo
from rewrite import optimize
from tests.benchmarks.bench_reparam import paired_medians


def decisions(report, min_speedup: float) -> dict:
    """Agreement of the analytic and the measured pick over the report's timed sites."""
    timed = [s for s in report.sites if s.measured_s and s.predicted_speedup is not None]
    agree, lost_s, disagreements = 0, 0.0, []
    for s in timed:
        analytic = s.predicted_speedup >= min_speedup
        measured = s.measured_speedup >= min_speedup
        if analytic == measured:
            agree += 1
            continue
        before, after = s.measured_s
        lost = (after - before) if analytic else (before - after)   # what following the prediction costs
        lost_s += max(lost, 0.0)
        disagreements.append(dict(site=s.name, kind=s.kind, predicted=s.predicted_speedup,
                                  measured=s.measured_speedup, lost_us=max(lost, 0.0) * 1e6))
    return dict(timed=len(timed), agree=agree, lost_s=lost_s, disagreements=disagreements)


def run_model(name: str, size: int, batch: int, repeats: int) -> dict:
    model = zoo.build_real(name)
    x = torch.randn(batch, 3, size, size)
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        fast = optimize(model, x, timing_cache=f"{cache_dir}/timings.json")
        optimize_s = time.perf_counter() - start
    report = fast.rewrite_report
    with torch.no_grad():
        times = paired_medians({"original": model, "optimized": fast}, x, repeats)
    applied = {k: c["applied"] for k, c in report.counts().items() if c["applied"]}
    row = dict(model=name, batch=batch, size=size, optimize_s=optimize_s, applied=applied,
               original_ms=times["original"] * 1e3, optimized_ms=times["optimized"] * 1e3,
               speedup=times["original"] / times["optimized"], rel_error=report.model_rel_error,
               **decisions(report, 1.05))
    row["lost_share"] = row["lost_s"] / times["original"]
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| model | batch | original ms | optimized ms | speedup | applied | timed sites | analytic agrees | "
             "analytic would lose |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | error: {r['error']} | | | | | | |")
            continue
        applied = ", ".join(f"{k} {v}" for k, v in r["applied"].items())
        share = f"{r['agree']}/{r['timed']}" if r["timed"] else "-"
        lines.append(f"| {r['model']} | {r['batch']} | {r['original_ms']:.1f} | {r['optimized_ms']:.1f} | "
                     f"{r['speedup']:.2f}x | {applied} | {r['timed']} | {share} | "
                     f"{1e3 * r['lost_s']:.2f} ms ({100 * r['lost_share']:.1f}%) |")
    ok = [r for r in rows if "error" not in r]
    timed, agree = sum(r["timed"] for r in ok), sum(r["agree"] for r in ok)
    slower = [f"{r['model']} b{r['batch']} ({r['speedup']:.2f}x)" for r in ok if r["speedup"] < 1.0]
    lines += ["", f"analytic pick = measured pick at {agree}/{timed} timed sites "
                  f"({100 * agree / max(timed, 1):.0f}%); optimized slower than the original: "
                  + (", ".join(slower) if slower else "none")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_decisions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(zoo.real_names()), help="comma-separated real model names")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(zoo.real_names()))
    if unknown:
        p.error(f"unknown model(s) {unknown}; known: {zoo.real_names()}")
    rows = []
    for name in names:
        for batch in (int(b) for b in args.batches.split(",")):
            try:
                rows.append(run_model(name, args.size, batch, args.repeats))
            except Exception as exc:  # noqa: BLE001 - recorded, the benchmark goes on
                rows.append(dict(model=name, batch=batch, error=f"{type(exc).__name__}: {exc}"[:300]))
            r = rows[-1]
            print(f"{name} b{batch}: " + (r.get("error") or f"{r['speedup']:.2f}x, {r['agree']}/{r['timed']} agree, "
                                         f"optimize {r['optimize_s']:.0f}s"), file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(command="python -m tests.benchmarks.bench_decisions " + " ".join(argv or sys.argv[1:]),
                           date=time.strftime("%Y-%m-%d %H:%M"), machine=platform.processor() or platform.machine(),
                           torch=torch.__version__, threads=torch.get_num_threads(), rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
