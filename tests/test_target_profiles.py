"""Issue 30 item 3: target any GPU by what it is. A profile derived from the CUDA device's
properties (a pure function of them, so derived here from the published figures of an H100 and an
H200 without a GPU), named profiles for planning off the device (h100, h200), and the report
naming the profile used."""
import json
from dataclasses import dataclass

import pytest
import torch

from rewrite import optimize
from rewrite.cost_model import BANDWIDTH_EFFICIENCY, H100, H200, RATE_EFFICIENCY, gpu_profile, profile_for
from tests.fx_models import SeparableConv


@dataclass
class Props:
    """The fields of torch.cuda.get_device_properties that gpu_profile reads (clocks in kHz)."""

    name: str
    major: int
    minor: int
    multi_processor_count: int
    clock_rate: int = 0
    memory_clock_rate: int = 0
    memory_bus_width: int = 0


# what the devices report (cudaDeviceProp): 132 SMs at 1.98 GHz; HBM3 at 2.619 GHz x 5120 bits
# (3.35 TB/s peak), HBM3e at 3.2 GHz x 6144 bits (4.9 TB/s peak; NVIDIA quotes 4.8)
H100_SXM = Props("NVIDIA H100 80GB HBM3", 9, 0, 132, 1_980_000, 2_619_000, 5120)
H200_SXM = Props("NVIDIA H200", 9, 0, 132, 1_980_000, 3_201_000, 6144)


def test_an_h100s_properties_give_the_measured_h100_profile_within_a_few_percent():
    p = gpu_profile(H100_SXM)
    assert p.is_gpu and p.name.startswith("NVIDIA H100 80GB HBM3 (derived: sm_90, 132 SMs, 3.0 TB/s")
    assert p.bandwidth == pytest.approx(2 * 2.619e9 * 5120 / 8 * BANDWIDTH_EFFICIENCY)
    assert p.bandwidth == pytest.approx(H100.bandwidth, rel=0.05)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        assert p.rate(p.matrix_rate, dtype) == pytest.approx(H100.rate(H100.matrix_rate, dtype), rel=0.05)
        assert p.rate(p.vector_rate, dtype) == pytest.approx(H100.rate(H100.vector_rate, dtype), rel=0.05)


def test_an_h200_is_an_h100s_compute_with_more_bandwidth():
    p = gpu_profile(H200_SXM)
    assert p.matrix_rate == gpu_profile(H100_SXM).matrix_rate
    assert p.bandwidth == pytest.approx(H200.bandwidth, rel=0.05) and p.bandwidth > 1.4 * H100.bandwidth
    assert "4.4 TB/s" in p.name and "assumed" not in p.name
    assert H200.matrix_rate == H100.matrix_rate and profile_for("H200") is H200


def test_an_unknown_architecture_and_missing_memory_figures_fall_back_and_say_so():
    future = gpu_profile(Props("NVIDIA Future GPU", 12, 0, 100, 2_000_000))
    assert "assumed rates of sm_100" in future.name and "assumed" in future.name and "1 TB/s" in future.name
    assert future.matrix_rate[torch.float16] == pytest.approx(100 * 2e9 * 8192 * RATE_EFFICIENCY)
    by_name = gpu_profile(Props("NVIDIA H200 NVL", 9, 0, 132, 1_785_000))   # no memory clock reported
    assert by_name.bandwidth == H200.bandwidth and "assumed" not in by_name.name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
@pytest.mark.parametrize("target", ["cuda", "gpu"])
def test_the_gpu_present_without_one_says_which_profiles_plan_off_device(target):
    with pytest.raises(ValueError, match="means the GPU present, and torch sees none here.*h100, h200"):
        profile_for(target)


def test_the_report_names_the_profile_used():
    model, x = SeparableConv(32, 64, between=torch.nn.ReLU()).eval(), torch.randn(2, 32, 16, 16)
    derived = gpu_profile(H200_SXM)
    report = optimize(model, x, target=derived, cost_model="analytic").rewrite_report
    assert report.target == derived.name and f"target {derived.name}" in str(report)
    assert optimize(model, x, target="h200").rewrite_report.target == "h200"


def test_cli_target_h200(tmp_path):
    pytest.importorskip("onnx_graphsurgeon")
    from rewrite.entry.cli import EXIT_BAD_INPUT, EXIT_OK, main

    path = tmp_path / "m.onnx"
    torch.onnx.export(SeparableConv(32, 64, between=torch.nn.ReLU()).eval(), (torch.randn(1, 32, 16, 16),),
                      str(path), opset_version=17, dynamo=False)
    assert main([str(path), "--target", "h200", "-q", "--report", str(tmp_path / "r.json")]) == EXIT_OK
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["target"] == "h200" and report["counts"]["fuse"]["applied"] == 1
    if not torch.cuda.is_available():
        assert main([str(path), "--target", "cuda", "-q"]) == EXIT_BAD_INPUT
