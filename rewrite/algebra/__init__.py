"""Pure functions over the chain IR: fold, rank test, factorize, collapse, merge a mixed depthwise conv
(float64 inside)."""
from .collapse import (check_collapse_dw_pw, check_collapse_pair, check_collapse_pw_dw, collapse_dw_pw, collapse_pair,
                       collapse_pw_dw)
from .factorize import dw_pw_rank_for_budget, factorize_dw_pw, factorize_pw_dw
from .fold import (absorb_pad, check_fold_affine_before, check_fold_scale_before, compose_affines, fold_affine,
                   fold_affine_before, fold_affine_concat, fold_scale_before)
from .mixed import check_merge_mixed_dw, merge_mixed_dw
from .norm import check_fold_norm_affine, fold_norm_affine
from .rank import RankReport, rank_test, rank_tolerance

__all__ = [
    "check_collapse_dw_pw", "check_collapse_pair", "check_collapse_pw_dw", "collapse_dw_pw", "collapse_pair",
    "collapse_pw_dw",
    "absorb_pad", "check_fold_affine_before", "check_fold_scale_before", "compose_affines", "fold_affine_before",
    "fold_scale_before", "dw_pw_rank_for_budget", "factorize_dw_pw", "factorize_pw_dw", "fold_affine", "fold_affine_concat",
    "check_fold_norm_affine", "fold_norm_affine", "check_merge_mixed_dw", "merge_mixed_dw", "RankReport", "rank_test", "rank_tolerance",
]
