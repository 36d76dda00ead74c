"""The two answers a rule can give."""
from __future__ import annotations

from dataclasses import dataclass

from ..ir import describe_chain


@dataclass
class Plan:
    """Replace `before` by `after` (same function, within `tolerance` when not None)."""

    kind: str
    before: list
    after: list
    predicted_speedup: float
    note: str = ""
    tolerance: float | None = None   # set for approximate rewrites: the user's error budget
    removes_work: bool = False       # the rewrite only removes ops, as a fold does: never timed

    @property
    def describe_before(self) -> str:
        return describe_chain(self.before)

    @property
    def describe_after(self) -> str:
        return describe_chain(self.after)


@dataclass
class Decline:
    """The site stays as it is, for `reason`."""

    kind: str
    reason: str
    before: list
    predicted_speedup: float | None = None

    @property
    def describe_before(self) -> str:
        return describe_chain(self.before)
