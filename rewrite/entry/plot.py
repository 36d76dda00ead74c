"""`python -m rewrite.entry.plot REPORT.json [-o sites.png]`: predicted against measured time per site.

Reads a report saved as JSON (`Report.to_json()`, or `rewrite-onnx --report`) of a run with the
measured cost model and draws, for every timed site, the analytic prediction (x) against the
measurement (y) of both forms, original and rewritten, on log axes with the y = x line: points
far off the line are where the roofline misjudges this device. Needs matplotlib.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KIND_COLORS = {"merge": "tab:purple", "fold": "tab:gray", "factorize": "tab:blue", "reverse": "tab:orange",
               "fuse": "tab:green"}


def timed_sites(report: dict) -> list[dict]:
    return [s for s in report.get("sites", []) if s.get("measured_s") and s.get("predicted_s")]


def plot(report: dict, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = timed_sites(report)
    if not sites:
        raise ValueError("the report has no timed site (was it made with cost_model='measured'?)")
    fig, ax = plt.subplots(figsize=(6, 5))
    for kind in dict.fromkeys(s["kind"] for s in sites):
        group = [s for s in sites if s["kind"] == kind]
        for form, marker in ((0, "o"), (1, "^")):
            ax.scatter([s["predicted_s"][form] * 1e6 for s in group], [s["measured_s"][form] * 1e6 for s in group],
                       marker=marker, color=KIND_COLORS.get(kind, "black"), alpha=0.7,
                       label=f"{kind}, {'original' if form == 0 else 'rewritten'}")
    values = [t * 1e6 for s in sites for t in s["predicted_s"] + s["measured_s"]]
    lo, hi = min(values) / 1.5, max(values) * 1.5
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="predicted (µs, analytic roofline)",
           ylabel="measured (µs)", title=f"{len(sites)} timed sites, target {report.get('target')}, "
                                         f"{report.get('dtype')}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rewrite.entry.plot", description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="a report saved as JSON")
    p.add_argument("-o", "--output", type=Path, default=None, help="PNG to write (default: REPORT with .png)")
    args = p.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
        out = plot(report, args.output or args.report.with_suffix(".png"))
    except ImportError:
        print("error: the plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.report}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
