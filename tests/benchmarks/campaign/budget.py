"""Wall-clock shares of the campaign's time budget, and the per-row loops of its layer-like sections."""
import time

import torch


class Budget:
    """A deadline: ``left()`` seconds remain, ``spent()`` once it has passed."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def spent(self) -> bool:
        return self.left() <= 0


def error_text(exc: BaseException) -> str:
    """One line naming an exception, for a result file."""
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


def rows_within(budget: Budget, items, measure, label: str) -> tuple[list, list]:
    """(rows, skipped names): measure(item) for each item (with a .name) while the budget lasts;
    an exception becomes a row with the error under "ours", and each row is printed as it comes."""
    rows, skipped = [], []
    for item in items:
        if budget.spent():
            skipped.append(item.name)
            continue
        try:
            rows.append(measure(item))
        except Exception as exc:  # noqa: BLE001 - recorded, the suite goes on
            rows.append(dict(layer=item.name, times_us={}, errors=dict(ours=error_text(exc))))
        r = rows[-1]
        print(f"  {label} {r['layer']:40s} " + " ".join(f"{n}={t:.1f}" for n, t in r["times_us"].items())
              + f" us ratio={r.get('ratio', float('nan')):.2f}" + (f" errors={r['errors']}" if r["errors"] else ""),
              flush=True)
    return rows, skipped


def time_forms(row: dict, forms: dict, x, ref, n_rot: int, tolerance: float, dry_run: bool) -> None:
    """For each name → (module, memory format) of `forms`: its relative error against the float64
    `ref` on x (NaN or inf fails), recorded as an error beyond `tolerance`, and its time in µs over
    n_rot rotating inputs (a CUDA graph, or one wall-clock call in a dry run), all into `row`."""
    from tests.benchmarks import bench_fused_sep_conv as bench

    timer = bench.wall_time if dry_run else bench.cuda_graph_time
    for name, (fn, fmt) in forms.items():
        inputs = [x.contiguous(memory_format=fmt)] + [torch.randn_like(x).contiguous(memory_format=fmt)
                                                      for _ in range(n_rot - 1)]
        try:
            with torch.no_grad():
                y = fn(inputs[0])
                err = ((y.double() - ref).abs().max() / ref.abs().max()).item() if torch.isfinite(y).all() \
                    else float("inf")
                row["rel_err"][name] = err
                if not err <= tolerance:
                    row["errors"][name] = f"rel err {err:.2e} > {tolerance:.0e}"
                row["times_us"][name] = timer(fn, inputs, 1 if dry_run else 30, 0 if dry_run else 3) * 1e6
        except Exception as exc:  # noqa: BLE001 - recorded, the suite goes on
            row["errors"][name] = error_text(exc)
