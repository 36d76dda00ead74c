"""`python -m tests.report_sites --out DIR` / `--compare A B`: every report site (name, kind, status,
before, after, reason) of a fixed set of real models, to show that a change of structure left the
passes' decisions as they were.

The decisions are taken by the analytic cost model, so they do not depend on a timing: the same code
gives the same sites on any machine. The models: torchvision MobileNetV2, timm MobileOne-S0 and
tf_mixnet_s (seeded random weights, calibrated BatchNorm) through `optimize` for the CPU and for a
GPU profile (the fuse rules plan there), and PaddleOCR's Paddle2ONNX detector and direction
classifier (rapidocr-onnxruntime's files, trained weights) through `optimize_onnx`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

FX_MODELS = ("tv/mobilenet_v2", "timm/mobileone_s0", "timm/tf_mixnet_s")
ONNX_FILES = ("ch_PP-OCRv4_det_infer.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx")
FX_TARGETS = ("cpu", "h100")
FIELDS = ("name", "kind", "status", "before", "after", "reason")


def _fx_model(name: str) -> torch.nn.Module:
    from models_under_test.real import REAL_MODELS, build_real
    if name in REAL_MODELS:
        return build_real(name)
    import timm
    from models_under_test.initialization import calibrate_batchnorm, init_weights
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model(name.split("/", 1)[1], pretrained=False)
        init_weights(model)
        calibrate_batchnorm(model, 224)
    return model.eval()


def _rows(report) -> list[dict]:
    return [{f: getattr(site, f) for f in FIELDS} for site in report.sites]


def snapshot() -> dict:
    from rewrite import optimize, optimize_onnx
    from tests.real_models.helpers import real_file
    out = {}
    for name in FX_MODELS:
        model = _fx_model(name)
        x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
        for target in FX_TARGETS:
            started = time.perf_counter()
            result = optimize(model, x, target=target, cost_model="analytic")
            out[f"fx {name} {target}"] = _rows(result.rewrite_report)
            print(f"fx {name} {target}: {len(result.rewrite_report.sites)} sites, "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
    for file in ONNX_FILES:
        path = real_file("rapidocr_onnxruntime", f"models/{file}")
        started = time.perf_counter()
        _, report = optimize_onnx(str(path), cost_model="analytic")
        out[f"onnx {file}"] = _rows(report)
        print(f"onnx {file}: {len(report.sites)} sites, {time.perf_counter() - started:.1f} s", flush=True)
    return out


def compare(a: dict, b: dict) -> list[str]:
    """The differences between two snapshots, one line each (none: identical)."""
    lines = [f"{key}: only in the first" for key in a if key not in b]
    lines += [f"{key}: only in the second" for key in b if key not in a]
    for key in a:
        if key in b and a[key] != b[key]:
            if len(a[key]) != len(b[key]):
                lines.append(f"{key}: {len(a[key])} sites vs {len(b[key])}")
            for i, (x, y) in enumerate(zip(a[key], b[key])):
                if x != y:
                    lines.append(f"{key} site {i}: {x} != {y}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the snapshot here (JSON)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two snapshots")
    args = parser.parse_args(argv)
    if args.compare:
        diff = compare(*(json.loads(p.read_text()) for p in args.compare))
        print("\n".join(diff) or f"identical: {sum(len(v) for v in json.loads(args.compare[0].read_text()).values())} "
              "sites")
        return 1 if diff else 0
    if not args.out:
        parser.error("--out or --compare")
    args.out.write_text(json.dumps(snapshot(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
