"""Approximate decoupling on PaddleOCR's PP-OCRv4 text detector (trained weights, shipped in the
rapidocr-onnxruntime wheel), judged on the task: detection F and character accuracy of the
package's own OCR pipeline on rendered pages of known text, none of them in the calibration set.

    python -m tests.benchmarks.bench_approximate --out results/approximate/ppocr_det \\
        [--detector v4|v3] [--budgets 0.05,0.1,0.2,0.3] [--calibration-pages 20] [--test-pages 30] [--dry-run]

Writes the speed/accuracy curve (rewrite/entry/curve.py: curve.json, curve.png), and a table
(approximate.md) with, per budget: the whole-model speedup in onnxruntime (1 thread, 640x640,
paired medians and their 95% interval), the held-out output error, the sites and forms chosen,
optimize's wall time, det F and character accuracy, and the weight-only SVD at the same sites and
ranks. Needs the benchmark extras: opencv-python-headless, pyclipper, shapely (the pipeline's own).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import numpy as np

from .ocr_pages import detector_input, fonts_present, ocr_engine, render, score

CALIBRATION_SEED, TEST_SEED = 0, 1000


DETECTORS = {"v4": "ch_PP-OCRv4_det_infer.onnx", "v3": "ch_PP-OCRv3_det_infer.onnx"}
V3_WHEEL = "rapidocr-onnxruntime==1.2.3"         # the last release that shipped PP-OCRv3's detector


def detector_path(which: str = "v4") -> Path:
    """PP-OCRv4's detector from the installed rapidocr-onnxruntime; PP-OCRv3's (a different backbone,
    its own trained weights) from the 1.2.3 wheel, downloaded once into ~/.cache/dwsep-rewrite."""
    if which == "v4":
        import rapidocr_onnxruntime
        return Path(rapidocr_onnxruntime.__file__).parent / "models" / DETECTORS["v4"]
    import subprocess
    import zipfile
    cache = Path.home() / ".cache" / "dwsep-rewrite" / "models"
    path = cache / DETECTORS[which]
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", V3_WHEEL, "-d", str(cache)], check=True)
        wheel = next(cache.glob("rapidocr_onnxruntime-1.2.3-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            path.write_bytes(z.read(f"rapidocr_onnxruntime/models/{DETECTORS[which]}"))
    return path


def calibration_file(pages: int, path: Path) -> Path:
    """The detector inputs of `pages` fresh pages, stacked: the NPZ rewrite-onnx --calibration takes."""
    np.savez(path, x=np.concatenate([detector_input(render(CALIBRATION_SEED + i)) for i in range(pages)]))
    return path


def ocr_metric(test_pages: int):
    pages = [render(TEST_SEED + i) for i in range(test_pages)]

    def metric(det_path: str) -> dict:
        result = score(ocr_engine(det_model=det_path), pages)
        return {"det_f": result["det_f"], "char_acc": result["char_acc"]}
    return metric


def table(curve: dict) -> str:
    rows = ["| budget | speedup (95% CI) | held-out error | fitted sites (form) | optimize s | det F | char acc. | "
            "det F / char acc., weight SVD at the same sites and ranks |", "|---|---|---|---|---|---|---|---|"]
    for p in curve["points"]:
        s = p["speedup"]
        speed = "1.00x (original)" if p["budget"] == 0.0 else f"{s[0]:.2f}x ({s[1]:.2f}-{s[2]:.2f}, {s[3]} pairs)"
        name = "original" if p["budget"] == 0.0 else "exact rewrites only" if p["budget"] is None else f"{p['budget']:g}"
        sites = ", ".join(f"{x['site']} ({x['how']}, {x['fitted_error']:.2f})" for x in p.get("sites", [])) or "-"
        m, svd = p.get("metric", {}), p.get("metric_weight_svd")
        err = p.get("held_out_error")
        svd_text = "-" if not svd else f"{svd['det_f']:.1f} / {svd['char_acc']:.1f}"
        rows.append(f"| {name} | {speed} | {'-' if err is None else f'{err:.3f}'} | {sites} | "
                    f"{p.get('optimize_s', 0):.0f} | {m.get('det_f', float('nan')):.1f} | "
                    f"{m.get('char_acc', float('nan')):.1f} | "
                    f"{svd_text} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budgets", default="0.05,0.1,0.2,0.3")
    p.add_argument("--calibration-pages", type=int, default=20)
    p.add_argument("--test-pages", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--detector", choices=sorted(DETECTORS), default="v4", help="PP-OCRv4's (default) or PP-OCRv3's")
    p.add_argument("--dry-run", action="store_true", help="2 calibration pages, 1 test page, one budget")
    args = p.parse_args(argv)
    if not fonts_present():
        print("bench_approximate: the DejaVu fonts are missing (apt-get install fonts-dejavu-core)", file=sys.stderr)
        return 2
    if args.dry_run:
        args.calibration_pages, args.test_pages, args.budgets = 4, 1, "0.2"
    from rewrite.entry.curve import speed_accuracy_curve
    args.out.mkdir(parents=True, exist_ok=True)
    cal = calibration_file(args.calibration_pages, args.out / "calibration.npz")
    budgets = [float(b) for b in args.budgets.split(",") if b]
    curve = speed_accuracy_curve(detector_path(args.detector), cal, budgets, args.out, ocr_metric(args.test_pages), args.threads,
                                 budget_s=0.5 if args.dry_run else 3.0,
                                 say=lambda m: print(f"bench_approximate: {m}", file=sys.stderr, flush=True))
    import onnxruntime
    import torch
    curve["run"] = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()} x{__import__('os').cpu_count()}",
                    "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                    "command": "python -m tests.benchmarks.bench_approximate " + " ".join(argv or sys.argv[1:]),
                    "calibration_pages": args.calibration_pages, "test_pages": args.test_pages}
    (args.out / "curve.json").write_text(json.dumps(curve, indent=2))
    (args.out / "approximate.md").write_text(table(curve) + "\n")
    for path in args.out.glob("*.onnx"):        # the models are rebuilt by the command; keep the figures
        path.unlink()
    (args.out / "calibration.npz").unlink()
    print(table(curve))
    return 0


if __name__ == "__main__":
    sys.exit(main())
