"""Tables, plots and the one-screen summary of a campaign result (campaign.json), with no GPU."""
import math
from pathlib import Path

LAYER_IMPLS = ["ours", "eager_nchw", "eager_cl", "compile", "compile_max"]
SE_IMPLS = ["ours", "eager_nchw", "eager_cl", "compile"]
BLOCK_IMPLS = ["ours", "ours_split", "eager_cl", "compile"]
MODEL_IMPLS = ["ours", "ours_compile", "ours_reduce_overhead", "ours_max_autotune", "eager_nchw", "eager_cl",
               "compile", "reduce_overhead", "max_autotune"]


def _num(v, pattern="{:.2f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else pattern.format(v)


def _cell(row: dict, impl: str, times: dict, errors_key: str = None) -> str:
    if impl in times:
        return _num(times[impl], "{:.1f}" if times[impl] >= 10 else "{:.3f}")
    return "fail" if impl in row.get("errors", {}) or (errors_key and errors_key in row.get("errors", {})) else "-"


def header(result: dict) -> list[str]:
    env = result["env"]
    return [f"# GPU campaign — {env.get('device')} — {env.get('date')}", "",
            f"`{result['command']}`  ",
            f"torch {env.get('torch')}, triton {env.get('triton')}, CUDA {env.get('cuda')}, torchvision "
            f"{env.get('torchvision')}, timm {env.get('timm')}; measured copy bandwidth "
            f"{_num(env.get('copy_bandwidth', float('nan')) / 1e12)} TB/s, fp16 matrix rate "
            f"{_num(env.get('fp16_matrix_rate', float('nan')) / 1e12, '{:.0f}')} TFLOP/s; sections took "
            + ", ".join(f"{k} {v:.0f}s" for k, v in result.get("section_seconds", {}).items()), ""]


def numerics_md(sec: dict) -> list[str]:
    lines = ["## Kernel numerics on the GPU (vs float64)", "",
             f"{sec['passed']} passed, {sec['failed']} failed, {sec['skipped']} skipped (time budget)", ""]
    bad = [c for c in sec["cases"] if c.get("passed") is False]
    if bad:
        lines += ["| case | error | tolerance | exception |", "|---|---|---|---|"]
        lines += [f"| {c['case']} | {_num(c.get('error'), '{:.2e}')} | {_num(c.get('tolerance'), '{:.0e}')} | "
                  f"{c.get('exception', '')} |" for c in bad]
    worst = max((c for c in sec["cases"] if "error" in c and c.get("passed")), default=None,
                key=lambda c: c["error"] / c["tolerance"])
    if worst:
        lines.append(f"Closest to its tolerance: {worst['case']} at {worst['error']:.2e} "
                     f"(tolerance {worst['tolerance']:.0e}).")
    return lines + [""]


def layers_md(title: str, sec: dict, impls: list[str]) -> list[str]:
    lines = [f"## {title} (batch {sec['batch']}, µs per call in a CUDA graph; ratio = best peer / ours)", "",
             "| layer | prec | " + " | ".join(impls) + " | best peer | ratio | % floor | notes |",
             "|" + "---|" * (len(impls) + 6)]
    for r in sec["rows"]:
        notes = "; ".join(f"{n}: {e}" for n, e in r.get("errors", {}).items())
        lines.append(f"| {r['layer']} | {r.get('precision', 'fp16')} | "
                     + " | ".join(_cell(r, n, r.get("times_us", {})) for n in impls)
                     + f" | {r.get('best_peer', '-')} | {_num(r.get('ratio'))} | "
                       f"{_num(100 * r['frac_floor'] if 'frac_floor' in r else None, '{:.0f}')} | {notes} |")
    summary = sec.get("summary", {})
    if summary and "geomean_ratio" not in summary:
        lines += ["", "| precision | geomean ratio | min ratio | layers |", "|---|---|---|---|"]
        lines += [f"| {p} | {_num(s['geomean_ratio'])} | {_num(s['min_ratio'])} | {s['layers']} |"
                  for p, s in summary.items()]
    elif summary:
        lines += ["", f"geomean ratio {_num(summary['geomean_ratio'])}, min {_num(summary['min_ratio'])} over "
                      f"{summary['layers']} layers"]
    if sec.get("skipped"):
        lines.append(f"Skipped (time budget): {', '.join(sec['skipped'])}")
    return lines + [""]


def models_md(sec: dict) -> list[str]:
    lines = ["## Whole models, `optimize(model.cuda().half())` (ms per forward, CUDA graphs; ratio = best peer / "
             "ours)", "",
             "| model | prec | batch | " + " | ".join(MODEL_IMPLS) + " | best peer | ratio | ratio, ours compiled | "
             "best of ours | vs eager CL | ours rel err | applied |", "|" + "---|" * (len(MODEL_IMPLS) + 10)]
    for r in sec["rows"]:
        applied = ", ".join(f"{k} {v}" for k, v in r.get("applied", {}).items())
        for b in sec["batches"]:
            times = r["times_ms"].get(str(b), {})
            lines.append(f"| {r['model']} | {r.get('precision', 'fp16')} | {b} | "
                         + " | ".join(_cell(r, n, times, f"{n}@{b}") for n in MODEL_IMPLS)
                         + f" | {r.get('best_peer', {}).get(str(b), '-')} | {_num(r.get('ratio', {}).get(str(b)))} | "
                           f"{_num(r.get('ratio_compiled', {}).get(str(b)))} | "
                           f"{r.get('best_ours', {}).get(str(b), '-')} {_num(r.get('ratio_best', {}).get(str(b)))} | "
                           f"{_num(r.get('vs_eager_cl', {}).get(str(b)))} | "
                           f"{_num(r['rel_err'].get(str(b), {}).get('ours'), '{:.1e}')} | {applied} |")
    errors = [f"{r['model']} {k}: {e}" for r in sec["rows"] for k, e in r.get("errors", {}).items()]
    if errors:
        lines += ["", "Errors: " + "; ".join(errors)]
    if sec.get("skipped"):
        lines.append(f"Skipped (time budget): {', '.join(sec['skipped'])}")
    return lines + [""]


def markdown(result: dict) -> str:
    lines = header(result)
    s = result["sections"]
    if "numerics" in s:
        lines += numerics_md(s["numerics"])
    if "layers" in s:
        lines += layers_md("Layer suite, fused dw+pw kernel", s["layers"], LAYER_IMPLS)
    if "se" in s:
        lines += layers_md("Squeeze-excitation layers, fp16", s["se"], SE_IMPLS)
    if "blocks" in s:
        lines += layers_md("Whole blocks (ours: one fused op; ours_split: cuDNN expansion + fused dw+pw), fp16",
                           s["blocks"], BLOCK_IMPLS)
        lines += ["Ratio of the split form: " + ", ".join(f"{r['layer']} {_num(r.get('ratio_split'))}"
                                                          for r in s["blocks"]["rows"] if "ratio_split" in r), ""]
    if "models" in s:
        lines += models_md(s["models"])
    failed = {k: v for k, v in result.get("section_errors", {}).items()}
    if failed:
        lines += ["## Sections that failed", ""] + [f"- {k}: {v}" for k, v in failed.items()]
    return "\n".join(lines) + "\n"


def summary(result: dict) -> str:
    """At most ~20 lines: what passed, the geomean ratios, whole-model ratios."""
    s, out = result["sections"], [f"{result['env'].get('device')} {result['env'].get('date')}"]
    if "numerics" in s:
        n = s["numerics"]
        out.append(f"numerics: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped")
    for key, label in (("layers", "layer suite"), ("se", "SE layers"), ("blocks", "whole blocks")):
        if key in s:
            summ = s[key]["summary"]
            summ = {"fp16": summ} if "geomean_ratio" in summ else summ
            out.append(f"{label}: " + ", ".join(f"{p} geomean {_num(v['geomean_ratio'])}x best peer "
                                                  f"(min {_num(v['min_ratio'])}, {v['layers']} layers)"
                                                  for p, v in summ.items()))
    if "models" in s:
        for r in s["models"]["rows"]:
            out.append(f"{r['model']} {r.get('precision', 'fp16')}: " + ", ".join(
                f"b{b} {_num(r.get('ratio', {}).get(str(b)))}x best peer ({r.get('best_peer', {}).get(str(b), '-')}), "
                f"compiled {_num(r.get('ratio_compiled', {}).get(str(b)))}x"
                for b in s["models"]["batches"]) + (f"; errors {list(r['errors'])}" if r.get("errors") else ""))
    for k, v in result.get("section_errors", {}).items():
        out.append(f"section {k} failed: {v}")
    return "\n".join(out)


def plots(result: dict, out: Path) -> list[Path]:
    """ratio-per-layer and ratio-per-model bar charts (PNG); none without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written, s = [], result["sections"]
    bars = []
    for key in ("layers", "se", "blocks"):
        for r in s.get(key, {}).get("rows", []):
            if "ratio" in r:
                bars.append((f"{'SE ' if key == 'se' else ''}{r['layer']} {r.get('precision', 'fp16')}", r["ratio"]))
    for r in s.get("models", {}).get("rows", []):
        for b, ratio in r.get("ratio", {}).items():
            bars.append((f"{r['model']} {r.get('precision', 'fp16')} b{b}", ratio))
    if bars:
        fig, ax = plt.subplots(figsize=(8, 0.28 * len(bars) + 1.2))
        names, ratios = zip(*bars)
        ax.barh(range(len(bars)), ratios, color=["tab:green" if v >= 1 else "tab:red" for v in ratios])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(bars)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("best peer time / our time (> 1: ours faster)")
        ax.set_title(f"{result['env'].get('device')} {result['env'].get('date')}", fontsize=9)
        fig.tight_layout()
        path = out / "campaign_ratios.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md = out / "campaign.md"
    md.write_text(markdown(result))
    return [md, *plots(result, out)]
