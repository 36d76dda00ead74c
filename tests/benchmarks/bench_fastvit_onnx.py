"""FastViT through rewrite-onnx against the export of timm's own reparameterization, in onnxruntime
(a benchmark script, not a test; issue 33).

    python -m tests.benchmarks.bench_fastvit_onnx [--models fastvit_t12,fastvit_sa12] [--size 160]
        [--batch 8] [--runs 3] [--repeats 30] [--threads 2] [--out results/fastvit_onnx_cpu.json]

For each timm model (random init, calibrated BatchNorm, eval, as models_under_test builds them):
the TorchScript export (opset 17) of the original, that file through optimize_onnx(target="cpu")
(what `rewrite-onnx --target cpu` writes: sites timed in onnxruntime) and the export of timm's
`reparameterize_model` (the ideal). --runs separate runs of --repeats interleaved rounds each
(bench_reparam.paired_rounds: the order rotating), onnxruntime's CPU provider with --threads
threads; per run the median per-round ratio ours / ideal (1.00: as fast as timm's own; below 1:
faster) with its quartiles, and the op counts of each file.
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import platform
import sys
import time

import numpy as np
import torch

from models_under_test.initialization import calibrate_batchnorm, init_weights
from rewrite import optimize_onnx
from tests.benchmarks.bench_reparam import onnx_export, ort_session, paired_rounds, ratio_quartiles

OPS = ("Conv", "BatchNormalization", "Sub", "Mul", "Add")


def build(name: str, size: int, seed: int = 0):
    import timm
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False)
        init_weights(model)
        calibrate_batchnorm(model, size)
    return model.eval()


def bench(name: str, size: int, batch: int, runs: int, repeats: int, threads: int) -> dict:
    import onnx
    from timm.utils.model import reparameterize_model

    model = build(name, size)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    original = onnx_export(model, x)
    start = time.perf_counter()
    ours, report = optimize_onnx(onnx.load_from_string(original), inputs={"x": x.numpy()}, target="cpu")
    seconds = time.perf_counter() - start
    files = {"original": original, "ours": ours.SerializeToString(),
             "ideal": onnx_export(reparameterize_model(copy.deepcopy(model)).eval(), x)}
    counts = {k: collections.Counter(n.op_type for n in onnx.load_from_string(v).graph.node) for k, v in files.items()}
    sessions = {k: ort_session(v, threads) for k, v in files.items()}
    feed = np.random.default_rng(2).standard_normal((batch, 3, size, size)).astype(np.float32)
    row = {"model": name, "size": size, "batch": batch, "optimize_onnx_s": seconds,
           "merged": sum(s.kind == "merge" and s.status == "applied" for s in report.sites),
           "ops": {k: {op: c[op] for op in OPS} for k, c in counts.items()},
           "model_rel_error": report.model_rel_error, "runs": []}
    for _ in range(runs):
        rounds = paired_rounds(sessions, feed, repeats)
        row["runs"].append({"median_ms": {k: 1e3 * float(np.median(v)) for k, v in rounds.items()},
                            "ours_over_ideal": ratio_quartiles(rounds["ours"], rounds["ideal"]),
                            "ours_over_original": ratio_quartiles(rounds["ours"], rounds["original"])})
    return row


def table(rows: list) -> str:
    lines = ["| model | run | original ms | ours ms | ideal ms | ours / ideal (q1-q3) | ours / original |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for i, run in enumerate(r["runs"], 1):
            t, q = run["median_ms"], run["ours_over_ideal"]
            lines.append(f"| {r['model']} | {i} | {t['original']:.1f} | {t['ours']:.1f} | {t['ideal']:.1f} | "
                         f"{q[1]:.2f} ({q[0]:.2f}-{q[2]:.2f}) | {run['ours_over_original'][1]:.2f} |")
    lines += ["", "| model | file | " + " | ".join(OPS) + " |", "|---|---|" + "---|" * len(OPS)]
    for r in rows:
        for k, c in r["ops"].items():
            lines.append(f"| {r['model']} | {k} | " + " | ".join(str(c[op]) for op in OPS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fastvit_t12,fastvit_sa12")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows.append(bench(name, args.size, args.batch, args.runs, args.repeats, args.threads))
    print(table(rows))
    if args.out:
        import onnxruntime
        import timm
        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
                "torch": torch.__version__, "timm": timm.__version__, "onnxruntime": onnxruntime.__version__,
                "command": "python -m tests.benchmarks.bench_fastvit_onnx "
                + " ".join(argv if argv is not None else sys.argv[1:])}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
