"""Wall-clock shares of the campaign's time budget."""
import time


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
