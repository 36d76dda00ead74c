"""The rewrite report: one record per site the passes looked at, plus the whole-model check."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

KINDS = ("merge", "fold", "factorize", "reverse", "fuse")
STATUSES = ("applied", "rolled_back", "declined")


@dataclass
class Site:
    """One place in the graph where a rewrite was considered."""

    name: str                     # graph location: module path (FX) or node name (ONNX)
    kind: str                     # merge | fold | factorize | reverse | fuse
    status: str                   # applied | rolled_back | declined
    reason: str = ""              # why declined / rolled back, or what was done
    predicted_speedup: float | None = None
    rel_error: float | None = None
    before: str = ""              # the chain as found, e.g. "dw3x3 32->32 → pw 32->64"
    after: str = ""               # the form it took

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"site kind must be one of {KINDS}, got {self.kind!r}")
        if self.status not in STATUSES:
            raise ValueError(f"site status must be one of {STATUSES}, got {self.status!r}")


@dataclass
class Report:
    sites: list[Site] = field(default_factory=list)
    target: str = ""
    dtype: str = ""
    model_rel_error: float | None = None
    model_max_abs_error: float | None = None
    model_tolerance: float | None = None
    model_baseline_error: float | None = None   # the original model's own error vs float64
    notes: list[str] = field(default_factory=list)

    def add(self, site: Site) -> Site:
        self.sites.append(site)
        return site

    def by_status(self, status: str) -> list[Site]:
        return [s for s in self.sites if s.status == status]

    @property
    def applied(self) -> list[Site]:
        return self.by_status("applied")

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for s in self.sites:
            out.setdefault(s.kind, {k: 0 for k in STATUSES})[s.status] += 1
        return out

    def to_dict(self) -> dict:
        return {
            "target": self.target, "dtype": self.dtype,
            "model_rel_error": self.model_rel_error, "model_max_abs_error": self.model_max_abs_error,
            "model_tolerance": self.model_tolerance, "model_baseline_error": self.model_baseline_error,
            "notes": list(self.notes),
            "counts": self.counts(), "sites": [asdict(s) for s in self.sites],
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)

    def __str__(self) -> str:
        header = ("site", "kind", "status", "speedup", "rel_err", "before → after / reason")
        rows = [header]
        for s in self.sites:
            change = f"{s.before} ⇒ {s.after}" if s.after else s.before
            why = f"{change}: {s.reason}" if s.reason else change
            rows.append((s.name, s.kind, s.status, _fmt(s.predicted_speedup, "{:.2f}x"), _fmt(s.rel_error, "{:.1e}"), why))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
        lines.insert(1, "-" * min(160, len(lines[0])))
        summary = ", ".join(
            f"{kind}: " + " ".join(f"{n} {st}" for st, n in c.items() if n) for kind, c in self.counts().items()
        ) or "no candidate sites"
        lines.append("")
        lines.append(f"target {self.target}, dtype {self.dtype}; {summary}")
        if self.model_rel_error is not None:
            lines.append(
                f"whole-model check: rel error {self.model_rel_error:.2e}, max abs {self.model_max_abs_error:.2e} "
                f"(tolerance {self.model_tolerance:.1e}"
                + (f"; the original itself is at {self.model_baseline_error:.1e}" if self.model_baseline_error else "")
                + ")"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)
