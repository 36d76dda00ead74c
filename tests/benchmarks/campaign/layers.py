"""The DESIGN.md layer suite through tests/benchmarks/bench_fused_sep_conv (same rows, same floor).

Two passes, so that a tight budget still yields every layer against the cheap peers: first
ours vs eager NCHW / channels_last / torch.compile default for fp16 and tf32, then
max-autotune (slow to compile) for fp16, merged into the first pass's rows.
"""
from argparse import Namespace

from tests.benchmarks import bench_fused_sep_conv as bench
from tests.benchmarks.campaign.budget import Budget, error_text

CHEAP_PEERS = ["eager_nchw", "eager_cl", "compile"]


def _merge(row: dict, extra: dict, peer: str) -> None:
    """Add `peer`'s time / error from `extra` (a second run of the same layer) into `row`."""
    for key in ("times_us", "rel_err", "errors"):
        if peer in extra[key]:
            row[key][peer] = extra[key][peer]
    peers = {n: t for n, t in row["times_us"].items() if n != "ours" and n not in row["errors"]}
    if peers:
        row["best_peer"] = min(peers, key=peers.get)
        if "ours" in row["times_us"] and "ours" not in row["errors"]:
            row["ratio"] = peers[row["best_peer"]] / row["times_us"]["ours"]


def run(budget: Budget, device: str, l2_bytes: int, batch: int = 64, dry_run: bool = False,
        layers=None, precisions=("fp16", "tf32"), max_autotune: bool = True) -> dict:
    layers = list(bench.SUITE) if layers is None else layers
    args = Namespace(batch=2 if dry_run else batch, replays=1 if dry_run else 30, warmup=0 if dry_run else 3,
                     dry_run=dry_run, peers=CHEAP_PEERS)
    rows, skipped = [], []
    for precision in precisions:
        for layer in layers:
            if budget.spent():
                skipped.append(f"{layer.name} {precision}")
                continue
            try:
                rows.append(bench.run_layer(layer, precision, args, device, l2_bytes))
            except Exception as exc:  # noqa: BLE001 - recorded, the suite goes on
                rows.append(dict(layer=layer.name, precision=precision, times_us={}, errors=dict(ours=error_text(exc))))
            print(_line(rows[-1]), flush=True)
    if max_autotune and not dry_run:
        args.peers = ["compile_max"]
        for row in [r for r in rows if r["precision"] == "fp16"]:
            if budget.spent():
                skipped.append(f"{row['layer']} fp16 compile_max")
                continue
            layer = next(lay for lay in layers if lay.name == row["layer"])
            try:
                _merge(row, bench.run_layer(layer, "fp16", args, device, l2_bytes), "compile_max")
            except Exception as exc:  # noqa: BLE001
                row["errors"]["compile_max"] = error_text(exc)
            print(_line(row), flush=True)
    return dict(batch=args.batch, rows=rows, skipped=skipped, summary=bench.summary([r for r in rows if "ratio" in r]))


def _line(row: dict) -> str:
    times = " ".join(f"{n}={t:.1f}" for n, t in row.get("times_us", {}).items())
    return (f"  {row['layer']:26s} {row['precision']:5s} {times} us  ratio={row.get('ratio', float('nan')):.2f}"
            + (f"  errors={row['errors']}" if row.get("errors") else ""))
