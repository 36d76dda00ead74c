"""Structural reparameterization against timm's own (a benchmark script, not a test).

    python -m tests.benchmarks.bench_reparam [--models timm/mobileone_s0,...] [--repeats 20] [--out results.json]

For each model of models_under_test.REPARAM_MODELS (timm, random init, calibrated BatchNorm, eval),
in one run on this machine's CPU (torch threads as set by --threads):
  * torch eager, batch 1 and 8 at --size²: the original, optimize(model, x, target="cpu") and
    timm's reparameterize_model (the ideal), --repeats interleaved rounds (the order rotating);
  * onnxruntime (CPU provider): the original's ONNX export (TorchScript exporter, opset 17), the
    same file through optimize_onnx(target="cpu") (what `rewrite-onnx --target cpu` writes), and
    the export of timm's reparameterized model;
  * relative error of each against a float64 copy of the original, on a fresh input;
  * conv counts. The times are medians; the speed columns are medians of the per-round ratios
    (original/ours, and ideal/ours with its quartiles: 1.00 = as fast as the ideal).
Prints a markdown table; --out writes every number as JSON with the versions and the command.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch

import models_under_test as zoo
from rewrite import optimize, optimize_onnx
from rewrite.numerics import rel_error


def paired_rounds(fns: dict, x, repeats: int) -> dict:
    """Seconds of each callable per round, run interleaved (one round = each once, the order
    rotating from round to round) after two warm-up calls each."""
    times = {k: [] for k in fns}
    names = list(fns)
    for fn in fns.values():
        fn(x)
        fn(x)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            fns[name](x)
            times[name].append(time.perf_counter() - start)
    return times


def paired_medians(fns: dict, x, repeats: int) -> dict:
    """Median seconds of each callable over paired_rounds."""
    return _medians(paired_rounds(fns, x, repeats))


def _medians(rounds: dict) -> dict:
    return {k: statistics.median(v) for k, v in rounds.items()}


def ratio_quartiles(num: list, den: list) -> list:
    """[q1, median, q3] of the per-round ratios num_i / den_i: a pair run back to back shares the
    machine's state of the moment, so its ratio is steadier than a ratio of two medians."""
    q1, median, q3 = statistics.quantiles([a / b for a, b in zip(num, den)], n=4, method="inclusive")
    return [q1, median, q3]


def timed(fns: dict, x, repeats: int) -> dict:
    """Medians of each callable, and the quartiles of the paired ratios ideal/ours and original/ours."""
    rounds = paired_rounds(fns, x, repeats)
    out = _medians(rounds)
    out["ideal_over_ours"] = ratio_quartiles(rounds["ideal"], rounds["ours"])
    out["original_over_ours"] = ratio_quartiles(rounds["original"], rounds["ours"])
    return out


def onnx_export(model, x) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, opset_version=17, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "N"}})
    return buffer.getvalue()


def ort_session(data: bytes, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def count_convs_module(model) -> int:
    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def count_convs_graph(model) -> int:
    graph = getattr(model, "graph", None)
    if graph is None:
        return count_convs_module(model)
    calls = sum(1 for n in graph.nodes if n.op == "call_function" and "convolution" in str(n.target)
                or n.op == "call_function" and "conv2d" in str(n.target))
    modules = sum(1 for n in graph.nodes if n.op == "call_module"
                  and isinstance(model.get_submodule(n.target), torch.nn.Conv2d))
    return calls + modules


def bench_model(name: str, size: int, repeats: int, threads: int) -> dict:
    import onnx
    from timm.utils.model import reparameterize_model

    model = zoo.build_real(name)
    x1 = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    fresh = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    start = time.perf_counter()
    ours = optimize(model, x1, target="cpu")
    optimize_seconds = time.perf_counter() - start
    ideal = reparameterize_model(copy.deepcopy(model)).eval()
    reference = copy.deepcopy(model).double()
    with torch.no_grad():
        want = reference(fresh.double())
        errors = {k: rel_error(m(fresh), want) for k, m in (("original", model), ("ours", ours), ("ideal", ideal))}
    row = {"model": name, "size": size, "optimize_s": optimize_seconds,
           "merged": len([s for s in ours.rewrite_report.sites if s.kind == "merge" and s.status == "applied"]),
           "convs": {"original": count_convs_module(model), "ours": count_convs_graph(ours),
                     "ideal": count_convs_module(ideal)},
           "rel_error": errors, "eager": {}, "onnxruntime": {}}
    with torch.no_grad():
        for batch in (1, 8):
            x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(3))
            row["eager"][batch] = timed({"original": model, "ours": ours, "ideal": ideal}, x, repeats)
    original_file = onnx_export(model, x1)
    optimized, report = optimize_onnx(onnx.load_from_string(original_file), target="cpu")
    files = {"original": original_file, "ours": optimized.SerializeToString(), "ideal": onnx_export(ideal, x1)}
    sessions = {k: ort_session(v, threads) for k, v in files.items()}
    feeds = fresh.numpy()
    outputs = {k: s(feeds) for k, s in sessions.items()}
    row["onnx_rel_error"] = {k: rel_error(torch.from_numpy(np.asarray(v, np.float64)), want) for k, v in outputs.items()}
    row["onnx_merged"] = len([s for s in report.sites if s.kind == "merge" and s.status == "applied"])
    row["onnx_convs"] = {k: sum(n.op_type == "Conv" for n in onnx.load_from_string(v).graph.node)
                         for k, v in files.items()}
    for batch in (1, 8):
        x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
        row["onnxruntime"][batch] = timed(sessions, x, repeats)
    return row


def table(rows: list) -> str:
    lines = ["| model | runtime | batch | original ms | ours ms | ideal ms | ours vs original |"
             " ideal / ours (q1-q3) | convs orig → ours (ideal) | rel err ours | rel err ideal |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for runtime, key, convs, errs in (("eager", "eager", r["convs"], r["rel_error"]),
                                          ("onnxruntime", "onnxruntime", r["onnx_convs"], r["onnx_rel_error"])):
            for batch, t in r[key].items():
                lines.append(
                    f"| {r['model']} | {runtime} | {batch} | {1e3 * t['original']:.1f} | {1e3 * t['ours']:.1f} | "
                    f"{1e3 * t['ideal']:.1f} | {t['original_over_ours'][1]:.2f}x | {_quartiles(t['ideal_over_ours'])} | "
                    f"{convs['original']} → {convs['ours']} ({convs['ideal']}) | {errs['ours']:.1e} | "
                    f"{errs['ideal']:.1e} |")
    return "\n".join(lines)


def _quartiles(q: list) -> str:
    return f"{q[1]:.2f} ({q[0]:.2f}-{q[2]:.2f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.reparam_names()))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows.append(bench_model(name, args.size, args.repeats, args.threads))
    print(table(rows))
    if args.out:
        import onnxruntime
        import timm
        meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                "threads": args.threads, "torch": torch.__version__, "timm": timm.__version__,
                "onnxruntime": onnxruntime.__version__, "command": "python -m tests.benchmarks.bench_reparam "
                + " ".join(argv if argv is not None else sys.argv[1:])}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
