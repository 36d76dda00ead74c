"""`rewrite-onnx IN.onnx -o OUT.onnx`: rewrite an ONNX model from the command line.

Progress goes to stderr, the report table and a summary to stdout. Exit codes:

    0  success (the output, if asked for, is written)
    1  the optimized model failed the whole-model check even with its rewrites rolled back;
       nothing written
    2  bad input or usage (not an ONNX file, truncated, fails the checker, output would
       overwrite the input, unknown option...); nothing written
    3  unexpected internal error (a bug: please report it with the -v traceback)
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

from ..cost_model import PRESENT_GPU, PROFILES
from ..options import PASSES, RewriteOptions

RUNTIMES = ("onnxruntime", "openvino", "openvino-default")   # passes/onnx/runtimes.py: read without importing onnx
EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def _passes(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.replace(" ", ",").split(",") if p.strip())
    unknown = [p for p in names if p not in PASSES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown pass(es) {unknown}; known: {', '.join(PASSES)}")
    return names


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d < 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected NAME:D0,D1,... (e.g. input:1,3,224,224), got {text!r}")
    return name, shape


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewrite-onnx",
        description="Rewrite an ONNX CNN for speed: merge parallel linear branches (reparameterization), fold "
                    "BatchNorm, factorize / collapse depthwise-separable convs, mark fused dw+pw groups; every "
                    "rewrite checked in onnxruntime.",
        epilog="exit codes: 0 success, 1 whole-model check failed (nothing written), "
               "2 bad input or usage (nothing written), 3 internal error",
    )
    p.add_argument("input", type=Path, help="the ONNX model to rewrite (external data next to it is read)")
    p.add_argument("-o", "--output", type=Path, help="where to write the optimized model (omit for a dry run)")
    p.add_argument("--overwrite", action="store_true", help="allow the output to replace the input file")
    p.add_argument("--passes", type=_passes, default=PASSES, metavar="P[,P...]",
                   help=f"rewrite passes to run, in pipeline order (default: {','.join(PASSES)})")
    p.add_argument("--target", default=None, choices=sorted(PROFILES) + list(PRESENT_GPU),
                   help="device to optimize for: a named profile (h100, h200: to plan for a GPU elsewhere), or "
                        "cuda / gpu, the GPU present, its profile derived from its properties; fuse marking needs "
                        "a GPU target (default: cpu, where onnxruntime runs here, with the sites timed in it)")
    p.add_argument("--cost-model", choices=("measured", "analytic"), default=None,
                   help="time each site's forms in onnxruntime (measured), or predict with the target's roofline "
                        "(analytic); default: measured for the cpu target, analytic for a GPU target")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime",
                   help="where the measured cost model times each site's forms and the whole model: onnxruntime's "
                        "CPU provider (default), OpenVINO's CPU plugin at f32 (openvino), or at the CPU's default "
                        "precision, bf16 where the CPU has it (openvino-default); OpenVINO: pip install openvino. "
                        "The numerical checks run in onnxruntime whatever this says")
    p.add_argument("--timing-cache", type=Path, default=None, metavar="JSON",
                   help="timing cache file (default: $DWSEP_TIMING_CACHE or ~/.cache/dwsep-rewrite/timings.json)")
    p.add_argument("--no-timing-cache", action="store_true", help="measure every site afresh, keep nothing")
    p.add_argument("--force-fuse", action="store_true", help="run the fuse pass for --target cpu too (the measured cost model still keeps "
                        "a fused group only where onnxruntime runs it faster; with --cost-model analytic every "
                        "group the kernels can take is marked)")
    p.add_argument("--force-blocks", action="store_true",
                   help="also mark whole inverted-residual and Fused-MBConv blocks, not yet measured on a GPU "
                        "(implies --force-fuse)")
    p.add_argument("--cleanup", action=argparse.BooleanOptionalAction, default=True,
                   help="first the generic clean-up by onnxslim (constant folding, dead nodes, shape inference), "
                        "when installed (default: on)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="verify each rewrite and the whole model in onnxruntime (default: on)")
    p.add_argument("--min-speedup", type=float, default=1.05,
                   help="least speedup (measured, or predicted) to apply a merge / factorize / reverse / fuse site")
    p.add_argument("--factorize-error-budget", type=float, default=None, metavar="REL",
                   help="deprecated, --approximate supersedes it: SVD-truncated factorization within this relative error")
    p.add_argument("--approximate", type=float, default=None, metavar="REL",
                   help="opt in to approximate decoupling of dense KxK convs (depthwise/pointwise chains fitted on "
                        "--calibration), keeping the model's relative output error on held-out calibration "
                        "samples within REL; this changes what the model computes (the report lists each such site)")
    p.add_argument("--calibration", type=Path, default=None, metavar="NPZ",
                   help="calibration samples for --approximate: one array per graph input, samples stacked on the "
                        "leading axis (a quarter held out to measure the error)")
    p.add_argument("--site-tolerance", type=float, default=None, help="per-site relative error tolerance")
    p.add_argument("--model-tolerance", type=float, default=None, help="whole-model relative error tolerance")
    p.add_argument("--inputs", type=Path, default=None, metavar="NPZ",
                   help="check inputs: a .npz with one array per graph input (default: seeded random)")
    p.add_argument("--input-shape", type=_shape, action="append", default=[], metavar="NAME:D0,D1,...",
                   help="shape of the random check input NAME (repeatable); without it, dynamic dims (named, -1, 0, "
                        "empty) are --batch (first), 64 (spatial; 224, 32, 320 if the model fails at 64) or 1")
    p.add_argument("--batch", type=int, default=1, help="value of a symbolic batch dimension in the check inputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random check inputs")
    p.add_argument("--external-data", action=argparse.BooleanOptionalAction, default=None,
                   help="write tensors to OUTPUT.data (default: when the input had external data or > 2 GB)")
    p.add_argument("--report", type=Path, default=None, metavar="JSON", help="also write the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="progress per site, and tracebacks on errors")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"rewrite-onnx: {message}", file=sys.stderr, flush=True)

    def fail(code: int, message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        if args.verbose and code == EXIT_INTERNAL:
            traceback.print_exc()
        return code

    try:
        from passes.onnx.runtimes import check as check_runtime

        from .onnx_api import ModelCheckError, OnnxInputError, optimize_onnx
    except ImportError as exc:
        return fail(EXIT_BAD_INPUT, f"{exc}; install the ONNX extra: pip install 'dwsep-rewrite[onnx]'")
    options = dict(passes=args.passes, target=args.target, force_fuse=args.force_fuse, force_blocks=args.force_blocks, check=args.check,
                   min_speedup=args.min_speedup, factorize_error_budget=args.factorize_error_budget,
                   approximate=args.approximate,
                   site_tolerance=args.site_tolerance, model_tolerance=args.model_tolerance,
                   cost_model=args.cost_model, timing_cache=False if args.no_timing_cache else args.timing_cache)
    try:
        RewriteOptions(**options).choice("cpu")   # validate only: optimize_onnx builds the cost model
        check_runtime(args.runtime)
    except (ValueError, ImportError) as exc:
        return fail(EXIT_BAD_INPUT, str(exc))
    if args.batch < 1:
        return fail(EXIT_BAD_INPUT, f"--batch must be at least 1, got {args.batch}")
    if args.report is not None and not args.report.parent.is_dir():
        return fail(EXIT_BAD_INPUT, f"{args.report.parent}: report directory does not exist")
    progress(f"loading {args.input}")
    try:
        optimized, report = optimize_onnx(
            args.input, args.output, overwrite=args.overwrite, inputs=args.inputs, batch=args.batch,
            input_shapes=dict(args.input_shape) or None, seed=args.seed, external_data=args.external_data,
            progress=progress, verbose=args.verbose, cleanup=args.cleanup, runtime=args.runtime,
            calibration=args.calibration,
            **options)
    except OnnxInputError as exc:
        return fail(EXIT_BAD_INPUT, str(exc))
    except ModelCheckError as exc:
        print(exc.report)
        _write_report(exc.report, args.report)
        return fail(EXIT_CHECK_FAILED, str(exc))
    except KeyboardInterrupt:
        return fail(130, "interrupted; nothing written")
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a clear message, not a crash
        return fail(EXIT_INTERNAL, f"internal error ({type(exc).__name__}: {exc}); nothing written"
                    + ("" if args.verbose else " (run with -v for the traceback)"))
    print(report)
    print(_op_counts(args.input, optimized))
    _write_report(report, args.report)
    counts = report.counts()
    applied = ", ".join(f"{c['applied']} {kind}" for kind, c in counts.items() if c["applied"]) or "no rewrite"
    where = f"wrote {args.output}" if args.output else "dry run, nothing written (give -o OUT.onnx)"
    print(f"\nrewrite-onnx: {applied} applied; {where} in {time.perf_counter() - started:.1f}s")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rolled_back = report.by_status("rolled_back")
    if rolled_back:
        print(f"warning: {len(rolled_back)} rewrite(s) rolled back by the numerical checks (see the report)",
              file=sys.stderr)
    return EXIT_OK


def _op_counts(src: Path, optimized) -> str:
    """The op types whose count changed, before → after (as onnxsim prints them)."""
    import onnx

    def count(model):
        return Counter(f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                       for n in model.graph.node)

    before, after = count(onnx.load(str(src), load_external_data=False)), count(optimized)
    changed = sorted(op for op in before.keys() | after.keys() if before[op] != after[op])
    if not changed:
        return "\nop counts unchanged"
    width = max(len(op) for op in changed + ["op"])
    rows = [f"{'op'.ljust(width)}  before  after"]
    rows += [f"{op.ljust(width)}  {before[op]:>6}  {after[op]:>5}" for op in changed]
    return "\n" + "\n".join(rows)


def _write_report(report, path: Path | None) -> None:
    if path is not None:
        path.write_text(report.to_json())
        print(f"report written to {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
