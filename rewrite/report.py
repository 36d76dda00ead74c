"""The rewrite report: one record per site the passes looked at, plus the whole-model check.

Built once, by `build_report`, at the end of an optimize call, from what each stage returned: the
passes' `RunFacts` (sites and notes), the whole-model check's `ModelCheck`, the retries' rollbacks
and the whole-model timing. A `Report` and its `Site`s are frozen: no stage fills one in.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from .rules import RULES

KINDS = tuple(RULES)
STATUSES = ("applied", "rolled_back", "declined", "left")
# left: a BatchNorm, affine or LayerNorm affine still in the result that no rule took up as a site
# (its reason names what stands around it); kind is the rule that would have removed it


def site_key(kind: str, name: str) -> str:
    """A site's identity across re-runs of the passes: rollbacks and retries name sites by it."""
    return f"{kind}:{name}"


@dataclass(frozen=True)
class Site:
    """One place in the graph where a rewrite was considered."""

    name: str                     # graph location: module path (FX) or node name (ONNX)
    kind: str                     # a rule's kind (rewrite.rules.RULES)
    status: str                   # applied | rolled_back | declined
    reason: str = ""              # why declined / rolled back, or what was done
    predicted_speedup: float | None = None
    rel_error: float | None = None
    before: str = ""              # the chain as found, e.g. "dw3x3 32->32 → pw 32->64"
    after: str = ""               # the form it took
    predicted_s: list | None = None   # [original, rewritten] seconds, analytic roofline
    measured_s: list | None = None    # [original, rewritten] seconds, timed on the device
    measured_cached: bool = False     # measured_s came from the timing cache
    measured_ci: list | None = None   # [speedup, low, high, pairs]: the median per-pair speedup, its 95% CI
    fitted_error: float | None = None # an approximate rewrite (decouple): its relative output error on the
                                      # held-out calibration samples; None for an exact one

    @property
    def key(self) -> str:
        return site_key(self.kind, self.name)

    @property
    def measured_speedup(self) -> float | None:
        """The median per-pair speedup where known, else the ratio of the medians."""
        if self.measured_ci:
            return self.measured_ci[0]
        return None if not self.measured_s else self.measured_s[0] / self.measured_s[1]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"site kind must be one of {KINDS}, got {self.kind!r}")
        if self.status not in STATUSES:
            raise ValueError(f"site status must be one of {STATUSES}, got {self.status!r}")


@dataclass(frozen=True)
class RunFacts:
    """What one run of the passes found: the front end's pipeline returns it beside its result."""

    sites: tuple = ()
    notes: tuple = ()
    target: str = ""
    dtype: str = ""
    runtime: str = ""      # where sites were timed (the measured cost model), e.g. "onnxruntime 1.32.0 CPU"

    @property
    def applied(self) -> list[Site]:
        return [s for s in self.sites if s.status == "applied"]


@dataclass(frozen=True)
class ModelCheck:
    """The whole-model check of one run's result: its errors against the reference, and what it noted."""

    rel_error: float | None = None
    max_abs_error: float | None = None
    tolerance: float | None = None
    baseline_error: float | None = None     # the original model's own error vs float64
    budget: float | None = None             # approximate=REL: the held-out error allowed
    held_out_error: float | None = None     # with fitted sites: the rel error on the held-out calibration samples
    metric: tuple | None = None             # (original, optimized) of the user's metric, where given
    notes: tuple = ()


@dataclass(frozen=True)
class Report:
    sites: tuple = ()
    target: str = ""
    dtype: str = ""
    runtime: str = ""      # where sites and the whole model were timed, e.g. "OpenVINO 2026.4.1 CPU, f32"
    model_rel_error: float | None = None
    model_max_abs_error: float | None = None
    model_tolerance: float | None = None
    model_baseline_error: float | None = None   # the original model's own error vs float64
    model_measured_s: tuple | None = None       # (original, optimized) seconds per run, measured cost model
    model_measured_ci: tuple | None = None      # (speedup, low, high, pairs) of the same timing
    approximate_budget: float | None = None     # approximate=REL: the held-out error allowed
    model_held_out_error: float | None = None   # with fitted sites: the rel error on the held-out calibration samples
    model_metric: tuple | None = None           # (original, optimized) of the user's metric, where given
    notes: tuple = ()
    warnings: tuple = ()   # what the user must act on (the CLI prints them to stderr)

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
            "target": self.target, "dtype": self.dtype, "runtime": self.runtime,
            "model_rel_error": self.model_rel_error, "model_max_abs_error": self.model_max_abs_error,
            "model_tolerance": self.model_tolerance, "model_baseline_error": self.model_baseline_error,
            "model_measured_s": _listed(self.model_measured_s), "model_measured_ci": _listed(self.model_measured_ci),
            "approximate_budget": self.approximate_budget, "model_held_out_error": self.model_held_out_error,
            "model_metric": list(self.model_metric) if self.model_metric else self.model_metric,
            "notes": list(self.notes), "warnings": list(self.warnings),
            "counts": self.counts(), "sites": [asdict(s) for s in self.sites],
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)

    def __str__(self) -> str:
        """The table of sites (declines that share a reason at GROUP_AT or more sites on one row),
        the counts, the whole-model check and the notes."""
        header = ("site", "kind", "status", "predicted", "measured", "rel_err", "before → after / reason")
        rows = [header]
        for group in _grouped(self.sites):
            s = group[0]
            change = f"{s.before} ⇒ {s.after}" if s.after else s.before
            why = f"{change}: {s.reason}" if s.reason else change
            if len(group) > 1:
                names = ", ".join(g.name for g in group[:3]) + (", ..." if len(group) > 3 else "")
                rows.append((f"{len(group)} sites", s.kind, s.status, "", "", "", f"{s.reason} ({names})"))
                continue
            rows.append((s.name, s.kind, s.status, _fmt(s.predicted_speedup, "{:.2f}x"),
                         _fmt(s.measured_speedup, "{:.2f}x") + ("*" if s.measured_cached else ""),
                         _fmt(s.rel_error, "{:.1e}"), why))
        n = len(header) - 1
        widths = [max(len(r[i]) for r in rows) for i in range(n)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:n], widths)) + "  " + r[n] for r in rows]
        lines.insert(1, "-" * min(160, len(lines[0])))
        summary = ", ".join(
            f"{kind}: " + " ".join(f"{n} {st}" for st, n in c.items() if n) for kind, c in self.counts().items()
        ) or "no candidate sites"
        lines.append("")
        if any(s.measured_cached for s in self.sites):
            lines.append("(* measured speedup from the timing cache)")
        timed_in = f", timed in {self.runtime}" if self.runtime else ""
        lines.append(f"target {self.target}, dtype {self.dtype}{timed_in}; {summary}")
        if self.model_rel_error is not None and self.model_held_out_error is not None:
            lines.append(f"whole-model check on the check inputs: rel error {self.model_rel_error:.2e} (the fitted "
                         "sites change what the model computes: the held-out check below decides)")
        elif self.model_rel_error is not None:
            lines.append(
                f"whole-model check: rel error {self.model_rel_error:.2e}, max abs {self.model_max_abs_error:.2e} "
                f"(tolerance {self.model_tolerance:.1e}"
                + (f"; the original itself is at {self.model_baseline_error:.1e}" if self.model_baseline_error else "")
                + ")"
            )
        if self.model_measured_s:
            before, after = self.model_measured_s
            times = f"{before * 1e3:.2f} ms original, {after * 1e3:.2f} ms optimized"
            if self.model_measured_ci and self.model_measured_ci[3]:
                # the speedup is the per-pair median; each form's median time comes from different pairs, so
                # their ratio is not printed beside it (on a busy machine the two disagree)
                speedup, low, high, pairs = self.model_measured_ci
                lines.append(f"whole model, measured: {speedup:.2f}x (median of {pairs} paired calls, 95% CI "
                             f"{low:.2f}-{high:.2f}); median times {times}")
            else:
                lines.append(f"whole model, measured: {times} ({before / after:.2f}x)")
        lines.extend(self._approximate_lines())
        lines.extend(f"note: {n}" for n in self.notes)
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    @property
    def approximated(self) -> list[Site]:
        """The applied sites that change what the model computes (fitted, not exact)."""
        return [s for s in self.applied if s.fitted_error is not None]

    def _approximate_lines(self) -> list[str]:
        """The approximated sites apart from the exact rewrites: form, held-out error, measured time."""
        if self.approximate_budget is None:
            return []
        lines = ["", f"APPROXIMATE: {len(self.approximated)} site(s) change what the model computes (budget "
                 f"{self.approximate_budget:g} on held-out calibration samples)"]
        for s in self.approximated:
            timed = (f"{s.measured_s[0] * 1e3:.2f} → {s.measured_s[1] * 1e3:.2f} ms measured" if s.measured_s
                     else f"{s.predicted_speedup:.2f}x predicted")
            lines.append(f"  {s.name}: {s.before} ⇒ {s.after}, held-out error {s.fitted_error:.1e}, {timed}")
        if self.model_held_out_error is not None:
            lines.append(f"  whole model on the held-out samples: rel error {self.model_held_out_error:.2e}")
        if self.model_metric:
            lines.append(f"  metric: original {self.model_metric[0]:.4g}, optimized {self.model_metric[1]:.4g}")
        return lines


GROUP_AT = 3


def _grouped(sites: list[Site]) -> list[list[Site]]:
    """Sites in order, except that declines sharing (kind, reason) at GROUP_AT or more sites come as
    one group, where the first of them stood."""
    by_reason: dict = {}
    for s in sites:
        if s.status == "declined":
            by_reason.setdefault((s.kind, s.reason), []).append(s)
    out, seen = [], set()
    for s in sites:
        group = by_reason.get((s.kind, s.reason)) if s.status == "declined" else None
        if group is not None and len(group) >= GROUP_AT:
            if (s.kind, s.reason) not in seen:
                seen.add((s.kind, s.reason))
                out.append(group)
        else:
            out.append([s])
    return out


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _listed(value):
    return list(value) if value is not None else None


def build_report(facts: RunFacts, check: ModelCheck | None = None, rolled_back: dict | None = None,
                 notes: list | None = None, warnings: list = (), timing=None) -> Report:
    """The one place a Report is made: the run's sites, each whose key is in `rolled_back` (and
    that was applied or already rolled back by a retry) as a new Site rolled back for that reason;
    the whole-model check; `notes`, all of them in order, repeats dropped (None: the run's own);
    `timing`, the whole-model Comparison (rewrite.measure) of the measured cost model, or None."""
    rolled_back = rolled_back or {}
    notes = facts.notes if notes is None else notes
    sites = tuple(replace(site, status="rolled_back", reason=rolled_back[site.key])
                  if site.key in rolled_back and site.status not in ("declined", "left") else site
                  for site in facts.sites)
    check = check or ModelCheck()
    measured = None if timing is None else (timing.before_s, timing.after_s)
    ci = None if timing is None else (timing.speedup, timing.low, timing.high, timing.pairs)
    return Report(sites, facts.target, facts.dtype, facts.runtime, check.rel_error, check.max_abs_error,
                  check.tolerance, check.baseline_error, measured, ci, check.budget, check.held_out_error,
                  tuple(check.metric) if check.metric is not None else None, tuple(dict.fromkeys(notes)),
                  tuple(warnings))
