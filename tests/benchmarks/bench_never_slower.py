"""Is optimize()'s result at least as fast as the model it was given, in eager? (a benchmark script, not a test)

    python -m tests.benchmarks.bench_never_slower [--models timm/convnext_atto:224,...] [--rounds 41] [--out FILE]
    python -m tests.benchmarks.bench_never_slower --models zoo [--size 128]     # every built-in zoo model

Issue 30 item 4: at the CPU default, ConvNeXt-atto (128², 224²) and EdgeNeXt-x-small (224²) came
back 4-6% / 2.5% slower in eager, although every applied rewrite was a fold. For each model
(timm, random init; ConvNeXt-atto from models_under_test, EdgeNeXt-x-small with non-trivial norm
affines as tests/benchmarks/survey_folds.py builds it), at batch 1 and --threads threads:
  * optimize(model, x) with the defaults (sites timed; a fresh timing cache): what it applied and
    rolled back, and the whole-model timing it decided on (its report);
  * the original against that result, and, where the result has folded LayerNorms, against the
    same result with those LayerNorms given no weight and bias (the form before the fix:
    passes/records/norm.py UnitAffineLayerNorm), in --rounds interleaved rounds: the median of the
    per-round ratios original / other (> 1: faster than the original) with its 95% interval.
Writes <out>.json and <out>.md with the command, date, machine, versions and commit.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import tempfile
import time

import torch

from passes.fx.lower import UnitAffineLayerNorm
from rewrite import optimize
from tests.benchmarks.bench_runtimes import commit, paired, versions, write_outputs
from tests.helpers import max_rel

MODELS = ("timm/convnext_atto:224", "timm/convnext_atto:128", "edgenext_x_small:224")


def build(name: str) -> torch.nn.Module:
    """zoo/NAME: the built-in zoo (models_under_test.get); LIBRARY/NAME: a real model
    (models_under_test.build_real); a bare name: timm, as tests/benchmarks/survey_folds.py builds it."""
    if name.startswith("zoo/"):
        from models_under_test.registry import get
        return get(name.split("/", 1)[1])
    if "/" in name:
        import models_under_test as zoo
        return zoo.build_real(name)
    from tests.benchmarks.survey_folds import build as build_timm
    return build_timm(name).eval()


def without_affine(model: torch.nn.Module) -> torch.nn.Module | None:
    """A copy of `model` whose folded LayerNorms pass no weight and bias (the old form), or None."""
    copied = copy.deepcopy(model)
    names = [n for n, m in copied.named_modules() if isinstance(m, UnitAffineLayerNorm)]
    for name in names:
        parent, _, leaf = name.rpartition(".")
        old = copied.get_submodule(name)
        setattr(copied.get_submodule(parent) if parent else copied, leaf,
                torch.nn.LayerNorm(old.normalized_shape, eps=old.eps, elementwise_affine=False))
    return copied if names else None


def bench(spec: str, rounds: int, tmp: str) -> dict:
    name, _, size = spec.partition(":")
    size = int(size or 224)
    model = build(name)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    fresh = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    ours = optimize(model, x, timing_cache=os.path.join(tmp, f"{name.replace('/', '_')}_{size}.json"))
    report = ours.rewrite_report
    row = {"model": name, "size": size, "optimize_s": time.perf_counter() - start,
           "counts": {k: {s: n for s, n in c.items() if n} for k, c in report.counts().items()},
           "report_ci": report.model_measured_ci, "result": type(ours).__name__,
           "notes": [n for n in report.notes if "measured" in n or "kind" in n or ": the model ran" in n
                     or "against the original" in n or "unchanged" in n]}
    old = without_affine(ours)
    with torch.no_grad():
        row["ours"] = {**paired(model, ours, x, rounds), "error": max_rel(ours(fresh), model(fresh))}
        if old is not None:
            row["old_form"] = paired(model, old, x, rounds)
            row["ours_vs_old_form"] = paired(old, ours, x, rounds)
    return row


def markdown(result: dict) -> str:
    meta = {k: v for k, v in result.items() if k != "rows"}
    lines = ["# Never slower than the model given: optimize() at the CPU default, eager", "",
             *(f"- {k}: {v}" for k, v in meta.items()), "",
             "Ratios: median of per-round ratios (> 1: the second faster), 95% interval (order statistics); "
             "times: medians of the same rounds, ms. \"old form\": the result with its folded LayerNorms given no "
             "weight and bias, as fold_norm lowered them before.", "",
             "| model | size | applied / rolled back | optimize()'s own whole-model timing | original ms | ours ms | "
             "original / ours (95% CI) | original / old form (95% CI) | old form / ours (95% CI) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r and isinstance(r["error"], str):
            lines.append(f"| {r['model']} | | error: {r['error']} | | | | | | |")
            continue
        counts = "; ".join(f"{k}: " + ", ".join(f"{n} {s}" for s, n in c.items()) for k, c in r["counts"].items()
                           if set(c) - {"declined"})
        ci = r["report_ci"]
        own = f"{ci[0]:.2f}x ({ci[1]:.2f}-{ci[2]:.2f}, {ci[3]} pairs)" if ci else "-"
        o = r["ours"]

        def ratio(key):
            v = r.get(key)
            return f"{v['ratio']:.3f} ({v['low']:.3f}-{v['high']:.3f})" if v else "-"
        lines.append(f"| {r['model']} | {r['size']} | {counts} | {own} | {o['original_ms']:.2f} | {o['ours_ms']:.2f} | "
                     f"{ratio('ours')} | {ratio('old_form')} | {ratio('ours_vs_old_form')} |")
    lines += ["", "What optimize() decided (its report's notes):", ""]
    for r in result["rows"]:
        for note in r.get("notes", []):
            lines.append(f"- {r['model']} {r['size']}²: {note}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="NAME:SIZE,... (zoo: every built-in zoo model)")
    parser.add_argument("--size", type=int, default=128, help="the side of the input for --models zoo")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results/never_slower_cpu", help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"command": "python -m tests.benchmarks.bench_never_slower " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the start",
              "threads": args.threads, "rounds": args.rounds, "versions": versions(), "commit": commit(), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        from models_under_test.registry import names as zoo_names
        specs = [f"zoo/{n}:{args.size}" for n in zoo_names()] if args.models == "zoo" else args.models.split(",")
        for spec in specs:
            try:
                result["rows"].append(bench(spec, args.rounds, tmp))
            except Exception as exc:  # noqa: BLE001 - one model's failure is a row
                result["rows"].append({"model": spec, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            print(json.dumps(result["rows"][-1]), flush=True)
    write_outputs(result, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
