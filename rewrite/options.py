"""Options shared by every front end (FX and ONNX)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields, replace

import torch

from torch.utils._pytree import tree_flatten

from .cost_model import MeasuredCostModel, RooflineCostModel, known_target, profile_for
from .rules import RULES

PASSES = tuple(RULES)          # pipeline order
COST_MODELS = ("measured", "analytic")


@dataclass
class RewriteOptions:
    """What to run and how strictly to check it.

    passes: which rewrite kinds run (rewrite.rules.RULES), always in pipeline order.
    target: the device profile the cost model predicts for: "cuda" / "gpu" (the CUDA device
        present, its profile derived from its properties: rewrite.cost_model.gpu_profile; the default
        for a CUDA model), a named profile for planning off the device ("h100", "h200", "cpu"; the
        default for a CPU model is "cpu"), or a DeviceProfile; also decides whether the fuse pass
        runs (a GPU target) unless `force_fuse`. The report's `target` names the profile used.
    cost_model: any object with chain_time(layers, input_shape, dtype); default a roofline on
        `target`.
    min_speedup: a factorize/reverse site is applied only when the predicted speedup ≥ this.
    factorize_error_budget (deprecated: approximate supersedes it): None = exact factorization only;
        a float opts in to SVD-truncated factorization whose measured relative error must stay under it.
    approximate: None (default) = exact rewrites only. A float REL opts in to approximate decoupling
        (rule decouple) of dense KxK convs, fitted on calibration samples the entry point takes
        (optimize(..., calibration=...), rewrite-onnx --calibration); REL bounds the relative error of
        the model's outputs on the held-out calibration samples (rewrite/entry/approximate.py).
    calibration (set by the entry points from the user's samples): a Calibration.
    site_tolerance / model_tolerance: None = per-dtype defaults (rewrite.numerics).
    check: verify each rewrite (and the whole model) numerically; rollback on failure.
    force_fuse: run the fuse pass whatever the target, and skip the analytic model's declines.
    force_blocks: also consider the whole-block kernels (fuse_block, fuse_mbconv) wherever they fit,
        although no GPU measurement backs them yet (otherwise only measured decisions, on the GPU,
        apply them); implies force_fuse. Neither overrides a measured decision: where sites are
        timed (a CPU model with the default cost model) a fused form is kept only where it measured
        faster, and on a CPU the kernels run their torch fallback, which rarely is; to lay a model
        out for a GPU from a CPU, name the target (target="h100", analytic).
    channels_last (FX only; ONNX graphs have no memory format): lay conv weights out NHWC so
        activations stay channels_last between layers. None (default) = when a site was fused,
        since the fused kernel works in NHWC and would otherwise copy its input at every site.
    dynamic_spatial (FX only): capture the model with dynamic H and W as well as a dynamic batch,
        so the result runs at any resolution; pads whose widths then depend on the input size
        (TF "same" padding) are not absorbed, and torch.export's symbolic-shape reasoning over
        them takes minutes (timm's tf_* models), so capture warns up front when it finds such pads
        (passes/fx/capture.py); static capture at the resolution the model runs takes seconds.
    What one run of the passes is told by the driver (sites to skip or to keep to) is not an
    option: it is a RunState.
    """

    passes: tuple[str, ...] = PASSES
    target: str | None = None
    cost_model: object = None
    timing_cache: object = None
    min_speedup: float = 1.05
    factorize_error_budget: float | None = None
    approximate: float | None = None
    site_tolerance: float | None = None
    model_tolerance: float | None = None
    check: bool = True
    force_fuse: bool = False
    force_blocks: bool = False
    channels_last: bool | None = None
    dynamic_spatial: bool = False
    calibration: "Calibration | None" = None   # the user's calibration samples, set by the entry points

    @classmethod
    def from_kwargs(cls, options: dict, caller: str) -> "RewriteOptions":
        """Options from an API call's keyword arguments, naming the caller on an unknown one."""
        known = {f.name for f in fields(cls)} - {"calibration"}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"{caller}() got unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**options)

    def __post_init__(self):
        unknown = set(self.passes) - set(PASSES)
        if unknown:
            raise ValueError(f"unknown pass(es) {sorted(unknown)}; known: {list(PASSES)}")
        self.passes = tuple(p for p in PASSES if p in self.passes)
        if self.target is not None and not known_target(self.target):
            profile_for(self.target)  # fails early on an unknown target, naming the known ones
        if isinstance(self.cost_model, str) and self.cost_model not in COST_MODELS:
            raise ValueError(f"cost_model={self.cost_model!r}; expected one of {COST_MODELS} or an object with "
                             "chain_time(layers, input_shape, dtype)")
        if not isinstance(self.cost_model, (str, type(None))) and not hasattr(self.cost_model, "chain_time"):
            raise TypeError(f"cost_model {self.cost_model!r} has no chain_time(layers, input_shape, dtype)")
        if self.channels_last not in (None, True, False):
            raise TypeError(f"channels_last must be None, True or False, got {self.channels_last!r}")
        if self.force_blocks:
            self.force_fuse = True
        if self.factorize_error_budget is not None and not 0 < self.factorize_error_budget < 1:
            raise ValueError("factorize_error_budget must be in (0, 1)")
        if self.factorize_error_budget is not None:
            warnings.warn("factorize_error_budget truncates weights by their SVD, judged by weight error, which costs "
                          "far more accuracy than it must; approximate=REL with calibration inputs fits the "
                          "factors to the inputs the model sees (rule decouple) and supersedes it",
                          DeprecationWarning, stacklevel=3)
        if self.approximate is not None and not 0 < self.approximate < 1:
            raise ValueError(f"approximate={self.approximate!r}: the budget is a relative output error in (0, 1), "
                             "e.g. 0.02")

    @property
    def measured(self) -> bool:
        """Sites are decided by timing their forms (after resolved())."""
        return isinstance(self.cost_model, MeasuredCostModel)

    def choice(self, device) -> tuple[str, object]:
        """(target, cost model kind: "measured", "analytic" or the caller's object) for a model on
        `device`, or a ValueError when the options ask for the impossible; builds nothing."""
        device = torch.device(device)
        target = self.target or ("cpu" if device.type == "cpu" else "cuda")
        profile = profile_for(target, device)
        on_target = profile.is_gpu == (device.type == "cuda")
        kind = self.cost_model or ("measured" if on_target and self.check else "analytic")
        if kind == "measured" and not self.check:
            raise ValueError("cost_model='measured' times each site after its check; it needs check=True")
        if kind == "measured" and not on_target:
            raise ValueError(f"cost_model='measured' times each site where the model runs ({device}), but "
                             f"target={target!r} is a {'GPU' if profile.is_gpu else 'CPU'} profile; move the model "
                             "to the target device, or use cost_model='analytic' to optimize ahead of time")
        return target, kind

    def resolved(self, device) -> "RewriteOptions":
        """These options with a concrete target and cost model for a model on `device`."""
        if self.target is not None and not isinstance(self.cost_model, (str, type(None))):
            return self
        target, kind = self.choice(device)
        profile = profile_for(target, device)
        if kind == "measured":
            model = MeasuredCostModel(profile, device, self.timing_cache)
        elif kind == "analytic":
            model = RooflineCostModel(profile)
        else:
            model = kind
        return replace(self, target=target, cost_model=model)


@dataclass(frozen=True)
class RunState:
    """What the driver (rewrite/entry/retry.py) tells one run of the passes, apart from the user's
    options: the sites to roll back, the only sites to apply, and whether sites are checked on the
    spot (off while bisection re-runs sets of sites that each passed already)."""

    skip_sites: frozenset = frozenset()     # "kind:name" keys rolled back
    only_sites: frozenset | None = None     # when set, no other site is applied
    site_checks: bool = True

    def skipping(self, keys) -> "RunState":
        return replace(self, skip_sites=self.skip_sites | frozenset(keys))


@dataclass(eq=False)
class Calibration:
    """Calibration samples for approximate rewriting: `fit` to fit on and `held` (never fitted on) to
    measure the error on, each a list of inputs in the front end's form (a tuple of tensors, an
    ONNX feeds dict); `cache` keeps what runs of the passes learn from them (each site's
    statistics, the reference outputs) across the re-runs of one optimize call."""

    fit: list
    held: list
    cache: dict = field(default_factory=dict)


def model_device(model, example_inputs: tuple) -> torch.device:
    """Where a torch model runs: its parameters' device, else its first input's."""
    for t in list(model.parameters()) + [x for x in tree_flatten(example_inputs)[0] if isinstance(x, torch.Tensor)]:
        return t.device
    return torch.device("cpu")
