"""`python -m tests.fuzz`: run seeded random cases until the time is up, print the counts.

    python -m tests.fuzz --seconds 300 --seed 1                  # fuzz fx, onnx and cli for 5 minutes
    python -m tests.fuzz --case 1234567 --formats fx             # replay one case by its seed
    python -m tests.fuzz --spec out/fail-1234567-fx.json         # replay a case written by --out
    python -m tests.fuzz --self-check                            # prove the judges can fail, then stop

Every run starts with the self-check on fx and onnx (a corrupted optimized model must be judged
wrong). A failing case is shrunk (unless --no-shrink) and printed with a pasteable repro; --out
DIR also writes it there. Exit code: 0 all good, 1 a case was wrong, crashed or modified its
input, 2 the self-check failed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import random
import time
import traceback
import warnings
from pathlib import Path

import torch

from .generate import case_seed, random_case
from .run import FORMATS, Outcome, run_case
from .selfcheck import self_check
from .shrink import repro, same_failure, shrink
from .tally import Tally


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="fuzz for this long (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sequence of case seeds (default 0)")
    p.add_argument("--generator", type=int, choices=(1, 2), default=1,
                   help="case generator version: 2 adds classifier heads over [N, C] (Linear / Gemm); "
                        "1 (default) keeps every recorded seed sequence as it was")
    p.add_argument("--max-cases", type=int, default=None, help="stop after this many cases")
    p.add_argument("--case", type=int, action="append", default=[], metavar="SEED",
                   help="replay the case of this seed (repeatable) instead of fuzzing")
    p.add_argument("--spec", type=Path, action="append", default=[], metavar="JSON",
                   help="replay a case from a JSON file (as --out writes them)")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help="comma-separated subset of fx,onnx,cli (default all; cli runs on about 1 case in 4)")
    p.add_argument("--out", type=Path, default=None, help="write failing cases (JSON) and repros (.py) here")
    p.add_argument("--no-shrink", action="store_true", help="do not shrink failing cases")
    p.add_argument("--shrink-seconds", type=float, default=120.0, help="time allowed to shrink each failure")
    p.add_argument("--self-check", action="store_true", help="only run the self-check (all formats given)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every case's outcome")
    args = p.parse_args(argv)
    args.formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    bad = [f for f in args.formats if f not in FORMATS]
    if bad or not args.formats:
        p.error(f"unknown format(s) {bad}; choose from {','.join(FORMATS)}")
    return args


def quiet_torch() -> None:
    """torch.export logs warnings where a model's control flow depends on data, the exporters
    warn about tracing: none of it is the fuzzer's business (its loggers set their own levels)."""
    import torch.export  # noqa: F401 - creates the loggers silenced here

    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "torch"] + ["torch"]:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def run_one(case: dict, formats, tally: Tally, verbose: bool) -> list[Outcome]:
    """Run and tally one case; torch.export's partial graphs (printed to stderr) are dropped."""
    try:
        with contextlib.redirect_stderr(io.StringIO()) if not verbose else contextlib.nullcontext():
            outcomes = run_case(case, formats)
    except Exception as exc:  # noqa: BLE001 - a bug in the fuzzer itself still fails the run
        outcomes = [Outcome("fuzzer", "crash", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-4)}",
                            type(exc).__name__)]
    tally.add(case, outcomes)
    for o in outcomes:
        if verbose or o.failed:
            print(f"case {case['seed']}: {o}", flush=True)
    return outcomes


def fuzz(seconds: float, seed: int, formats=FORMATS, max_cases: int | None = None, verbose: bool = False,
         generator: int = 1) -> Tally:
    """Run the cases of seed's sequence until `seconds` have passed (or max_cases ran)."""
    tally, started, rng = Tally(formats), time.monotonic(), random.Random(seed)
    while time.monotonic() - started < seconds and (max_cases is None or tally.cases < max_cases):
        run_one(random_case(case_seed(rng, generator)), formats, tally, verbose)
    return tally


def report_failure(case: dict, outcome: Outcome, args) -> None:
    """Shrink one failing case, print the smallest and its repro, write both under --out."""
    small = case
    if not args.no_shrink and outcome.fmt in FORMATS:
        print(f"shrinking case {case['seed']} ({outcome.fmt} {outcome.status}) for up to {args.shrink_seconds:.0f}s",
              flush=True)
        small = shrink(case, same_failure(outcome.signature()), args.shrink_seconds, log=print)
        final = next((o for o in run_case(small, (outcome.fmt,)) if o.signature() == outcome.signature()), outcome)
        print(f"smallest case: {final}")
    snippet = repro(small, outcome.fmt)
    print(f"--- repro of case {case['seed']} ({outcome.fmt} {outcome.status}); replay: "
          f"python -m tests.fuzz --case {case['seed']} --formats {outcome.fmt}\n{snippet}\n---", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"fail-{case['seed']}-{outcome.fmt}-{outcome.status}"
        (args.out / f"{stem}.json").write_text(json.dumps({"original": case, "shrunk": small,
                                                           "outcome": str(outcome)}, indent=1))
        (args.out / f"{stem}.py").write_text(snippet + "\n")


def provenance() -> str:
    """What ran: the commit (git rev-parse HEAD, 'unknown' outside a git checkout, '+dirty' with
    uncommitted changes) and the versions of Python and the libraries the run depends on."""
    import platform
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    versions = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("onnx", "onnxruntime", "onnx_graphsurgeon", "triton", "numpy"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except Exception:  # noqa: BLE001 - a missing optional library is recorded as such
            versions.append(f"{name} -")
    return f"commit {commit}; {', '.join(versions)}; {platform.machine()}, {torch.get_num_threads()} torch threads"


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_torch()
    torch.set_num_threads(1)    # the models are tiny: more threads only contend (30x slower convs under load)
    problems = self_check(args.formats if args.self_check else tuple(f for f in args.formats if f != "cli"))
    for p in problems:
        print(f"SELF-CHECK FAILED: {p}")
    if problems:
        return 2
    print("self-check: corrupted models are judged wrong, tampered inputs input-modified", flush=True)
    print(f"ran on: {provenance()}", flush=True)
    if not args.case and not args.spec:
        print(f"case generator version {args.generator}", flush=True)
    if args.self_check:
        return 0
    started = time.monotonic()
    replays = [random_case(s) for s in args.case] + [_load(p) for p in args.spec]
    if replays:
        tally = Tally(args.formats)
        for case in replays:
            run_one(case, args.formats, tally, verbose=True)
    else:
        tally = fuzz(args.seconds, args.seed, args.formats, args.max_cases, args.verbose, args.generator)
    print(tally.summary(time.monotonic() - started, args.seed if not replays else None))
    for case, outcome in tally.first_failures():
        report_failure(case, outcome, args)
    return 1 if tally.failures else 0


def _load(path: Path) -> dict:
    data = json.loads(path.read_text())
    return data.get("shrunk", data) if "model" not in data else data
