"""`python -m tests.benchmarks.campaign --out results/ [--budget S] [--sections ...] [--dry-run]`
or `... --render results/campaign.json` (tables, plots and summary again from a recorded run)."""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from tests.benchmarks.campaign import render
from tests.benchmarks.campaign.budget import Budget, error_text

SECTIONS = ("numerics", "layers", "se", "blocks", "models")
SHARES = {"numerics": 0.1, "layers": 0.32, "se": 0.1, "blocks": 0.13, "models": 0.35}  # of the budget left after env


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.campaign",
                                description=sys.modules["tests.benchmarks.campaign"].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: results/)")
    p.add_argument("--budget", type=float, default=500.0,
                   help="seconds for the whole run (default 500: inside 9 minutes with start-up)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--models", nargs="+", help="whole models to run (default: the four of models.MODELS)")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU plumbing check: tiny batches, wall-clock timing, no compile (numbers meaningless)")
    p.add_argument("--render", type=Path, metavar="JSON", help="only rewrite tables, plots and summary from this file")
    args = p.parse_args(argv)
    if args.budget <= 0:
        p.error("--budget must be positive")
    if args.render is not None and not args.render.is_file():
        p.error(f"--render: no such file {args.render}")
    return args


def run_section(name: str, budget: Budget, device: str, env: dict, dry_run: bool, models_arg=None) -> dict:
    if name == "numerics":
        from tests.benchmarks.campaign import numerics
        return numerics.run(budget)
    if name == "layers":
        from tests.benchmarks.campaign import layers
        return layers.run(budget, device, env["l2_bytes"], dry_run=dry_run,
                          layers=None if not dry_run else list(layers.bench.SUITE[:2]))
    if name == "se":
        from tests.benchmarks.campaign import se_layers
        return se_layers.run(budget, device, env["l2_bytes"], dry_run=dry_run,
                             layers=None if not dry_run else se_layers.SUITE[:1])
    if name == "blocks":
        from tests.benchmarks.campaign import blocks
        return blocks.run(budget, device, env["l2_bytes"], dry_run=dry_run,
                          blocks=None if not dry_run else [blocks.SUITE[0], blocks.SUITE[6], blocks.SUITE[12]])
    from tests.benchmarks.campaign import models
    chosen = models_arg or (models.MODELS if not dry_run else models.MODELS[:1])
    return models.run(budget, device, dry_run=dry_run, models=chosen, jobs=models.JOBS[:1] if dry_run else models.JOBS)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        written = render.write(result, args.out)
        print(render.summary(result))
        print("wrote " + ", ".join(map(str, written)))
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print("error: the campaign needs a CUDA GPU (torch.cuda.is_available() is False); --dry-run checks "
              "the plumbing on CPU, --render redraws a recorded result", file=sys.stderr)
        return 2
    if args.dry_run and "numerics" in args.sections:
        args.sections.remove("numerics")  # the kernels' numerics on CPU are the interpreter tests' job
    device = "cpu" if args.dry_run else "cuda"
    total = Budget(args.budget)
    from tests.benchmarks.campaign.env import describe

    command = "python -m tests.benchmarks.campaign " + " ".join(sys.argv[1:] if argv is None else argv)
    result = dict(command=command, env=describe(device), sections={}, section_seconds={}, section_errors={})
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "campaign.json"
    for i, name in enumerate(args.sections):
        shares = sum(SHARES[n] for n in args.sections[i:])
        budget = Budget(max(0.0, total.left()) * SHARES[name] / shares)
        print(f"== {name} ({budget.seconds:.0f}s)", flush=True)
        start = time.monotonic()
        try:
            result["sections"][name] = run_section(name, budget, device, result["env"], args.dry_run, args.models)
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
            result["section_errors"][name] = error_text(exc)
            print(f"   section {name} failed: {error_text(exc)}", flush=True)
        result["section_seconds"][name] = time.monotonic() - start
        json_path.write_text(json.dumps(result, indent=1, default=str))  # partial results survive a timeout
    written = render.write(result, args.out)
    print(render.markdown(result))
    print("== summary")
    print(render.summary(result))
    print("wrote " + ", ".join(map(str, [json_path, *written])))
    failed = result["sections"].get("numerics", {}).get("failed", 0) or result["section_errors"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
