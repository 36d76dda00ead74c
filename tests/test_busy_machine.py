"""Decisions a busy machine cannot flip (issue 20): optimize() with the measured default, once on a
quiet machine and once while busy-loop processes hold both cores, keeps the same sites. Folds and
shape-keeping merges are never timed, so no timing can undo them; a timed site is kept only when
it is faster beyond the noise, and the whole model's timing rolls back timed sites only."""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import torch
import torch.nn as nn

from rewrite import optimize
from tests.fx_models import SeparableConv, factorable_conv
from tests.helpers import batchnorm
from tests.rules.test_merge import RepVggBlock

LOAD_SECONDS = 120        # the busy loops end by themselves even if the test is killed


def _spin(until: float) -> None:
    while time.time() < until:
        pass


class Mixed(nn.Module):
    """Untimed sites (BN folds, a RepVGG merge) beside two clear-cut timed ones: a 32 → 128 3x3 conv
    of rank 1 per input channel (factorized: ~8x fewer FLOPs, milliseconds per call, so that a
    scheduler's time slice cannot dominate a pair) and a deep dw → pw pair whose collapse would
    cost ~9x the FLOPs (declined)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), batchnorm(32, seed=1), nn.ReLU())
        self.rep = RepVggBlock(32)
        self.wide = factorable_conv(32, 128, seed=2)
        self.deep = nn.Sequential(nn.Conv2d(128, 192, 1, stride=2), nn.ReLU(), SeparableConv(192, 192))

    def forward(self, x):
        return self.deep(torch.relu(self.wide(self.rep(self.stem(x)))))


def _decisions(model, x) -> list:
    report = optimize(model, x, timing_cache=False).rewrite_report
    return [(s.kind, s.name, s.status) for s in report.sites], report


def test_a_busy_machine_keeps_the_same_sites():
    torch.manual_seed(0)
    model, x = Mixed().eval(), torch.randn(2, 3, 64, 64)
    quiet, quiet_report = _decisions(model, x)
    kinds = {kind for kind, _, status in quiet if status == "applied"}
    assert {"fold", "merge", "factorize"} <= kinds, quiet_report
    until = time.time() + LOAD_SECONDS
    loads = [mp.get_context("spawn").Process(target=_spin, args=(until,), daemon=True)
             for _ in range(os.cpu_count() or 2)]
    for p in loads:
        p.start()
    try:
        busy, busy_report = _decisions(model, x)
    finally:
        for p in loads:
            p.terminate()
            p.join()
    differ = [(q, b) for q, b in zip(quiet, busy) if q != b] + [("missing", x) for x in busy[len(quiet):]]
    assert busy == quiet, f"{differ}\nquiet:\n{quiet_report}\nbusy:\n{busy_report}"
    assert not busy_report.by_status("rolled_back")
