"""What to do when the whole-model check fails: retry more conservatively (shared by FX and ONNX).

Attempt 1 applied everything that passed its site check. If the whole model then misses its
tolerance, attempt 2 keeps only the folds (exact up to rounding and the most valuable), and
attempt 3 applies nothing. The skipped sites are reported as rolled back.
"""
from __future__ import annotations

import dataclasses

from .options import RewriteOptions
from .report import Report

MAX_ATTEMPTS = 3


def next_attempt(options: RewriteOptions, report: Report, attempt: int, why: str) -> tuple[RewriteOptions, str]:
    """(options for the next attempt, the note that explains it) after attempt `attempt` failed."""
    keep_folds = attempt == 0
    applied = {f"{s.kind}:{s.name}" for s in report.applied}
    skip = {key for key in applied if not (keep_folds and key.startswith("fold:"))}
    note = (f"whole-model check failed ({why}); retrying without "
            + ("the non-fold rewrites" if keep_folds else "any rewrite"))
    return dataclasses.replace(options, skip_sites=frozenset(options.skip_sites | skip)), note


def roll_back_all(report: Report) -> None:
    for site in report.applied:
        site.status, site.reason = "rolled_back", "rolled back: the whole-model check kept failing"
