"""The speed/accuracy curve of approximate rewriting on an ONNX model: one point per budget.

    python -m rewrite.entry.curve det.onnx --calibration cal.npz --budgets 0.05,0.1,0.2 --out curve/ \\
        [--metric my_module:my_metric] [--threads 1]

For the exact rewrites alone (budget 0) and each budget REL it runs `optimize_onnx(approximate=REL,
calibration=...)`, writes the result, and measures:
- the whole model against the original in onnxruntime (CPU provider, `threads` threads; paired,
  interleaved calls, the median per-pair speedup and its 95% interval: rewrite.measure.compare);
- the relative output error on the held-out calibration samples (what the budget bounds);
- the time optimize_onnx took (the fits, the choice and the exact passes together);
- with a metric (a callable `metric(path_to_onnx) -> float or {name: float}`, higher is better, on
  data the calibration did not include), the metric of the original, of each result, and of the
  weight-only SVD at the same sites and ranks (each fitted conv's weight replaced by the SVD
  truncation of the same form, in the exact result: same speed as the fitted one, so only its
  metric is new).
It writes curve.json and curve.png (speedup against held-out error, and the metric where given).
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

FITTED = re.compile(r"approximate (dw→pw|pw→dw) r=(\d+)")


def speed_accuracy_curve(src, calibration, budgets, out_dir, metric=None, threads: int = 1, budget_s: float = 2.0,
                         say=lambda message: None, **options) -> dict:
    """The curve as a dict (also written to out_dir/curve.json and curve.png)."""
    from .onnx_api import optimize_onnx
    import onnx
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = []
    original = onnx.load(str(src))
    base = {"budget": 0.0, "path": str(src), "speedup": [1.0, 1.0, 1.0, 0]}
    if metric is not None:
        say("metric of the original")
        base["metric"] = _metric(metric, str(src))
    points.append(base)
    exact_path = out_dir / "exact.onnx"
    for budget in [None, *budgets]:
        name = "exact" if budget is None else f"approximate_{budget:g}"
        path = out_dir / f"{name}.onnx"
        say(f"{name}: optimizing")
        started = time.perf_counter()
        model, report = optimize_onnx(str(src), str(path), overwrite=True, approximate=budget,
                                      calibration=calibration if budget is not None else None, **options)
        took = time.perf_counter() - started
        fitted = [{"site": s.name, "form": s.after, "fitted_error": s.fitted_error,
                   "how": FITTED.search(s.reason).group(0) if FITTED.search(s.reason) else ""}
                  for s in report.approximated]
        say(f"{name}: timing against the original ({threads} thread(s))")
        speed = _whole_model_speedup(original, model, calibration, threads, budget_s)
        point = {"budget": budget, "path": str(path), "optimize_s": took, "held_out_error": report.model_held_out_error,
                 "speedup": speed, "sites": fitted}
        if metric is not None:
            say(f"{name}: metric")
            point["metric"] = _metric(metric, str(path))
            if fitted:
                svd_path = out_dir / f"{name}_weight_svd.onnx"
                _weight_svd_model(exact_path, fitted, svd_path)
                point["metric_weight_svd"] = _metric(metric, str(svd_path))
        points.append(point)
        say(f"{name}: {json.dumps({k: v for k, v in point.items() if k != 'sites'})}")
    curve = {"model": str(src), "threads": threads, "points": points,
             "note": "speedup: [median per-pair ratio original/optimized, 95% CI low, high, pairs]"}
    (out_dir / "curve.json").write_text(json.dumps(curve, indent=2))
    _plot(curve, out_dir / "curve.png")
    return curve


def _metric(metric, path: str) -> dict:
    value = metric(path)
    return dict(value) if isinstance(value, dict) else {"metric": float(value)}


def _whole_model_speedup(original, optimized, calibration, threads: int, budget_s: float) -> list:
    """[median per-pair speedup, 95% CI low, high, pairs] of the optimized model against the original
    in onnxruntime on one calibration sample."""
    import onnxruntime as ort
    from passes.onnx.runtime import user_arrays
    from ..measure import compare

    arrays = user_arrays(calibration)
    feeds = {name: a[:1] for name, a in arrays.items()}

    def session(model):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    a, b = session(original), session(optimized)
    result = compare(lambda: a.run(None, feeds), lambda: b.run(None, feeds), (), 1.0, budget_s=budget_s,
                     min_repeats=15)
    return [result.speedup, result.low, result.high, result.pairs]


def _weight_svd_model(exact_path: Path, fitted: list, out: Path) -> None:
    """The exact result with each fitted site's conv weight replaced by the weight-only SVD of the
    same form and rank (its bias kept): what SVD truncation, the data-blind baseline, would give."""
    import onnx
    import torch
    from onnx import numpy_helper
    from ..algebra.decouple import weight_svd
    from ..ir import ConvSpec

    model = onnx.load(str(exact_path))
    inits = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    for site in fitted:
        form, r = FITTED.search(site["how"]).groups()
        node = nodes[site["site"]]
        weight = numpy_helper.to_array(inits[node.input[1]])
        approx = weight_svd(ConvSpec(torch.from_numpy(weight.astype(np.float64))), form, int(r))
        name = f"{node.name}__weight_svd"
        model.graph.initializer.append(numpy_helper.from_array(approx.numpy().astype(weight.dtype), name))
        node.input[1] = name
    onnx.save(model, str(out))


def _plot(curve: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    points = [p for p in curve["points"] if p.get("held_out_error") is not None or p["budget"] in (0.0, None)]
    metrics = sorted({k for p in points for k in p.get("metric", {})})
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(5 * (1 + len(metrics)), 4), squeeze=False)
    xs = [p.get("held_out_error") or 0.0 for p in points]
    ys = [p["speedup"][0] for p in points]
    axes[0][0].plot(xs, ys, "o-")
    for p, x, y in zip(points, xs, ys):
        label = "original" if p["budget"] == 0.0 else "exact" if p["budget"] is None else f"{p['budget']:g}"
        axes[0][0].annotate(label, (x, y), fontsize=8)
    axes[0][0].set(xlabel="held-out relative output error", ylabel="speedup over the original", title="speed")
    for ax, key in zip(axes[0][1:], metrics):
        ax.plot(ys, [p["metric"][key] for p in points], "o-", label="fitted (ours)")
        svd = [(p["speedup"][0], p["metric_weight_svd"][key]) for p in points if "metric_weight_svd" in p]
        if svd:
            ax.plot(*zip(*svd), "x--", label="weight-only SVD, same sites and ranks")
        ax.set(xlabel="speedup over the original", ylabel=key, title=key)
        ax.legend(fontsize=8)
    fig.suptitle(Path(curve["model"]).name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rewrite.entry.curve", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--calibration", type=Path, required=True, metavar="NPZ")
    p.add_argument("--budgets", default="0.05,0.1,0.2", help="comma-separated REL budgets")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--metric", default=None, metavar="MODULE:FUNCTION",
                   help="a callable metric(path_to_onnx) -> float or {name: float}, higher is better")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    metric = None
    if args.metric:
        module, _, function = args.metric.partition(":")
        metric = getattr(importlib.import_module(module), function)
    budgets = [float(b) for b in args.budgets.split(",") if b]
    speed_accuracy_curve(args.model, args.calibration, budgets, args.out, metric, args.threads,
                         say=lambda m: print(f"curve: {m}", file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
