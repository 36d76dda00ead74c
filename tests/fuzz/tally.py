"""Counts over a fuzz run: outcomes per format, applied rewrites by kind, block types, failures."""
from __future__ import annotations

from collections import Counter, defaultdict

from .run import Outcome

STATUSES = ("ok", "wrong", "crash", "declined", "input-modified", "export-skipped")


class Tally:
    def __init__(self, formats):
        self.formats = tuple(formats)
        self.cases = 0
        self.status: dict[str, Counter] = defaultdict(Counter)      # fmt → status → n
        self.applied: dict[str, Counter] = defaultdict(Counter)     # fmt → kind → n
        self.rolled_back: Counter = Counter()                       # fmt → sites rolled back
        self.seconds: Counter = Counter()                           # fmt → time spent
        self.retried: Counter = Counter()                           # fmt → cases whose first whole-model check failed
        self.blocks: Counter = Counter()
        self.declines: Counter = Counter()                          # (fmt, message) → n
        self.failures: list[tuple[dict, Outcome]] = []
        self.worst: dict[str, tuple] = {}                           # fmt → (err / tol, seed, err, tol)

    def add(self, case: dict, outcomes: list[Outcome]) -> None:
        self.cases += 1
        self.blocks.update(b["type"] for b in case["model"]["blocks"])
        for o in outcomes:
            self.status[o.fmt][o.status] += 1
            self.applied[o.fmt].update(o.applied)
            self.rolled_back[o.fmt] += o.rolled_back
            self.retried[o.fmt] += o.retried
            self.seconds[o.fmt] += o.seconds
            if o.status == "declined":
                self.declines[(o.fmt, o.detail.splitlines()[0][:160])] += 1
            if o.failed:
                self.failures.append((case, o))
            if o.status == "ok" and o.error is not None and o.tol:
                ratio = o.error / o.tol
                if ratio >= self.worst.get(o.fmt, (-1.0,))[0]:
                    self.worst[o.fmt] = (ratio, case["seed"], o.error, o.tol)

    def first_failures(self) -> list[tuple[dict, Outcome]]:
        """The first failing case of each distinct (format, status, exception type)."""
        seen, out = set(), []
        for case, o in self.failures:
            if o.signature() not in seen:
                seen.add(o.signature())
                out.append((case, o))
        return out

    def summary(self, seconds: float, seed: int | None) -> str:
        fmts = [f for f in list(self.formats) + sorted(set(self.status) - set(self.formats)) if f in self.status]
        head = f"fuzz: {self.cases} cases in {seconds:.0f}s" + (f" (--seed {seed})" if seed is not None else "")
        rows = [("format", "runs") + STATUSES + ("rolled-back", "retried", "s/run")]
        for f in fmts:
            c = self.status[f]
            rows.append((f, str(sum(c.values()))) + tuple(str(c[s]) for s in STATUSES)
                        + (str(self.rolled_back[f]), str(self.retried[f]), f"{self.seconds[f] / max(1, sum(c.values())):.1f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [head] + ["  ".join(x.rjust(w) for x, w in zip(r, widths)) for r in rows]
        for f in fmts:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.applied[f].items())) or "none"
            lines.append(f"applied rewrites ({f}): {kinds}")
        for f, (ratio, seed, err, tol) in sorted(self.worst.items()):
            lines.append(f"closest to tolerance ({f}): case {seed}, err {err:.2e} of tol {tol:.1e}")
        lines.append("blocks: " + ", ".join(f"{k} {n}" for k, n in self.blocks.most_common()))
        for (f, message), n in self.declines.most_common(10):
            lines.append(f"declined ({f}, {n}x): {message}")
        seeds = sorted({case["seed"] for case, _ in self.failures})
        lines.append(f"FAILED: {len(self.failures)} outcome(s), case seeds {seeds}" if seeds else "no failures")
        return "\n".join(lines)
