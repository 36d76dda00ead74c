"""The site check both front ends run before a rewrite enters the graph, on a spatial crop.

A site's original ops, its float64 reference and the candidate replacement each run on the real
activation that reached the site, and

    rel_error(candidate, reference) ≤ tolerance

(by default max(dtype default, 4 × the original's own error), an approximate plan: its budget)
decides. The check runs on a crop of the activation: the top-left S×S window of at most
CHECK_BATCH images. A conv chain is the same function on any input size, so comparing two forms
on a crop compares the same two functions; every weight is exercised as long as the crop covers
the chain's receptive field, and S is a few times that. The check then costs the same at 224²
as at 1024², where running it on the whole activation made float64 convs most of the
optimizer's time. A Concat's branches may read inputs of different sizes (each behind its own
TF "same" pad); each is cut to the window from which its conv gives the output window all share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from rewrite.ir import (Concat, ConvSpec, FusedMBConv, FusedSepConv, MixedConv, ParallelBranches, ZeroPad, channels_last_input,
                        run_chain)
from rewrite.measure import one_thread
from rewrite.numerics import model_tolerance, rel_error, site_tolerance, within

CHECK_BATCH = 2
MIN_CROP = 16
CAPTURE_SIDE = 64      # front ends keep this window of each activation; crop_side stays below it
# A lift that misreads the graph (a wrong pad, activation or weight layout) is off by far more than
# rounding; a deep fp32 chain with cancellation is off by ~1e-4 from float64 on rounding alone.
LIFT_TOLERANCE = 1e-3


class SiteError(RuntimeError):
    """A front end cannot run a site's ops on their own; the site is rolled back with this message."""


@dataclass(frozen=True)
class SiteCheck:
    """What the site check found: passed, the candidate's relative error (None when it did not
    run), and for a failure the site's status ("rolled_back", or "declined" when the lifted chain
    does not reproduce the original) and the reason."""

    passed: bool
    error: float | None = None
    status: str = "applied"
    reason: str = ""


def capture_window(a, channels_last: bool = False):
    """The part of a captured activation the site checks use (torch or numpy): CHECK_BATCH images,
    the top-left CAPTURE_SIDE² window (of H and W: axes 2, 3, or 1, 2 for a channels-last
    [B, H, W, C]; a 3-d channels-last [B, N, C] keeps its tokens)."""
    if a.ndim == 4 and channels_last:
        return a[:CHECK_BATCH, :CAPTURE_SIDE, :CAPTURE_SIDE, :]
    return a[:CHECK_BATCH, :, :CAPTURE_SIDE, :CAPTURE_SIDE] if a.ndim == 4 else a[:CHECK_BATCH] if a.ndim else a


def _spatial_layers(layers):
    for layer in layers:
        if isinstance(layer, (ParallelBranches, Concat, MixedConv)):
            # the widest branch: same stride and output size as all
            convs = layer.convs if isinstance(layer, ParallelBranches) else list(layer.convs)
            yield max(convs, key=lambda conv: conv.kernel_size[0] * conv.dilation[0])
        else:
            yield from ([layer.dw, layer.pw] if isinstance(layer, FusedSepConv) else
                        [layer.conv, layer.pw] if isinstance(layer, FusedMBConv) else [layer])


def receptive_field(layers) -> tuple[int, int]:
    """(receptive field side, total stride) of a chain: rf = 1 + Σ (k−1)·d·(stride so far)."""
    rf, stride = 1, 1
    for layer in _spatial_layers(layers):
        if isinstance(layer, ConvSpec):
            rf += (max(layer.kernel_size) - 1) * max(layer.dilation) * stride
            stride *= max(layer.stride)
        elif isinstance(layer, ZeroPad):
            rf += max(layer.padding) * stride
    return rf, stride


def output_hw(layers, h: int, w: int) -> tuple[int, int]:
    """Spatial size of the chain's output for an h×w input."""
    for layer in _spatial_layers(layers):
        if isinstance(layer, ConvSpec):
            h, w = layer.output_hw(h, w)
        elif isinstance(layer, ZeroPad):
            t, b, l, r = layer.padding
            h, w = h + t + b, w + l + r
    return h, w


def crop_side(layers) -> int:
    """A crop side covering the receptive field a few times over, a multiple of the total stride."""
    rf, stride = receptive_field(layers)
    side = max(MIN_CROP, 3 * rf)
    return stride * math.ceil(side / stride)


def crop(values: list, layers) -> list:
    """The site's inputs cut to at most CHECK_BATCH images: the chain input (values[0]) to a
    crop_side² window, the extra inputs (a residual, aligned with the output) to the window of
    the output that this crop gives; a Concat's inputs each to the window from which its branch
    gives the output window all branches share (concat_crop)."""
    x = values[0]
    if x.dim() != 4:
        return [v[:CHECK_BATCH] for v in values]
    side = crop_side(layers)
    if layers and isinstance(layers[0], Concat):
        return concat_crop(values, layers[0].convs, side)
    if layers and channels_last_input(layers[0]):      # [B, H, W, C]; no residual
        return [x[:CHECK_BATCH, :side, :side, :]] + [v[:CHECK_BATCH] for v in values[1:]]
    x = x[:CHECK_BATCH, :, :side, :side]
    oh, ow = output_hw(layers, x.shape[2], x.shape[3])
    return [x] + [v[:CHECK_BATCH, :, :oh, :ow] if v.dim() == 4 else v[:CHECK_BATCH] for v in values[1:]]


def concat_crop(values: list, convs, side: int) -> list:
    """A Concat's inputs cut so that every branch gives the same output window. Its branches may
    read inputs of different sizes (TF "same" convs each behind its own pad: at stride 2, a 3x3
    behind pad(0,1) and a 5x5 behind pad(1,2) read 57² and 59² to give 28²), so one side² crop of
    each gives outputs of different sizes. Per axis, the common output O is the least that any
    branch gives from a side crop of its input, and each input is cut to the least window from
    which its conv (its own kernel, stride, dilation and padding) gives O. Where some branch cannot
    give O from a window of its input (a padding wider than the kernel), the inputs are left
    whole: the captured activations, which the graph itself concatenates."""
    windows = []
    for i in (0, 1):                 # H (axis 2, padded top and bottom), W (axis 3, left and right)
        axis = 2 + i
        geometry = [(conv.kernel_size[i], conv.stride[i], conv.dilation[i], sum(conv.padding[2 * i:2 * i + 2]))
                    for conv in convs]
        out = min((min(side, v.shape[axis]) + p - d * (k - 1) - 1) // s + 1
                  for (k, s, d, p), v in zip(geometry, values))
        need = [(out - 1) * s + d * (k - 1) + 1 - p for k, s, d, p in geometry]
        if out < 1 or any(n < 1 or n > v.shape[axis] for n, v in zip(need, values)):
            return [v[:CHECK_BATCH] for v in values]
        windows.append(need)
    return [v[:CHECK_BATCH, :, :h, :w] for v, h, w in zip(values, *windows)]


def check_site(plan, dtype: torch.dtype, options, inputs: list, original: Callable, reference: Callable,
               candidate: Callable, *, reference_is_lifted: bool) -> SiteCheck:
    """Run the three forms on the (cropped) inputs and judge the candidate.

    original(*xs) and candidate(*xs) run in the model's dtype, reference(*xs64) in float64.
    reference_is_lifted: the reference is the lifted IR chain rather than the original ops; then
    the original's own error also confirms the lift read the graph right (a site where it does
    not is declined and left alone).
    """
    xs = crop(inputs, plan.before)
    with torch.no_grad(), one_thread():
        ref = reference(*(x.double() for x in xs))
        try:
            baseline = _error(_tensor(original(*(x.clone() for x in xs))), ref)
            if reference_is_lifted and not within(baseline, max(LIFT_TOLERANCE, model_tolerance(dtype))):
                return SiteCheck(False, None, "declined", f"the lifted chain does not reproduce the original ops "
                                 f"(rel error {baseline:.1e}); left alone")
            out = _tensor(candidate(*(x.clone() for x in xs)))
            if plan.reference is not None:
                # an approximate plan: the lowered form is checked against the fit's own function, so
                # a wrong lowering shows; the approximation is the whole-model check's to judge
                ref, baseline = run_chain(plan.reference, *(x.double() for x in xs)), 0.0
        except SiteError as exc:
            return SiteCheck(False, None, "rolled_back", str(exc))
    error = _error(out, ref)
    tol = plan.tolerance if plan.tolerance is not None else site_tolerance(dtype, options.site_tolerance, baseline)
    if not within(error, tol):
        return SiteCheck(False, error, "rolled_back", f"rel error {error:.2e} exceeds tolerance {tol:.0e}")
    return SiteCheck(True, error)


def _error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """rel_error, with a wrong shape counting as infinitely wrong."""
    return rel_error(y, ref) if tuple(y.shape) == tuple(ref.shape) else math.inf


def _tensor(y) -> torch.Tensor:
    return y if isinstance(y, torch.Tensor) else torch.as_tensor(y)
