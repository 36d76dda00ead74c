"""What the pass manager (passes/manager.py) needs from a front end: the Adapter protocol.

passes/fx/adapter.py (a torch.fx graph) and passes/onnx/adapter.py (an ONNX graph through
onnx-graphsurgeon) implement it; tests/test_protocol.py checks that both declare every member.
Values (`v`) are the front end's own handles: an fx.Node, an ONNX tensor name.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable


@runtime_checkable
class Adapter(Protocol):
    reference_is_lifted: bool   # reference() evaluates the lifted IR, not the original ops

    @property
    def runtime(self) -> str:
        """The libraries that run the forms, for the timing cache (e.g. "torch 2.14.1")."""

    def view(self):
        """The graph as it is now, as a rewrite.view.View."""

    def live(self, match) -> bool:
        """No op of the match was removed by an earlier rewrite."""

    def value(self, v):
        """The activation captured for value v (a crop; its full shape is in view.shapes), or None."""

    def site_name(self, match) -> str:
        """The site's name in the user's model, for the report."""

    def progress(self, message: str) -> None:
        """A one-line progress message."""

    def lower(self, match, plan):
        """The replacement of the match, built from plan.after but not yet in the graph."""

    def original(self, match) -> Callable:
        """A callable running the site's original ops in the model's dtype."""

    def reference(self, match) -> Callable:
        """A callable running the site in float64 (the original ops, or the lifted IR)."""

    def candidate(self, lowered, match) -> Callable:
        """A callable running the replacement."""

    def commit(self, match, plan, lowered) -> None:
        """Splice the replacement in. A value the site removes whose shape an op outside it reads
        is replaced, for that reader, by plan.stand_ins' value of the same shape."""

    def discard(self, lowered) -> None:
        """Drop a replacement that failed its check."""

    def timed(self, match, lowered) -> tuple:
        """(original, replacement, inputs): callables running both as they will run (onnxruntime:
        optimizations on), and random inputs of the full shapes reaching the site."""

    def stream(self, values, samples, each: Callable) -> None:
        """Run the graph as it is now on each calibration sample, calling each(value, activation)
        for the values asked for."""

    def outputs(self, samples, convs: list) -> list:
        """The graph's outputs on each sample, with each (match, ConvSpec) conv computed by that
        spec's weights instead (no graph edit)."""
