"""The onnx and cli formats of a fuzz case: export with torch.onnx (TorchScript exporter, opset 17,
dynamic batch), rewrite with optimize_onnx() in process or `python -m rewrite` in a subprocess,
and compare the result with the original graph in onnxruntime on fresh inputs.
"""
from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from . import compare
from .graphs import build_model, example_input
from .run import Outcome, _report_counts, classify, fresh_inputs, judge

ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 300


def export(model: torch.nn.Module, x: torch.Tensor, constant_folding: bool):
    """The model as an ONNX ModelProto: input "x", outputs "y0".., batch dimension symbolic."""
    import onnx

    with torch.no_grad():
        n_out = len(compare.as_list(model(x)))
    names = [f"y{i}" for i in range(n_out)]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["x"], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in ["x"] + names}, do_constant_folding=constant_folding)
    return onnx.load_from_string(buf.getvalue())


def session(proto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _prepare(case: dict, fmt: str):
    """(model, example, proto, original outputs on the fresh inputs) or an export-skipped Outcome."""
    model, x = build_model(case["model"]), example_input(case["model"])
    fresh = fresh_inputs(case)
    try:
        proto = export(model, x, case["onnx"]["constant_folding"])
        sess = session(proto)
        originals = [sess.run(None, {"x": np.ascontiguousarray(f.numpy())}) for f in fresh]
    except Exception as exc:  # noqa: BLE001 - the exporter (or onnxruntime on its output) is not under test
        return Outcome(fmt, "export-skipped", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}")
    return model, x, proto, fresh, originals


def judge_onnx(out: Outcome, case: dict, model, proto, optimized, fresh, originals) -> Outcome:
    """Compare `optimized` with the original graph's outputs on the fresh inputs."""
    names = lambda p: ([i.name for i in p.graph.input if i.name not in {t.name for t in p.graph.initializer}],  # noqa: E731
                       [o.name for o in p.graph.output])
    if names(optimized) != names(proto):
        out.status, out.detail = "wrong", f"graph inputs/outputs {names(optimized)} != {names(proto)}"
        return out
    try:
        sess = session(optimized)
    except Exception as exc:  # noqa: BLE001
        return Outcome(out.fmt, "crash", f"onnxruntime cannot load the optimized model: {exc}", type(exc).__name__)
    budget = case["onnx"]["options"].get("factorize_error_budget")
    reference = copy.deepcopy(model).double()
    worst = (0.0, compare.FLOOR)
    for f, orig in zip(fresh, originals):
        try:
            y = sess.run(None, {"x": np.ascontiguousarray(f.numpy())})
        except Exception as exc:  # noqa: BLE001
            return Outcome(out.fmt, "crash", f"the optimized model fails on input {tuple(f.shape)}: {exc}", type(exc).__name__)
        with torch.no_grad():
            noise = compare.max_rel_error(model(f), reference(f.double()))
        tol = compare.tolerance(noise, budget, factor=2 * compare.BASELINE_FACTOR)
        worst = judge(out, compare.max_rel_error(y, orig), tol, worst)
    out.error, out.tol = worst
    return out


def run_onnx(case: dict, corrupt: bool = False, tamper=None) -> Outcome:
    """optimize_onnx() on the exported ModelProto, which must stay byte-identical.
    tamper(proto) (self-check only) changes the ModelProto right after optimize_onnx() returns."""
    from rewrite import optimize_onnx

    prepared = _prepare(case, "onnx")
    if isinstance(prepared, Outcome):
        return prepared
    model, x, proto, fresh, originals = prepared
    data = proto.SerializeToString()
    spec = case["onnx"]
    kwargs = dict(spec["options"], batch=spec["batch"], seed=spec["seed"])
    if spec["use_inputs"]:
        kwargs["inputs"] = {"x": x.numpy()}
    try:
        optimized, report = optimize_onnx(proto, **kwargs)
    except Exception as exc:  # noqa: BLE001 - classified
        return classify("onnx", exc)
    if tamper is not None:
        tamper(proto)
    if proto.SerializeToString() != data:
        return Outcome("onnx", "input-modified", "the ModelProto passed in changed")
    out = _report_counts(Outcome("onnx", "ok"), report)
    if corrupt:
        optimized = compare.corrupt_onnx(optimized)
    return judge_onnx(out, case, model, proto, optimized, fresh, originals)


def cli_args(spec: dict) -> list[str]:
    """The rewrite-onnx flags for the case's ONNX options."""
    o, args = spec["options"], ["--batch", str(spec["batch"]), "--seed", str(spec["seed"])]
    if "passes" in o:
        args.append("--passes=" + ",".join(o["passes"]))
    if "target" in o:
        args += ["--target", o["target"]]
    if o.get("check") is False:
        args.append("--no-check")
    if o.get("force_fuse"):
        args.append("--force-fuse")
    if "min_speedup" in o:
        args += ["--min-speedup", repr(o["min_speedup"])]
    if o.get("factorize_error_budget") is not None:
        args += ["--factorize-error-budget", repr(o["factorize_error_budget"])]
    return args


def run_cli(case: dict, corrupt: bool = False) -> Outcome:
    """`python -m rewrite IN -o OUT --report R ...` in a subprocess; IN must stay byte-identical."""
    import onnx

    prepared = _prepare(case, "cli")
    if isinstance(prepared, Outcome):
        return prepared
    model, x, proto, fresh, originals = prepared
    with tempfile.TemporaryDirectory(prefix="dwsep-fuzz-") as tmp:
        src, dst, rep = Path(tmp, "in.onnx"), Path(tmp, "out.onnx"), Path(tmp, "report.json")
        onnx.save(proto, str(src))
        data = src.read_bytes()
        args = [sys.executable, "-m", "rewrite", str(src), "-o", str(dst), "--report", str(rep), "-q", *cli_args(case["onnx"])]
        if case["onnx"]["use_inputs"]:
            np.savez(Path(tmp, "inputs.npz"), x=x.numpy())
            args += ["--inputs", str(Path(tmp, "inputs.npz"))]
        try:
            result = subprocess.run(args, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=ROOT,
                                    env=dict(os.environ, OMP_NUM_THREADS="1"))
        except subprocess.TimeoutExpired:
            return Outcome("cli", "crash", f"rewrite-onnx ran over {CLI_TIMEOUT_S}s", "Timeout")
        if src.read_bytes() != data:
            return Outcome("cli", "input-modified", "the input file changed")
        stderr = result.stderr.strip()
        if result.returncode == 2:
            return Outcome("cli", "declined", stderr.splitlines()[-1] if stderr else "exit code 2", "exit 2")
        if result.returncode != 0:
            return Outcome("cli", "crash", f"exit code {result.returncode}: {stderr[-600:]}", f"exit {result.returncode}")
        optimized = onnx.load(str(dst))
        sites = json.loads(rep.read_text())["sites"]
    out = Outcome("cli", "ok", applied=Counter(s["kind"] for s in sites if s["status"] == "applied"),
                  rolled_back=sum(s["status"] == "rolled_back" for s in sites))
    if corrupt:
        optimized = compare.corrupt_onnx(optimized)
    return judge_onnx(out, case, model, proto, optimized, fresh, originals)
