"""The rewrite rules, one file each, and the one table that registers them.

Each module here defines a rule (its matcher over the neutral view, its check, its plan in chain
IR, the equation in its docstring) and registers it, except the two libraries the rules share:
base.py (Rule, Match, Plan, the registry) and fusable.py (what the fused kernels accept, and the
dw → pw matcher the fuse rules start from). Importing this package imports every module in it,
so `RULES` holds them all, in pipeline order. Options, the report's kinds, the command line
and the pass manager read RULES and nothing else. A rule never touches a graph: the front ends lift
a site into IR, ask the rule, and lower the Plan's `after` layers back into their format.
"""
from importlib import import_module
from pkgutil import iter_modules

from .base import Decline, Match, Plan, Rule, register, registered
from .factorize import plan_factorize
from .fold import plan_fold
from .fusable import check_fuse
from .fuse import plan_fuse
from .merge import plan_merge
from .reverse import is_reversible_pair, plan_reverse

for _module in iter_modules(__path__):      # any other rule file registers itself on import
    if _module.name not in ("base", "fusable"):
        import_module(f"{__name__}.{_module.name}")

RULES = registered()

__all__ = ["RULES", "Decline", "Match", "Plan", "Rule", "register", "check_fuse", "plan_factorize", "plan_fold",
           "plan_fuse", "plan_merge", "plan_reverse", "is_reversible_pair"]
