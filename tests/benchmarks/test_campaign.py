"""The GPU campaign's CPU-side logic: arguments, the refusal without a GPU, tables, plots and the
summary rewritten from a recorded run (results/gpu/...), the option grid, and a dry run."""
import json
from pathlib import Path

import pytest
import torch

from tests.benchmarks.campaign import models, numerics, render
from tests.benchmarks.campaign.__main__ import main, parse_args

RECORDED = sorted(Path(__file__).resolve().parents[2].glob("results/gpu/*/run*/campaign.json"))


def test_recorded_runs_exist():
    assert RECORDED, "no recorded campaign under results/gpu/"


@pytest.mark.parametrize("argv, message", [(["--budget", "0"], "--budget must be positive"),
                                           (["--render", "no/such.json"], "no such file"),
                                           (["--sections", "bogus"], "invalid choice")])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_it_says_so(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "campaign.json").exists()


@pytest.mark.parametrize("recorded", RECORDED, ids=[p.parent.name for p in RECORDED])
def test_render_rewrites_tables_plot_and_summary(recorded, tmp_path, capsys):
    result = json.loads(recorded.read_text())
    assert main(["--render", str(recorded), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "campaign.md").read_text()
    assert result["env"]["device"] in md and result["env"]["torch"] in md
    for name, section in result["sections"].items():
        for row in section.get("rows", []):
            assert (row.get("layer") or row.get("model")) in md
    png = tmp_path / "campaign_ratios.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = capsys.readouterr().out
    assert len(render.summary(result).splitlines()) <= 20 and result["env"]["device"] in summary


def test_render_notes_failures():
    result = dict(command="c", env=dict(device="GPU", date="d", torch="t"), section_errors={"se": "OOM: x"},
                  sections={"numerics": dict(cases=[dict(case="grid/a", passed=False, error=float("inf"),
                                                         exception="OutOfResources: smem")],
                                             passed=0, failed=1, skipped=0)})
    md = render.markdown(result)
    assert "0 passed, 1 failed" in md and "OutOfResources: smem" in md and "se: OOM: x" in md
    assert "section se failed" in render.summary(result)


def test_model_ratios_compare_ours_with_peers_only():
    row = dict(times_ms={"1": dict(ours=2.0, ours_compile=1.0, eager_cl=4.0, compile=3.0)}, errors={})
    models.finish(row)
    assert row["best_peer"]["1"] == "compile" and row["ratio"]["1"] == 1.5 and row["ratio_compiled"]["1"] == 3.0
    assert row["vs_eager_cl"]["1"] == 2.0
    row = dict(times_ms={"1": dict(ours=2.0, compile=1.0, eager_cl=4.0)}, errors={"compile@1": "rel err"})
    assert models.finish(row)["best_peer"]["1"] == "eager_cl"  # a peer with wrong output is no peer


def test_option_grid_covers_dtypes_kernel_sizes_strides_and_only_fitting_tiles():
    cases = list(numerics.grid_cases())
    assert {(c["dtype"], c["k"], c["stride"]) for _, c, _ in cases} == {
        (d, k, s) for d in numerics.DTYPES for k in (3, 5, 7) for s in (1, 2)}
    names = [n for n, _ in numerics._jobs()]
    assert not any("-k7-" in n and n.endswith("/unrolled") for n in names)  # over the shared-memory budget
    assert any("-k3-" in n and n.endswith("/unrolled") for n in names)


def test_dry_run_writes_results(tmp_path):
    assert main(["--dry-run", "--out", str(tmp_path), "--sections", "se", "--budget", "60"]) == 0
    result = json.loads((tmp_path / "campaign.json").read_text())
    row = result["sections"]["se"]["rows"][0]
    assert result["env"]["device"] == "cpu (dry run)" and not row["errors"]
    assert set(row["times_us"]) == {"ours", "eager_nchw", "eager_cl"}


def test_dry_run_of_the_blocks_section_checks_every_form_against_float64(tmp_path):
    """The whole-block section: our fused block (with its residual), our split form and eager all
    within tolerance of float64 on the CPU (the timings of a dry run mean nothing)."""
    assert main(["--dry-run", "--out", str(tmp_path), "--sections", "blocks", "--budget", "120"]) == 0
    rows = json.loads((tmp_path / "campaign.json").read_text())["sections"]["blocks"]["rows"]
    assert {r["layer"][:3] for r in rows} == {"ir-", "fmb"}
    for row in rows:
        assert not row["errors"], row
        assert {"ours", "eager_cl"} <= set(row["times_us"]) and "ratio" in row
        assert ("ours_split" in row["times_us"]) == row["layer"].startswith("ir-")
    md = (tmp_path / "campaign.md").read_text()
    assert "Whole blocks" in md and all(r["layer"] in md for r in rows)


def test_model_jobs_put_fp16_against_every_peer_before_bf16():
    assert models.JOBS[0] == ("fp16", 0) and models.JOBS.index(("bf16", 0)) > models.JOBS.index(("fp16", 1))
    assert {p for p, _ in models.JOBS} == set(models.DTYPES) and {i for _, i in models.JOBS} == {0, 1, 2}
    assert all(f"ours_{peer}" in sum(models.PASSES, ()) for peer in ("reduce_overhead", "max_autotune"))
