"""ConvNeXt-V2 and EdgeNeXt before and after optimize() on this CPU (a benchmark script, not a test).

    PYTHONPATH=. python -m tests.benchmarks.bench_folds [--models convnextv2_atto,edgenext_x_small]
        [--size 224] [--batch 1] [--rounds 20] [--out results/folds_cpu]

For each model (timm, random init with non-trivial norm affines, eval): the original and
optimize(model, x, target="cpu", passes=<the fold kinds>) in torch eager, and the original's ONNX
export (TorchScript exporter, opset 17) and optimize_onnx of it in onnxruntime (CPU provider),
timed in `--rounds` paired, interleaved rounds (the order alternating), after two warm-up calls
each. Reports medians and the median of the per-round ratios (original / optimized: > 1 is faster
after), with the quartiles of the ratio, and the fresh-input error of each optimized form.
Writes <out>.json and <out>.md with the command, date, machine, versions and commit.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from rewrite import optimize, optimize_onnx
from tests.benchmarks.survey_folds import FOLDS, build
from tests.helpers import max_rel


def paired(fns: dict, x, rounds: int) -> dict:
    names, times = list(fns), {k: [] for k in fns}
    for fn in fns.values():
        fn(x)
        fn(x)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            fns[name](x)
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: dict) -> dict:
    (a, ta), (b, tb) = times.items()
    ratios = sorted(x / y for x, y in zip(ta, tb))
    q = statistics.quantiles(ratios, n=4)
    return {"before_ms": 1e3 * statistics.median(ta), "after_ms": 1e3 * statistics.median(tb),
            "speedup_median": statistics.median(ratios), "speedup_q1": q[0], "speedup_q3": q[2]}


def export(model, x) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, opset_version=17, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "N"}})
    return buffer.getvalue()


def bench(name: str, size: int, batch: int, rounds: int) -> dict:
    import onnx
    import onnxruntime as ort
    model = build(name)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    fresh = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = copy.deepcopy(model).double()(fresh.double())
    optimized = optimize(copy.deepcopy(model), x, target="cpu", passes=FOLDS)
    applied = sum(s.status == "applied" for s in optimized.rewrite_report.sites)
    with torch.no_grad():
        eager = paired({"before": lambda t: model(t), "after": lambda t: optimized(t)}, x, rounds)
        eager_error = max_rel(optimized(fresh).double(), want)
    source = export(model, x)
    proto, report = optimize_onnx(onnx.load_from_string(source), target="cpu", passes=FOLDS)
    sessions = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (source, proto.SerializeToString())]
    feed = x.numpy()
    ortt = paired({"before": lambda t: sessions[0].run(None, {"x": t}),
                   "after": lambda t: sessions[1].run(None, {"x": t})}, feed, rounds)
    ort_error = max_rel(torch.from_numpy(sessions[1].run(None, {"x": fresh.numpy()})[0]).double(), want)
    return {"model": name, "size": size, "batch": batch, "rounds": rounds,
            "fx_applied": applied, "onnx_applied": sum(s.status == "applied" for s in report.sites),
            "eager": summary(eager), "eager_error": eager_error,
            "onnxruntime": summary(ortt), "onnxruntime_error": ort_error}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="convnextv2_atto,edgenext_x_small")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", default="results/folds_cpu")
    args = parser.parse_args(argv)
    import onnxruntime
    import timm
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = []
    for name in args.models.split(","):
        rows.append(bench(name, args.size, args.batch, args.rounds))
        print(json.dumps(rows[-1]), flush=True)
    meta = {"command": "PYTHONPATH=. python -m tests.benchmarks.bench_folds " + " ".join(sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores (shared with "
                       "other jobs), torch threads " + str(torch.get_num_threads()),
            "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "onnxruntime": onnxruntime.__version__, "commit": commit, "passes": FOLDS}
    with open(args.out + ".json", "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)
    lines = [f"# Folds on CPU: ConvNeXt-V2 and EdgeNeXt before / after optimize()", "",
             *(f"- {k}: {v}" for k, v in meta.items()), "",
             "Times are medians of paired, interleaved rounds; speedup = median of per-round before/after "
             "(> 1: faster after), [q1, q3].", "",
             "| model | runtime | before ms | after ms | speedup [q1, q3] | sites applied | fresh error |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for rt, key in (("eager", "fx_applied"), ("onnxruntime", "onnx_applied")):
            s = r[rt]
            lines.append(f"| {r['model']} {r['batch']}x3x{r['size']}² | {rt} | {s['before_ms']:.2f} | "
                         f"{s['after_ms']:.2f} | {s['speedup_median']:.3f} [{s['speedup_q1']:.3f}, "
                         f"{s['speedup_q3']:.3f}] | {r[key]} | {r[rt + '_error']:.1e} |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
