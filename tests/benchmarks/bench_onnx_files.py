"""Real ONNX files through `rewrite-onnx`, against the original and onnxslim's output (a benchmark
script, not a test).

    python -m tests.benchmarks.bench_onnx_files FILE[@D0xD1x...] ... [--rounds 20] [--out results/onnx_files_cpu]

For each file (optionally with the shape of its one image input, e.g. rec.onnx@1x3x48x320; a
dynamic dimension without one gets rewrite-onnx's default), in one process on this machine's CPU:
  * `rewrite-onnx FILE -o OUT` at the default target (cpu, measured cost model, a fresh timing
    cache), as a user runs it (a subprocess): exit code, wall time, the sites applied by kind,
    the whole-model error, its tolerance and the baseline that tolerance used;
  * `onnxslim.slim(FILE)`, the generic simplifier, for comparison;
  * original / onnxslim / ours, each in an onnxruntime session with its default graph
    optimizations, timed in --rounds interleaved rounds (the order rotates every round); a round
    times each model over enough runs to take ~20 ms; the speedups are medians of the per-round
    ratios (with quartiles), the times medians;
  * ours against the original in onnxruntime on the benchmark input (max normwise rel error).
Writes OUT.json (every number, the command, date, machine, versions, commit) and OUT.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _inputs(path: Path, shape: tuple | None) -> dict:
    sess = _session(path)
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        dims = shape or tuple(d if isinstance(d, int) and d > 0 else (1 if k == 0 else 64)
                              for k, d in enumerate(i.shape))
        feeds[i.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max() if b.size else 0.0
    return float(np.abs(a - b).max() / scale) if scale else float(np.abs(a - b).max() if a.size else 0.0)


def rewrite(path: Path, shape: tuple | None, out: Path, tmp: Path) -> dict:
    report_path = tmp / f"{path.stem}.report.json"
    cmd = [sys.executable, "-m", "rewrite", str(path), "-o", str(out), "-q", "--report", str(report_path),
           "--timing-cache", str(tmp / "timings.json")]
    if shape:
        name = onnx.load(str(path), load_external_data=False).graph.input[0].name
        cmd += ["--input-shape", f"{name}:{','.join(map(str, shape))}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    row = dict(command=" ".join(["rewrite-onnx"] + cmd[3:]), exit=proc.returncode, wall_s=wall,
               stderr_tail=proc.stderr.strip().splitlines()[-3:])
    if report_path.exists():
        report = json.loads(report_path.read_text())
        row.update(applied={k: c["applied"] for k, c in report["counts"].items() if c["applied"]},
                   rolled_back={k: c["rolled_back"] for k, c in report["counts"].items() if c["rolled_back"]},
                   rolled_back_why=sorted({s["reason"] for s in report["sites"] if s["status"] == "rolled_back"}),
                   verdict=report["notes"][-1] if report["notes"] else "",
                   model_rel_error=report["model_rel_error"], model_tolerance=report["model_tolerance"],
                   model_baseline_error=report["model_baseline_error"],
                   reference=next((n for n in report["notes"] if n.startswith("whole-model reference")), ""),
                   cleanup=next((n for n in report["notes"] if "clean-up" in n), ""),
                   inputs=next((n for n in report["notes"] if n.startswith("check inputs")), ""))
    return row


def slim(path: Path, out: Path) -> float:
    import onnxslim
    start = time.perf_counter()
    onnx.save_model(onnxslim.slim(str(path)), str(out))
    return time.perf_counter() - start


def timed_rounds(sessions: dict, feeds: dict, rounds: int) -> dict:
    """{name: [seconds per run, one per round]}: the models interleaved, the order rotated."""
    names = list(sessions)
    for sess in sessions.values():          # warm up, and size the inner loop to ~20 ms
        for _ in range(3):
            sess.run(None, feeds)
    start = time.perf_counter()
    sessions[names[0]].run(None, feeds)
    inner = max(1, int(0.02 / max(time.perf_counter() - start, 1e-6)))
    out = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sess = sessions[name]
            start = time.perf_counter()
            for _ in range(inner):
                sess.run(None, feeds)
            out[name].append((time.perf_counter() - start) / inner)
    return out


def quartiles(num: list, den: list) -> list:
    return statistics.quantiles([a / b for a, b in zip(num, den)], n=4, method="inclusive")


def bench_file(spec: str, rounds: int, tmp: Path) -> dict:
    path, _, shape_text = spec.partition("@")
    path = Path(path)
    shape = tuple(int(d) for d in shape_text.split("x")) if shape_text else None
    ours, slimmed = tmp / f"{path.stem}.ours.onnx", tmp / f"{path.stem}.slim.onnx"
    row = dict(file=str(path), name=path.name, shape=list(shape) if shape else None)
    row.update(rewrite(path, shape, ours, tmp))
    row["onnxslim_s"] = slim(path, slimmed)
    feeds = _inputs(path, shape)
    row["bench_input"] = {k: list(v.shape) for k, v in feeds.items()}
    sessions = {"original": _session(path), "onnxslim": _session(slimmed)}
    if row["exit"] == 0:
        sessions["ours"] = _session(ours)
        ref = sessions["original"].run(None, feeds)
        row["ours_vs_original_rel"] = max(_rel(a, b) for a, b in zip(sessions["ours"].run(None, feeds), ref)
                                          if np.issubdtype(np.asarray(b).dtype, np.floating))
    times = timed_rounds(sessions, feeds, rounds)
    row["median_s"] = {k: statistics.median(v) for k, v in times.items()}
    if "ours" in times:
        row["original_over_ours"] = quartiles(times["original"], times["ours"])
        row["onnxslim_over_ours"] = quartiles(times["onnxslim"], times["ours"])
    row["original_over_onnxslim"] = quartiles(times["original"], times["onnxslim"])
    return row


def _versions() -> dict:
    out = {"python": platform.python_version(), "onnx": onnx.__version__, "onnxruntime": ort.__version__,
           "numpy": np.__version__}
    for mod in ("onnxslim", "torch", "onnx_graphsurgeon"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    return out


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def _fmt(q: list | None) -> str:
    return f"{q[1]:.2f}x [{q[0]:.2f}, {q[2]:.2f}]" if q else "-"


def markdown(result: dict) -> str:
    lines = [f"# Real ONNX files: rewrite-onnx vs the original and onnxslim (onnxruntime, CPU)", "",
             f"- command: `{result['command']}`", f"- date: {result['date']}", f"- machine: {result['machine']}",
             f"- versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}",
             f"- commit: {result['commit']}",
             f"- timing: {result['rounds']} interleaved rounds of original / onnxslim / ours (order rotated), "
             "speedups are medians of the per-round ratios [quartiles]", "",
             "| file | input | exit | applied | whole-model err / tol (baseline) | rewrite wall | "
             "original / ours | onnxslim / ours | original / onnxslim | ours vs original |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["files"]:
        applied = ", ".join(f"{n} {k}" for k, n in r.get("applied", {}).items()) or "none"
        err = (f"{r['model_rel_error']:.1e} / {r['model_tolerance']:.1e} ({r['model_baseline_error']:.1e})"
               if r.get("model_rel_error") is not None and r.get("model_baseline_error") is not None else
               f"{r.get('model_rel_error')} / {r.get('model_tolerance')}")
        lines.append(f"| {r['name']} | {'x'.join(map(str, r['bench_input'][next(iter(r['bench_input']))]))} | "
                     f"{r['exit']} | {applied} | {err} | {r['wall_s']:.1f} s | {_fmt(r.get('original_over_ours'))} | "
                     f"{_fmt(r.get('onnxslim_over_ours'))} | {_fmt(r.get('original_over_onnxslim'))} | "
                     f"{r.get('ours_vs_original_rel', float('nan')):.1e} |")
    lines += ["", "Per file, the whole-model reference and the check inputs rewrite-onnx used:", ""]
    for r in result["files"]:
        lines.append(f"- {r['name']}: {r.get('inputs', '')}; {r.get('reference', '')}; {r.get('cleanup', '')}"
                     + (f"; rolled back {r['rolled_back']} ({'; '.join(r['rolled_back_why'])[:300]}; "
                        f"{r['verdict']})" if r.get("rolled_back") else ""))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="ONNX files, each optionally FILE@D0xD1x... (its input's shape)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    if args.out is not None and not args.out.parent.is_dir():
        p.error(f"--out: directory {args.out.parent} does not exist")   # before the work, not after it
    result = dict(command="python -m tests.benchmarks.bench_onnx_files " + " ".join(argv or sys.argv[1:]),
                  date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  machine=f"{platform.machine()} {platform.processor() or ''} x{os.cpu_count()} cpus, "
                          f"load average {os.getloadavg()[0]:.1f} at the start",
                  versions=_versions(), commit=_commit(), rounds=args.rounds, files=[])
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        for spec in args.files:
            print(f"-- {spec}", file=sys.stderr, flush=True)
            result["files"].append(bench_file(spec, args.rounds, Path(tmp)))
    result["load_average_end"] = os.getloadavg()[0]
    text = markdown(result)
    print(text)
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
        args.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
