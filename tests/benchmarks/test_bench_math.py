"""The benchmark's pure parts on CPU: the layer suite, the floor maths, the command line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.benchmarks.bench_fused_sep_conv import (MATRIX_RATE, SUITE, floor_seconds, geomean, layer_bytes,
                                                   layer_flops, rotation)

ROOT = Path(__file__).resolve().parents[2]


def test_suite_is_the_design_reference_suite():
    assert [(l.C, l.H, l.k, l.s, l.N) for l in SUITE] == [
        (32, 112, 3, 1, 64), (64, 112, 3, 2, 128), (128, 56, 3, 1, 128), (256, 28, 3, 1, 256),
        (512, 14, 3, 1, 512), (1024, 7, 3, 1, 1024), (144, 56, 3, 1, 24), (192, 28, 3, 1, 32),
        (384, 14, 3, 1, 64), (576, 14, 3, 1, 96), (960, 7, 3, 1, 160), (240, 28, 5, 1, 40)]
    assert [l.Ho for l in SUITE[:2]] == [112, 56] and SUITE[-1].Ho == 28


def test_floor_of_a_memory_bound_layer():
    layer = SUITE[0]  # 32 -> 64 channels at 112x112: 51.4 MB in, 102.8 MB out in fp16
    assert layer_bytes(layer, 64, 2) == (64 * 112 * 112 * (32 + 64) + 32 * 9 + 32 + 64 * 32 + 64) * 2
    assert layer_flops(layer, 64) == 2 * 64 * 112 * 112 * 32 * 64
    assert floor_seconds(layer, 64, "fp16") == pytest.approx(layer_bytes(layer, 64, 2) / 3.0e12)
    assert floor_seconds(layer, 64, "fp16") == pytest.approx(51.4e-6, rel=1e-3)


def test_floor_of_a_compute_bound_layer():
    layer = SUITE[5]  # 1024 -> 1024 at 7x7: 6.58 GFLOP of pw GEMM
    flops = 2 * 64 * 49 * 1024 * 1024
    assert layer_flops(layer, 64) == flops
    assert floor_seconds(layer, 64, "fp16") == pytest.approx(flops / 800e12)  # 8.2 us > 15 MB / 3 TB/s
    assert floor_seconds(layer, 64, "tf32") == pytest.approx(flops / 400e12)
    assert floor_seconds(layer, 64, "fp32") == pytest.approx(flops / MATRIX_RATE["fp32"])
    assert floor_seconds(layer, 64, "bf16") == floor_seconds(layer, 64, "fp16")


def test_geomean_and_rotation():
    assert geomean([0.5, 2.0, 4.0]) == pytest.approx(4 ** (1 / 3))
    assert geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert rotation(200 * 2 ** 20, 50 * 2 ** 20) == 1
    assert rotation(10 * 2 ** 20, 50 * 2 ** 20) == 10
    assert rotation(1, 50 * 2 ** 20) == 16


def _bench(*args, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "tests.benchmarks.bench_fused_sep_conv", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_help():
    result = _bench("--help")
    assert result.returncode == 0 and "--out" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_fails_clearly_without_cuda(tmp_path):
    result = _bench("--out", str(tmp_path))
    assert result.returncode == 2 and "needs a CUDA GPU" in result.stderr


def test_dry_run_writes_json_and_markdown(tmp_path):
    result = _bench("--dry-run", "--layers", "5", "--dtypes", "fp32", "--peers", "eager_cl", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (report_file,) = tmp_path.glob("*.json")
    report = json.loads(report_file.read_text())
    assert {"device", "date", "torch", "triton", "command", "settings", "rows", "summary"} <= set(report)
    (row,) = report["rows"]
    assert row["layer"] == "C1024-H7-k3-s1-N1024" and row["precision"] == "tf32"
    assert set(row["times_us"]) == {"ours", "eager_cl"} and not row["errors"]
    assert row["rel_err"]["ours"] <= 1e-5  # the CPU fallback is exact fp32
    assert "| C1024-H7-k3-s1-N1024 | tf32 |" in report_file.with_suffix(".md").read_text()


def test_reparam_benchmark_pairs_rounds_and_takes_quartiles_of_the_ratios():
    from tests.benchmarks.bench_reparam import paired_rounds, ratio_quartiles

    calls = []
    fns = {k: (lambda x, k=k: calls.append(k)) for k in ("original", "ours", "ideal")}
    times = paired_rounds(fns, None, repeats=3)
    assert {k: len(v) for k, v in times.items()} == {"original": 3, "ours": 3, "ideal": 3}
    assert calls[6:] == ["original", "ours", "ideal", "ours", "ideal", "original", "ideal", "original", "ours"]
    assert ratio_quartiles([2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 1.0, 2.0, 1.0, 2.0]) == [2.0, 3.0, 3.0]
