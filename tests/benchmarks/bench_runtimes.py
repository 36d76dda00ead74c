"""Original against ours in every runtime a CPU user runs these networks in (a benchmark script, not a test).

    python -m tests.benchmarks.bench_runtimes [--models tv/mobilenet_v2,...] [--rounds 21] [--threads 2]
        [--runtimes eager,compile,compile_freezing,onnxruntime,openvino_f32,openvino_default] [--out results/runtimes_cpu]
    python -m tests.benchmarks.bench_runtimes --dry-run --out DIR/runtimes   # a tiny model, 3 rounds: the script works

For each model (models_under_test, random init with calibrated BatchNorm, eval) at --size² and
batch 1, on --threads threads everywhere:
  * eager: the original against optimize(model, x) at the CPU default (sites timed in eager; a
    fresh timing cache);
  * compile, compile_freezing: torch.compile of each (inductor, default mode), without and with
    torch._inductor.config.freezing (weights folded into the compiled graph as constants);
  * onnxruntime (CPU provider, all graph optimizations): the original's export (TorchScript
    exporter, opset 17) against optimize_onnx of it (sites timed in onnxruntime);
  * openvino_f32 / openvino_default: the same export in OpenVINO's CPU plugin at f32
    (INFERENCE_PRECISION_HINT) / at the CPU's default precision (bf16 where the CPU has it),
    against optimize_onnx(runtime="openvino" / "openvino-default") of it: each file optimized for
    the runtime it is timed in.
Each pair runs in --rounds interleaved rounds (one call each, the order alternating), after warm-up.
The ratio is the median of the per-round ratios original / ours (> 1: ours faster) with its 95%
interval (rewrite.measure.median_interval: order statistics, no assumption on the noise); times are
medians of the same rounds. Fresh-input relative error of ours against the original in the same
runtime. Writes <out>.json and <out>.md with the command, date, machine, versions and commit.
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
import sys
import tempfile
import time

import numpy as np
import torch

from rewrite import optimize, optimize_onnx
from rewrite.measure import median_interval
from tests.benchmarks.bench_onnx_files import _commit as commit
from tests.helpers import max_rel

MODELS = ("tv/mobilenet_v2", "tv/efficientnet_b0", "timm/mobileone_s0", "timm/convnext_atto")
RUNTIMES = ("eager", "compile", "compile_freezing", "onnxruntime", "openvino_f32", "openvino_default")
ONNX_RUNTIME = {"onnxruntime": "onnxruntime", "openvino_f32": "openvino", "openvino_default": "openvino-default"}


def paired(before, after, x, rounds: int) -> dict:
    """Medians and the paired ratio before / after with its 95% interval, over `rounds`
    interleaved rounds (one call each, the order alternating), after two warm-up calls each."""
    for fn in (before, after, before, after):
        fn(x)
    a, b = [], []
    for r in range(rounds):
        for fn, times in ((before, a), (after, b)) if r % 2 == 0 else ((after, b), (before, a)):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    ratios = [p / q for p, q in zip(a, b)]
    low, high = median_interval(ratios)
    return {"original_ms": 1e3 * statistics.median(a), "ours_ms": 1e3 * statistics.median(b),
            "ratio": statistics.median(ratios), "low": low, "high": high, "rounds": rounds}


def export(model, x) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, opset_version=17, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "N"}})
    return buffer.getvalue()


def ort_runner(data: bytes, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # The two sessions run in turns: with more than one thread, one session's idle workers spin
    # while the other runs and take its cores (at 2 threads the same file timed 3.2 ms against
    # 8.3 ms, 95% interval 0.51-1.20). Neither spins here, so each pair compares the models only.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def openvino_runner(data: bytes, threads: int, f32: bool):
    import openvino as ov
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if f32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = core.compile_model(core.read_model(data), "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.outputs[0]
    return lambda x: request.infer({0: x})[output]


def compiled_pair(original, ours, x, freezing: bool):
    """torch.compile of both, compiled (first call) under the same inductor config."""
    import torch._dynamo
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    fns = []
    with inductor.patch(freezing=freezing), torch.no_grad():
        for model in (original, ours):
            fn = torch.compile(model)
            fn(x)
            fns.append(fn)
    return fns


def tiny_model() -> torch.nn.Module:
    """The dry run's model: conv + BN stem, a dw → pw pair with BN (folds), a head."""
    from tests.fx_models import SeparableConv
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                SeparableConv(16, 32), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(32, 10))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def build(name: str) -> torch.nn.Module:
    if name == "tiny":
        return tiny_model()
    import models_under_test as zoo
    return zoo.build_real(name)


def bench_model(name: str, size: int, rounds: int, threads: int, runtimes: tuple, tmp: str, say) -> dict:
    model = build(name)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    fresh = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    row = {"model": name, "size": size, "runtimes": {}}
    start = time.perf_counter()
    ours = optimize(copy.deepcopy(model), x, timing_cache=os.path.join(tmp, f"{len(os.listdir(tmp))}.json"))
    report = ours.rewrite_report
    row["optimize_s"] = time.perf_counter() - start
    row["eager_applied"] = {k: c["applied"] for k, c in report.counts().items() if c["applied"]}
    row["eager_report_ci"] = report.model_measured_ci
    with torch.no_grad():
        want = model(fresh)
        if "eager" in runtimes:
            say(f"{name}: eager")
            row["runtimes"]["eager"] = {**paired(model, ours, x, rounds), "error": max_rel(ours(fresh), want)}
        for mode, freezing in (("compile", False), ("compile_freezing", True)):
            if mode in runtimes:
                say(f"{name}: {mode}")
                a, b = compiled_pair(model, ours, x, freezing)
                row["runtimes"][mode] = {**paired(a, b, x, rounds), "error": max_rel(b(fresh), a(fresh))}
    onnx_rows = [r for r in runtimes if r in ONNX_RUNTIME]
    if onnx_rows:
        source = export(model, x)
        feed, fresh_feed = x.numpy(), fresh.numpy()
        for rt in onnx_rows:
            say(f"{name}: {rt} (optimize_onnx(runtime={ONNX_RUNTIME[rt]!r}))")
            start = time.perf_counter()
            proto, onnx_report = optimize_onnx(source_proto(source), runtime=ONNX_RUNTIME[rt],
                                               timing_cache=os.path.join(tmp, f"{len(os.listdir(tmp))}.json"))
            took = time.perf_counter() - start
            data = proto.SerializeToString()
            if rt == "onnxruntime":
                a, b = ort_runner(source, threads), ort_runner(data, threads)
            else:
                a, b = (openvino_runner(d, threads, rt == "openvino_f32") for d in (source, data))
            result = paired(a, b, feed, rounds)
            error = max_rel(torch.from_numpy(np.asarray(b(fresh_feed))).double(),
                            torch.from_numpy(np.asarray(a(fresh_feed))).double())
            applied = {k: c["applied"] for k, c in onnx_report.counts().items() if c["applied"]}
            row["runtimes"][rt] = {**result, "error": error, "optimize_s": took, "applied": applied,
                                   "timed_in": onnx_report.runtime}
    return row


def source_proto(data: bytes):
    import onnx
    return onnx.load_from_string(data)


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("torchvision", "timm", "onnx", "onnxruntime", "openvino"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - not installed: recorded as such
            out[mod] = None
    return out


def markdown(result: dict) -> str:
    meta = {k: v for k, v in result.items() if k != "rows"}
    lines = ["# Original against ours in each CPU runtime", "",
             *(f"- {k}: {v}" for k, v in meta.items()), "",
             "Ratio: median of the per-round ratios original / ours (> 1: ours faster) with its 95% interval "
             "(order statistics); times: medians of the same rounds, ms. Error: ours against the original in the "
             "same runtime, fresh input.", "",
             "| model | runtime | original ms | ours ms | original / ours (95% CI) | error | applied |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if "error" in row and isinstance(row["error"], str):
            lines.append(f"| {row['model']} | error: {row['error']} | | | | | |")
            continue
        for rt, r in row["runtimes"].items():
            applied = r.get("applied", row["eager_applied"] if rt.startswith(("eager", "compile")) else {})
            applied = ", ".join(f"{k} {v}" for k, v in applied.items()) or "none"
            lines.append(f"| {row['model']} | {rt} | {r['original_ms']:.2f} | {r['ours_ms']:.2f} | "
                         f"{r['ratio']:.2f}x ({r['low']:.2f}-{r['high']:.2f}) | {r['error']:.1e} | {applied} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"a subset of {','.join(RUNTIMES)}")
    parser.add_argument("--dry-run", action="store_true", help="a tiny model at 32², 3 rounds: checks the script")
    parser.add_argument("--out", default="results/runtimes_cpu", help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    runtimes = tuple(r for r in args.runtimes.split(",") if r)
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown:
        parser.error(f"unknown runtime(s) {sorted(unknown)}; known: {', '.join(RUNTIMES)}")
    models, size, rounds = (("tiny",), 32, 3) if args.dry_run else (tuple(args.models.split(",")), args.size, args.rounds)
    torch.set_num_threads(args.threads)
    result = {"command": "python -m tests.benchmarks.bench_runtimes " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
                         f"load {os.getloadavg()[0]:.1f} at the start",
              "threads": args.threads, "batch": 1, "rounds": rounds, "versions": versions(), "commit": commit(),
              "rows": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            def say(message):
                print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr, flush=True)
            try:
                result["rows"].append(bench_model(name, size, rounds, args.threads, runtimes, tmp, say))
            except Exception as exc:  # noqa: BLE001 - one model's failure is a row, not the end of the run
                result["rows"].append({"model": name, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            print(json.dumps(result["rows"][-1]), flush=True)
    result["wall_s"] = time.perf_counter() - started
    write_outputs(result, args.out, markdown)
    return 0


def write_outputs(result: dict, out: str, markdown) -> None:
    """OUT.json (every number) and OUT.md (markdown(result)), with the load at the end of the run."""
    result["load_at_end"] = os.getloadavg()[0]
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    sys.exit(main())
