"""Cost model v0: an analytic roofline over the layers of a chain.

Each layer is one kernel launch (eager execution). Its time is

    t = max(FLOPs / rate, bytes / bandwidth) + launch_overhead

FLOPs = 2 · B · Ho · Wo · C_out · (C_in / groups) · kh · kw for a conv; dense and pointwise
convs run at the matrix (tensor-core / GEMM) rate, depthwise and small-group convs at the
vector (CUDA-core / SIMD) rate, which is far lower. Bytes = input + output activations + weights
at the activation dtype's size; an affine or activation layer that stands alone costs one read
and one write of its tensor. A chain costs the sum of its layers, and the predicted speedup of a
rewrite is t(before) / t(after).

A fused dw→pw kernel is one launch whose bytes are only its input, output, residual and
weights (the dw result stays on chip), and whose compute time is the dw FLOPs at the vector rate
plus the pw FLOPs at the matrix rate. With a squeeze-excitation inside, the dw result is written
once and read back by the gated GEMM, and SE_LAUNCHES more launches run. A whole inverted-residual
block adds its expansion GEMM, once per depthwise tap (the halo is recomputed), and with an SE
computes the block twice (channel sums, then the gated pass) rather than storing the dw result.

The model is an object so that callers can inject another (e.g. one calibrated by measurement):
anything with `chain_time(layers, input_shape, dtype) -> seconds` will do.

What the roofline does not see, a GPU run did: the fused forms that measured slower than eager on
an H100 are listed in a data file beside that run's results (FUSE_LOSSES,
results/gpu/2026-11-25-h100/fuse_losses.json, written from that campaign's tables: see the
README there). `measured_fuse_loss` reads it once and tells the fuse rule whether a fused form is
such a loss, and why, when the rule plans without timing.
"""
from __future__ import annotations

import functools
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import measure
from .ir import (Activation, Affine, ConvSpec, DepthToSpace, FusedMBConv, FusedSepConv, Layer, ParallelBranches,
                 TransposedConv, ZeroPad)

SE_LAUNCHES = 2  # beside the gated GEMM: the depthwise stage (or block phase 1) and the excitation MLP
GROUPS_ON_MATRIX_UNITS = 16  # a grouped conv with ≥ this many channels per group runs as GEMM
ROOT = Path(__file__).resolve().parents[1]
FUSE_LOSSES = "results/gpu/2026-11-25-h100/fuse_losses.json"  # relative to the source tree's root


class FuseLossesError(RuntimeError):
    """The measured losses file is missing or not one: said, never read as "no loss"."""


@dataclass(frozen=True)
class FuseLosses:
    """The fused forms one GPU run measured slower than eager (FUSE_LOSSES): the squeeze-excitation
    form (slower at `se_slower` of `se_layers` SE layers), output maps of at most `max_pixels`
    pixels, square depthwise kernels of `square_min` x `square_min` or more, and (not measured)
    other kernels with more than `max_taps` taps, taken as the square one was."""

    run: str
    device: str
    se_slower: int
    se_layers: int
    max_pixels: int
    square_min: int
    max_taps: int

    def loss(self, dw: ConvSpec, se, out_hw) -> str | None:
        """Why fusing `dw` (with the squeeze-excitation `se`, or None) at an `out_hw` output map
        measured a loss on this run, or None."""
        where = f"on {self.device} ({self.run})"
        if se is not None:
            return (f"the fused squeeze-excitation form measured slower than eager at {self.se_slower} of "
                    f"{self.se_layers} SE layers {where}")
        if out_hw[0] * out_hw[1] <= self.max_pixels:
            return f"fused at a {out_hw[0]}x{out_hw[1]} output map measured slower than eager {where}"
        kh, kw = dw.kernel_size
        if kh == kw and kh >= self.square_min:
            return f"the fused {kh}x{kw} depthwise kernel measured slower than eager {where}"
        if kh * kw > self.max_taps:  # only square kernels were measured: more taps than the 3x3 is taken as a loss
            return (f"the fused {kh}x{kw} depthwise kernel has {kh * kw} taps, more than the 3x3 that measured "
                    f"faster (the {self.square_min}x{self.square_min} measured slower than eager {where})")
        return None


def fuse_losses(path: str | Path | None = None) -> FuseLosses:
    """The measured losses file (default FUSE_LOSSES under the source tree), read once per path;
    FuseLossesError, naming the file, if it is missing or garbled."""
    return _read_fuse_losses(Path(path) if path is not None else ROOT / FUSE_LOSSES)


@functools.lru_cache(maxsize=None)
def _read_fuse_losses(path: Path) -> FuseLosses:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FuseLossesError(f"{path} is missing: the fuse rule reads the fused forms a GPU run measured "
                              "slower from it (time the sites on the GPU, or force_fuse=True)") from None
    except (OSError, ValueError) as e:
        raise FuseLossesError(f"{path} cannot be read as JSON ({e})") from None
    try:
        se, small, square, other = (data["squeeze_excitation"], data["small_output"], data["square_kernel"],
                                    data["other_kernel"])
        fields = dict(run=data["run"], device=data["device"], se_slower=se["slower_layers"], se_layers=se["layers"],
                      max_pixels=small["max_pixels"], square_min=square["min_size"], max_taps=other["max_taps"])
    except (KeyError, TypeError) as e:
        raise FuseLossesError(f"{path} is not a fuse-losses file: no {e}") from None
    wrong = [k for k, v in fields.items() if not isinstance(v, str if k in ("run", "device") else int)
             or isinstance(v, bool)]
    if wrong:
        raise FuseLossesError(f"{path} is not a fuse-losses file: {', '.join(wrong)} of the wrong type")
    return FuseLosses(**fields)


def measured_fuse_loss(model, dw: ConvSpec, se, out_hw) -> str | None:
    """Whether fusing `dw` (+ `se`) at an `out_hw` output map is a measured loss, and why, as the
    cost model `model` answers it (RooflineCostModel.measured_fuse_loss); a model injected
    without that answer gets FUSE_LOSSES' own."""
    ask = getattr(model, "measured_fuse_loss", None)
    return ask(dw, se, out_hw) if ask is not None else fuse_losses().loss(dw, se, out_hw)


@dataclass(frozen=True)
class DeviceProfile:
    """Throughput figures of one device. Rates in FLOP/s per dtype, bandwidth in B/s."""

    name: str
    is_gpu: bool
    matrix_rate: dict = field(hash=False)
    vector_rate: dict = field(hash=False)
    bandwidth: float
    launch_overhead: float

    def rate(self, table: dict, dtype: torch.dtype) -> float:
        return table.get(dtype, table[torch.float32])


# H100 SXM as measured in DESIGN.md: ~3.0 TB/s copy bandwidth, ~800 TFLOP/s fp16/bf16 dense.
# fp32 convs run as TF32 on the matrix units (cuDNN's default in PyTorch).
H100 = DeviceProfile(
    name="h100",
    is_gpu=True,
    matrix_rate={torch.float16: 800e12, torch.bfloat16: 800e12, torch.float32: 400e12, torch.float64: 50e12},
    vector_rate={torch.float16: 100e12, torch.bfloat16: 100e12, torch.float32: 50e12, torch.float64: 25e12},
    bandwidth=3.0e12,
    launch_overhead=3e-6,
)

# A small x86 server core pair (AVX2 FMA), as the CI/developer machines here: oneDNN GEMM-like
# convs reach ~100 GFLOP/s, depthwise convs a fraction of that.
CPU = DeviceProfile(
    name="cpu",
    is_gpu=False,
    matrix_rate={torch.float32: 100e9, torch.float64: 50e9, torch.float16: 25e9, torch.bfloat16: 50e9},
    vector_rate={torch.float32: 15e9, torch.float64: 8e9, torch.float16: 4e9, torch.bfloat16: 8e9},
    bandwidth=15e9,
    launch_overhead=5e-6,
)

# H200: the H100's SM90 compute (132 SMs) with 141 GB of HBM3e at ~4.8 TB/s peak; ~4.3 TB/s
# measured copy bandwidth (DESIGN.md), the same ~0.9 of peak as the H100's 3.0 of 3.35.
H200 = DeviceProfile(
    name="h200",
    is_gpu=True,
    matrix_rate=dict(H100.matrix_rate),
    vector_rate=dict(H100.vector_rate),
    bandwidth=4.3e12,
    launch_overhead=H100.launch_overhead,
)

PROFILES = {p.name: p for p in (H100, H200, CPU)}
PRESENT_GPU = ("cuda", "gpu")   # targets that mean "the CUDA device present": its profile is derived

# Dense fp16/bf16 matrix (tensor-core) FLOPs per SM per clock, and fp32 vector FLOPs (2 x FMA
# lanes) per SM per clock, by compute capability (NVIDIA's architecture whitepapers: V100 125,
# A100 312, A10 125, L40S 362, H100 SXM 989 dense fp16 TFLOP/s at their SM counts and boost clocks).
MATRIX_FLOPS_PER_SM_CLOCK = {(7, 0): 1024, (7, 5): 1024, (8, 0): 2048, (8, 6): 1024, (8, 7): 1024, (8, 9): 1024,
                             (9, 0): 4096, (10, 0): 8192}
VECTOR_FLOPS_PER_SM_CLOCK = {(7, 0): 128, (7, 5): 128, (8, 0): 128, (8, 6): 256, (8, 7): 256, (8, 9): 256,
                             (9, 0): 256, (10, 0): 256}
# what kernels reach of those peaks: the H100 profile's 800 of 989 TFLOP/s at the 1.98 GHz the
# device reports, and 3.0 of 3.35 TB/s
RATE_EFFICIENCY = 0.75
BANDWIDTH_EFFICIENCY = 0.9
# measured copy bandwidth by name, for devices that do not report their memory clock and bus width
BANDWIDTH_BY_NAME = {"H200": 4.3e12, "H100": 3.0e12, "A100": 1.7e12}
FALLBACK_BANDWIDTH = 1.0e12


def gpu_profile(props) -> DeviceProfile:
    """A DeviceProfile derived from a CUDA device's properties (torch.cuda.get_device_properties,
    or any object with its fields: name, major, minor, multi_processor_count, clock_rate in kHz,
    memory_clock_rate in kHz, memory_bus_width in bits).

    Bandwidth: 2 (double data rate) x memory clock x bus width, x BANDWIDTH_EFFICIENCY; without
    a memory clock, BANDWIDTH_BY_NAME, else FALLBACK_BANDWIDTH, and the name says so. Rates: SMs x
    clock x the FLOPs per SM per clock of the compute capability (MATRIX_ / VECTOR_FLOPS_PER_SM_CLOCK),
    x RATE_EFFICIENCY; fp32 convs run as TF32 at half the fp16 matrix rate, fp64 at 1/16; vector
    fp16 at twice fp32, fp64 at half. A compute capability not in the table takes the nearest
    lower one's figures (the name says which), below 7.0 the 7.0 figures. Pure: the caller reads
    the properties, so a profile can be derived for a device that is not here."""
    cc = (int(props.major), int(props.minor))
    known = sorted(MATRIX_FLOPS_PER_SM_CLOCK)
    table_cc = max((k for k in known if k <= cc), default=known[0])
    assumed = [] if table_cc == cc else [f"rates of sm_{table_cc[0]}{table_cc[1]}"]
    clock = float(getattr(props, "clock_rate", 0) or 0) * 1e3
    if clock <= 0:
        clock, assumed = 1.5e9, assumed + ["a 1.5 GHz clock"]
    per_sm = int(props.multi_processor_count) * clock * RATE_EFFICIENCY
    matrix16 = per_sm * MATRIX_FLOPS_PER_SM_CLOCK[table_cc]
    vector32 = per_sm * VECTOR_FLOPS_PER_SM_CLOCK[table_cc]
    memory_clock = float(getattr(props, "memory_clock_rate", 0) or 0) * 1e3
    bus_bits = int(getattr(props, "memory_bus_width", 0) or 0)
    if memory_clock > 0 and bus_bits > 0:
        bandwidth = 2 * memory_clock * bus_bits / 8 * BANDWIDTH_EFFICIENCY
    else:
        bandwidth = next((v for k, v in BANDWIDTH_BY_NAME.items() if k in props.name), None)
        if bandwidth is None:
            bandwidth, assumed = FALLBACK_BANDWIDTH, assumed + [f"{FALLBACK_BANDWIDTH / 1e12:g} TB/s"]
    name = (f"{props.name} (derived: sm_{cc[0]}{cc[1]}, {props.multi_processor_count} SMs, "
            f"{bandwidth / 1e12:.1f} TB/s, {matrix16 / 1e12:.0f} TFLOP/s fp16"
            + (f"; assumed {', '.join(assumed)}" if assumed else "") + ")")
    return DeviceProfile(
        name=name, is_gpu=True,
        matrix_rate={torch.float16: matrix16, torch.bfloat16: matrix16, torch.float32: matrix16 / 2,
                     torch.float64: matrix16 / 16},
        vector_rate={torch.float16: 2 * vector32, torch.bfloat16: 2 * vector32, torch.float32: vector32,
                     torch.float64: vector32 / 2},
        bandwidth=bandwidth, launch_overhead=H100.launch_overhead)


def known_target(target) -> bool:
    """A target profile_for accepts (without deriving anything)."""
    return isinstance(target, DeviceProfile) or (
        isinstance(target, str) and (target.lower() in PROFILES or target.lower() in PRESENT_GPU))


def profile_for(target, device=None) -> DeviceProfile:
    """The DeviceProfile of `target`: a profile itself, a named one (PROFILES: for planning off the
    device), or "cuda" / "gpu", the CUDA device present (`device`, default the current one), its
    profile derived from its properties (gpu_profile)."""
    if isinstance(target, DeviceProfile):
        return target
    if isinstance(target, str) and target.lower() in PROFILES:
        return PROFILES[target.lower()]
    if isinstance(target, str) and target.lower() in PRESENT_GPU:
        if not torch.cuda.is_available():
            gpus = ", ".join(p for p in PROFILES if p != "cpu")
            raise ValueError(f"target={target!r} means the GPU present, and torch sees none here; name a profile "
                             f"to optimize ahead of time for a GPU elsewhere ({gpus})")
        device = torch.device(device) if device is not None else torch.device("cuda")
        return gpu_profile(torch.cuda.get_device_properties(device if device.type == "cuda" else "cuda"))
    raise ValueError(f"unknown target {target!r}; known: {sorted(PROFILES)}, 'cuda' or 'gpu' (the GPU present), "
                     "or a DeviceProfile")


def conv_flops(conv: ConvSpec, batch: int, out_hw: tuple[int, int]) -> float:
    kh, kw = conv.kernel_size
    return 2.0 * batch * out_hw[0] * out_hw[1] * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw


class RooflineCostModel:
    """Analytic roofline cost of chains on one DeviceProfile (see module docstring)."""

    def __init__(self, target="h100"):
        self.profile = profile_for(target)

    def __repr__(self):
        return f"RooflineCostModel({self.profile.name})"

    def chain_time(self, layers, input_shape, dtype: torch.dtype) -> float:
        """Seconds to run `layers` in sequence on an NCHW input of `input_shape`."""
        b, c, h, w = input_shape
        total = 0.0
        for layer in layers:
            t, (c, h, w) = self.layer_time(layer, (b, c, h, w), dtype)
            total += t
        return total

    def layer_time(self, layer: Layer, shape, dtype: torch.dtype):
        """(seconds, output (C, H, W)) of one layer."""
        p = self.profile
        size = torch.empty((), dtype=dtype).element_size()
        b, c, h, w = shape
        if isinstance(layer, ConvSpec):
            oh, ow = layer.output_hw(h, w)
            flops = conv_flops(layer, b, (oh, ow))
            on_matrix = layer.in_channels // layer.groups >= GROUPS_ON_MATRIX_UNITS or layer.groups == 1
            rate = p.rate(p.matrix_rate if on_matrix else p.vector_rate, dtype)
            bytes_ = size * (b * c * h * w + b * layer.out_channels * oh * ow + layer.weight.numel())
            return max(flops / rate, bytes_ / p.bandwidth) + p.launch_overhead, (layer.out_channels, oh, ow)
        if isinstance(layer, FusedSepConv):
            return self._fused_time(layer, shape, dtype, size)
        if isinstance(layer, FusedMBConv):   # two GEMMs on the matrix units; x, weights and y through memory
            oh, ow = layer.conv.output_hw(h, w)
            n = layer.pw.out_channels
            flops = conv_flops(layer.conv, b, (oh, ow)) + conv_flops(layer.pw, b, (oh, ow))
            bytes_ = size * (b * c * h * w + (2 if layer.residual else 1) * b * n * oh * ow
                             + layer.conv.weight.numel() + layer.pw.weight.numel())
            return max(flops / p.rate(p.matrix_rate, dtype), bytes_ / p.bandwidth) + p.launch_overhead, (n, oh, ow)
        if isinstance(layer, (Affine, Activation)):
            return self.elementwise_time(shape, dtype), (c, h, w)
        if isinstance(layer, ParallelBranches) and all(layer.branches):
            # each branch's chain, then the adds of its output into the sum
            times = [self.chain_time(branch, shape, dtype) for branch in layer.branches]
            out = self._chain_output(layer.branches[0], shape, dtype)
            return sum(times) + (len(times) - 1) * self.elementwise_time((b, *out), dtype, tensors=3), out
        if isinstance(layer, TransposedConv):   # the same multiply-adds as the conv it transposes, per input pixel
            oh, ow = layer.output_hw(h, w)
            kh, kw = layer.kernel_size
            flops = 2.0 * b * h * w * layer.in_channels * (layer.out_channels // layer.groups) * kh * kw
            bytes_ = size * (b * c * h * w + b * layer.out_channels * oh * ow + layer.weight.numel())
            return max(flops / p.rate(p.matrix_rate, dtype), bytes_ / p.bandwidth) + p.launch_overhead, \
                (layer.out_channels, oh, ow)
        if isinstance(layer, DepthToSpace):
            s = layer.block
            return self.elementwise_time(shape, dtype), (c // (s * s), h * s, w * s)
        if isinstance(layer, ZeroPad):
            t, b_, l, r = layer.padding
            return self.elementwise_time((b, c, h + t + b_, w + l + r), dtype), (c, h + t + b_, w + l + r)
        raise TypeError(f"no cost for layer {layer!r}")

    def _chain_output(self, layers, shape, dtype: torch.dtype) -> tuple:
        """(C, H, W) after `layers` on an NCHW input of `shape`."""
        b, c, h, w = shape
        for layer in layers:
            _, (c, h, w) = self.layer_time(layer, (b, c, h, w), dtype)
        return c, h, w

    def _fused_time(self, layer: FusedSepConv, shape, dtype: torch.dtype, size: int):
        """The fused kernels (kernels/): the depthwise FLOPs on the vector units, the 1x1 GEMMs on
        the matrix units, and only x, the weights and the output (+ residual) through memory.
        With an SE, the depthwise stage writes a and the gated GEMM reads it back (kernels/sep_conv/
        sep_conv_se.py), or, for a whole block, phase 1 recomputes the block for the channel sums
        (two passes over x, a never stored). A whole block's expansion is computed once per
        depthwise tap (halo recompute: kernels/block/inverted_residual.py)."""
        p = self.profile
        b, c, h, w = shape
        oh, ow = layer.dw.output_hw(h, w)
        n, hidden = layer.pw.out_channels, layer.dw.out_channels
        matrix, vector = p.rate(p.matrix_rate, dtype), p.rate(p.vector_rate, dtype)
        front = conv_flops(layer.dw, b, (oh, ow)) / vector
        weights = layer.dw.weight.numel() + layer.pw.weight.numel()
        if layer.expand is not None:
            kh, kw = layer.dw.kernel_size
            front += kh * kw * conv_flops(layer.expand, b, (oh, ow)) / matrix
            weights += layer.expand.weight.numel()
        passes = 2 if layer.se is not None and layer.expand is not None else 1
        stored = 2 * b * hidden * oh * ow if layer.se is not None and layer.expand is None else 0
        seconds = passes * front + conv_flops(layer.pw, b, (oh, ow)) / matrix
        outputs = (2 if layer.residual else 1) * b * n * oh * ow
        bytes_ = size * (passes * b * c * h * w + stored + outputs + weights)
        launches = 1 + (SE_LAUNCHES if layer.se else 0)
        return max(seconds, bytes_ / p.bandwidth) + launches * p.launch_overhead, (n, oh, ow)

    def measured_fuse_loss(self, dw: ConvSpec, se, out_hw) -> str | None:
        """Why a fused form is a loss that the run of FUSE_LOSSES measured (an H100), or None. The
        fuse rule asks when it plans without timing, which it does for a GPU target (elsewhere
        only with force_fuse, which skips the question); this profile's roofline does not see
        those losses, so the H100's figures stand for every such target."""
        return fuse_losses().loss(dw, se, out_hw)

    def elementwise_time(self, shape, dtype: torch.dtype, tensors: int = 2) -> float:
        """One elementwise kernel touching `tensors` tensors of `shape` (2: unary, 3: binary)."""
        size = torch.empty((), dtype=dtype).element_size()
        b, c, h, w = shape
        return tensors * size * b * c * h * w / self.profile.bandwidth + self.profile.launch_overhead

    def speedup(self, before, after, input_shape, dtype: torch.dtype) -> float:
        return self.chain_time(before, input_shape, dtype) / self.chain_time(after, input_shape, dtype)


class MeasuredCostModel(RooflineCostModel):
    """Decides by timing: each site's original and rewritten forms run on `device` at the site's
    shapes and dtype (rewrite.measure.compare: paired, with a confidence interval), the
    comparisons kept in a TimingCache.

    Predictions (chain_time, inherited) still come from the roofline of `profile`: they are
    reported beside the measured times, and the fuse pass runs only for a GPU profile.
    """

    def __init__(self, profile, device, timing_cache=None):
        from .timing_cache import TimingCache

        super().__init__(profile)
        self.device = torch.device(device)
        self.cache = None if timing_cache is False else (
            timing_cache if hasattr(timing_cache, "get") and hasattr(timing_cache, "put") else TimingCache(timing_cache))
        self.measured = self.cached = 0

    def __repr__(self):
        return f"MeasuredCostModel({self.device}, {self.profile.name})"

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        import platform
        return f"cpu {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"

    def _one_cpu_thread(self):
        """On the CPU, timings run on one torch thread (rewrite.measure.one_thread says why)."""
        return measure.one_thread() if self.device.type == "cpu" else nullcontext()

    def times(self, key_parts: tuple, before, after, inputs, margin: float):
        """(Comparison of the two callables on `inputs`, from_cache)."""
        from .timing_cache import entry_key

        key = entry_key(self.device_name(), *key_parts)
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            self.cached += 1
            return measure.Comparison.from_list(hit), True
        with self._one_cpu_thread():
            comparison = measure.compare(before, after, inputs, margin)
        self.measured += 1
        if self.cache is not None:
            self.cache.put(key, comparison.as_list())
        return comparison, False

    def finish(self, timed=None, margin: float = 1.0, runtime: str = ""):
        """After a run: save the timing cache, and return (the note saying what was measured, the
        whole model's Comparison, original against optimized, when `timed` = (original, optimized,
        inputs) is given, else None)."""
        if self.cache is not None:
            self.cache.save()
        note = (f"cost model: measured{runtime} on {self.device_name()} ({self.measured} site(s) timed, "
                f"{self.cached} from the timing cache)")
        if timed is None:
            return note, None
        return note, self.compare_models(*timed, margin)

    def compare_models(self, before, after, inputs, margin: float = 1.0):
        """The Comparison of two whole models, before(*inputs) against after(*inputs): paired,
        one call per pair (a whole model's call is long), on one thread on the CPU. Every
        whole-model timing goes through here, the first one and those that find which kinds of
        rewrite a slower result owes its time to (rewrite.entry.retry), so a subclass can time them
        another way."""

        with self._one_cpu_thread():
            return measure.compare(before, after, inputs, margin, budget_s=WHOLE_MODEL_BUDGET_S,
                                   extend=WHOLE_MODEL_EXTEND, min_repeats=measure.DECISIVE_PAIRS, calls=1)


WHOLE_MODEL_BUDGET_S = 2.0
WHOLE_MODEL_EXTEND = 1     # a whole model's calls are long: one call per pair, one extension
SLOWER = "rolled back: the whole model measured slower with the rewrites (this site was timed; those that only remove work stay)"


def measured_slower(comparison, min_speedup: float) -> str | None:
    """When the whole optimized model measured slower than the original, by more than the margin
    min_speedup and beyond the noise (the comparison's confidence interval lies below 1), the note
    saying so: the caller then rolls back the sites that were applied on a timing (those that only
    remove work stay). None otherwise."""
    if comparison is None or not comparison.slower(min_speedup):
        return None
    return (f"the optimized model measured slower than the original ({comparison.after_s * 1e3:.2f} ms against "
            f"{comparison.before_s * 1e3:.2f} ms, {comparison.describe()})")
