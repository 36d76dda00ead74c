"""The fused kernel's tile table by regime (kernels/sep_conv/tiles.py) and the opt-in tuning that
persists on disk (kernels/sep_conv/tuning.py)."""
import itertools
import json
from pathlib import Path

import pytest
import torch

import kernels.sep_conv.tuning as sep_conv_tuning
from kernels.checks import Geometry, out_size
from kernels.sep_conv.tiles import SMEM_BUDGET, TABLE, Tile, tile_for
from tests.kernels.helpers import TOL, operands, reference64, rel_err

H100_RUN = Path(__file__).resolve().parents[2] / "results/gpu/2026-11-25-h100/run1/campaign.json"


def geometry(C, H, k, s, N, r=1, dtype=torch.float16, batch=8):
    Ho = out_size(H, k, s, k // 2)
    return Geometry(batch, C, r, k, k, k // 2, k // 2, H, H, N, Ho, Ho, dtype)


GRID = list(itertools.product((8, 72, 144, 960), (7, 14, 56, 112), (3, 5, 7), (1, 2), (8, 24, 40, 160, 256, 320, 1024),
                              (1, 2), (torch.float16, torch.bfloat16, torch.float32)))


def test_every_problem_gets_a_wgmma_tile_of_the_table_that_computes_dw_once():
    for C, H, k, s, N, r, dtype in GRID:
        g = geometry(C, H, k, s, N, r, dtype)
        tile = tile_for(g, s)
        assert tile in TABLE and tile.block_m >= 64
        if N <= 256:
            assert tile.block_n >= N  # one N tile: the depthwise part is computed once
        if tile.unroll_taps:
            assert r == 1 and dtype.itemsize == 2 and tile.tap_buffer_bytes(k * k, dtype.itemsize) <= SMEM_BUDGET
        assert tile in sep_conv_tuning.candidates(g)  # tuning may always fall back on the table's choice


def test_table_picks_the_h100_winners_it_can():
    """Each fp16 row of the first H100 campaign whose winning tile the table allows (BLOCK_M >= 64,
    one N tile where N <= 256) gets that tile by rule; the rest are the rows the rules exclude."""
    rows = [r for r in json.loads(H100_RUN.read_text())["sections"]["layers"]["rows"] if r["precision"] == "fp16"]
    matched, excluded = 0, []
    for row in rows:
        cfg = dict(kv.split(": ") for kv in row["config"].split(", "))
        won = Tile(int(cfg["BLOCK_M"]), int(cfg["BLOCK_N"]), int(cfg["BLOCK_K"]), int(cfg["num_warps"]),
                   cfg["UNROLL_TAPS"] == "True")
        if won.block_m < 64 or won.block_n < min(row["N"], 256):
            excluded.append(row["layer"])
            continue
        assert tile_for(geometry(row["C"], row["H"], row["k"], row["s"], row["N"], batch=64), row["s"]) == won, row
        matched += 1
    assert matched == 10 and excluded == ["C1024-H7-k3-s1-N1024", "C960-H7-k3-s1-N160"]


def test_tuned_tile_times_each_candidate_once_and_keeps_the_fastest(tmp_path):
    path, timed = tmp_path / "tiles.json", []
    times = {TABLE[0]: 3.0, TABLE[1]: 1.0, TABLE[2]: 2.0}

    def bench(tile):
        timed.append(tile)
        return times[tile]

    assert sep_conv_tuning.tuned_tile("problem A", TABLE[:3], bench, path) == TABLE[1]
    assert json.loads(path.read_text())["entries"] == {"problem A": str(TABLE[1])}
    sep_conv_tuning._memo.clear()  # a new process: read back from disk, nothing timed again
    assert sep_conv_tuning.tuned_tile("problem A", TABLE[:3], bench, path) == TABLE[1] and len(timed) == 3


def test_unreadable_tuning_file_is_ignored_and_left_alone(tmp_path):
    path = tmp_path / "tiles.json"
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="ignored"):
        assert sep_conv_tuning.tuned_tile("p", TABLE[:2], lambda t: t.block_n, path) == TABLE[0]
    assert path.read_text() == "{not json"


def test_autotuned_launch_is_correct_and_persists(fsc, tmp_path, monkeypatch):
    monkeypatch.setenv("DWSEP_AUTOTUNE", "1")
    monkeypatch.setenv("DWSEP_TUNING_CACHE", str(tmp_path / "tiles.json"))
    sep_conv_tuning._memo.clear()
    a = operands(B=2, C=8, H=6, W=5, N=16, dtype=torch.float16)
    assert rel_err(fsc.fused_sep_conv(**a), reference64(a)) <= TOL[torch.float16]
    entries = json.loads((tmp_path / "tiles.json").read_text())["entries"]
    assert len(entries) == 1 and "triton-interpreter" in next(iter(entries)) and "C8 r1 k3x3 s1 N16" in next(iter(entries))
