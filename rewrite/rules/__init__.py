"""Format-independent rewrite rules: each takes lifted IR layers and returns a Plan or a Decline.

A rule never touches a graph: front ends lift a site into IR, ask the rule, and lower the
Plan's `after` layers back into their graph format.
"""
from .base import Decline, Plan
from .factorize import plan_factorize
from .fold import plan_fold
from .fuse import check_fuse, plan_fuse
from .merge import plan_merge
from .reverse import is_reversible_pair, plan_reverse

__all__ = ["Decline", "Plan", "check_fuse", "plan_factorize", "plan_fold", "plan_fuse", "plan_merge", "plan_reverse", "is_reversible_pair"]
