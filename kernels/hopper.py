"""Compile a Triton kernel for Hopper (sm_90) on a machine without a GPU, and read what it made.

The one kernel-performance signal every change gets without a GPU: ``build_sm90(kernel, args,
constexprs, num_warps, num_stages)`` specialises the arguments exactly as a launch would (Triton's
own ``native_specialize_impl``: 16-divisible ints and aligned pointers get ``tt.divisibility``,
ints equal to 1 become constants, ``do_not_specialize`` parameters stay plain), compiles for
``GPUTarget("cuda", 90, 32)`` (the last argument is the warp size) and returns a ``HopperBuild``:

    mma_versions    the ``nvidia_mma`` layouts' major versions in the TTGIR (3: wgmma, 2: mma.sync)
    dots, async_dots, wait_pendings
                    the ``warp_group_dot`` ops, how many are asynchronous, and the ``pendings`` of
                    each ``warp_group_dot_wait`` (0: the dot is waited for at once, no overlap)
    cp_async, tma   ``cp.async`` (pipelined loads into shared memory) and ``cp.async.bulk.tensor``
                    (TMA) instructions in the PTX
    loads, stores   global load / store instructions by width in bits (128: vectorised)
    registers, spill_bytes
                    from ``ptxas -v`` on the PTX (the cubin's own count)
    shared_bytes    the shared memory the kernel allocates (an H100/H200 SM has 228 KB, 227 KB per block)

Arguments are given as for a launch, with a tensor's dtype standing for the tensor
(``torch.float16`` for an fp16 pointer, assumed 16-byte aligned as the caching allocator gives).
Compiling takes 1-3 s per build. Needs Triton >= 3.3 (``native_specialize_impl``) and its bundled
``ptxas``; nothing here runs a kernel.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

HOPPER = ("cuda", 90, 32)  # backend, compute capability, warp size
SMEM_PER_BLOCK = 227 * 1024  # bytes an sm_90 block may opt in to (228 KB per SM)
_WIDTH = {"b8": 8, "u8": 8, "s8": 8, "b16": 16, "u16": 16, "s16": 16, "f16": 16, "b32": 32, "u32": 32,
          "s32": 32, "f32": 32, "b64": 64, "u64": 64, "s64": 64, "f64": 64}


@dataclass(frozen=True)
class HopperBuild:
    ttgir: str
    ptx: str
    num_warps: int
    num_stages: int
    shared_bytes: int
    registers: int
    spill_bytes: int

    @property
    def mma_versions(self) -> set[int]:
        return {int(v) for v in re.findall(r"nvidia_mma<\{versionMajor = (\d+)", self.ttgir)}

    @property
    def dots(self) -> int:
        return len(re.findall(r"= (?:ttng\.warp_group_dot|tt\.dot) ", self.ttgir))

    @property
    def async_dots(self) -> int:
        return len(re.findall(r"ttng\.warp_group_dot [^\n]*isAsync = true", self.ttgir))

    @property
    def wait_pendings(self) -> list[int]:
        return [int(p) for p in re.findall(r"ttng\.warp_group_dot_wait [^\n]*pendings = (\d+)", self.ttgir)]

    @property
    def cp_async(self) -> int:
        return len(re.findall(r"\bcp\.async\.c[ag]\b", self.ptx))

    @property
    def cp_async_bytes(self) -> Counter:
        """cp.async copies by size in bytes (16: a 128-bit copy)."""
        return Counter(int(n, 0) for n in re.findall(r"\bcp\.async\.c[ag]\.shared\.global[^\n]*?\],\s*(0x[0-9a-f]+|\d+)", self.ptx))

    @property
    def tma(self) -> int:
        return len(re.findall(r"\bcp\.async\.bulk\.tensor\b", self.ptx))

    def _widths(self, op: str) -> Counter:
        out = Counter()
        for vec, kind in re.findall(rf"\b{op}\.global(?:\.[a-z_]+)*?(?:\.v(\d))?\.([bfsu]\d+)\b", self.ptx):
            out[int(vec or 1) * _WIDTH[kind]] += 1
        return out

    @property
    def loads(self) -> Counter:
        """Global loads by width in bits."""
        return self._widths("ld")

    @property
    def stores(self) -> Counter:
        """Global stores by width in bits."""
        return self._widths("st")

    def summary(self) -> str:
        return (f"mma v{sorted(self.mma_versions)}, {self.dots} dots ({self.async_dots} async, waits "
                f"{self.wait_pendings}), cp.async {self.cp_async}, TMA {self.tma}, loads {dict(self.loads)}, "
                f"stores {dict(self.stores)}, {self.registers} registers, {self.spill_bytes} B spilled, "
                f"{self.shared_bytes} B shared, {self.num_warps} warps, {self.num_stages} stages")


def _specialise(kernel, args: dict, constexprs: dict, backend):
    """Signature, constants and attributes as JITFunction.run derives them from launch arguments."""
    from triton.runtime.jit import MockTensor, native_specialize_impl

    signature, constants, attrs = {}, {}, {}
    for i, param in enumerate(kernel.params):
        name = param.name
        if param.is_constexpr:
            if name not in constexprs:
                raise ValueError(f"constexpr {name} of {kernel.__name__} has no value")
            signature[name], constants[name] = "constexpr", constexprs[name]
            continue
        if name not in args:
            raise ValueError(f"argument {name} of {kernel.__name__} has no value")
        value = args[name]
        value = MockTensor(value) if isinstance(value, torch.dtype) else value
        kind, spec = native_specialize_impl(type(backend), value, param.is_const, not param.do_not_specialize,
                                            not param.do_not_specialize_on_alignment)
        signature[name] = kind
        if kind == "constexpr":
            constants[name] = spec
        elif isinstance(spec, str) and spec:
            attrs[(i,)] = backend.parse_attr(spec)
    return signature, constants, attrs


def _ptxas_counts(ptx: str) -> tuple[int, int]:
    """(registers, spill bytes) that ptxas reports for the PTX, compiled for sm_90a."""
    from triton.backends.nvidia.compiler import get_ptxas

    tool = get_ptxas(90)
    ptxas = getattr(tool, "path", tool)
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "kernel.ptx"
        src.write_text(ptx)
        done = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", str(src), "-o", str(Path(d) / "kernel.cubin")],
                              capture_output=True, text=True, check=True)
    registers = re.findall(r"Used (\d+) registers", done.stderr)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    return int(registers[-1]) if registers else 0, int(spills[-1]) if spills else 0


def build_sm90(kernel, args: dict, constexprs: dict, *, num_warps: int, num_stages: int) -> HopperBuild:
    """Compile ``kernel`` (a @triton.jit function, or an autotuner/heuristics wrapper of one) for
    sm_90 with these launch arguments; see the module docstring."""
    import triton
    from triton.backends.compiler import GPUTarget

    while not hasattr(kernel, "params"):  # unwrap Autotuner / Heuristics
        kernel = kernel.fn
    target = GPUTarget(*HOPPER)
    backend = triton.compiler.make_backend(target)
    signature, constants, attrs = _specialise(kernel, args, constexprs, backend)
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
    options = backend.parse_options({"num_warps": num_warps, "num_stages": num_stages})
    compiled = triton.compile(source, target=target, options=options.__dict__)
    ptx = compiled.asm["ptx"]
    registers, spills = _ptxas_counts(ptx)
    return HopperBuild(compiled.asm["ttgir"], ptx, num_warps, num_stages, int(compiled.metadata.shared),
                       registers, spills)
