"""Capture a PyTorch model as a flat ATen graph with torch.export, falling back to submodules.

`torch.export.export(model, args, strict=False)` runs the model's Python with fake tensors and
records every op it reaches, so any wrapper (timm's BatchNormAct2d, Conv2dSame, F.conv2d,
in-place activations) comes out as plain `aten.conv2d` / `aten.batch_norm` / `aten.relu_` /
`aten.pad` / `aten.mean` / `aten.linear` nodes, with the parameters as `get_attr` nodes under
their original paths (so the state_dict keeps its keys). The batch dimension is dynamic
(Dim.AUTO, which specializes quietly when the model pins it); spatial dimensions too when asked.
A batch-1 example is exported at batch 2, because export specializes a size-1 dimension.

With dynamic H and W, torch.export reasons symbolically about every size the model computes, and
for a model that computes pad widths from the input size (TF "same" padding: timm's
get_same_padding takes ceil(H / stride) of the symbolic H) that reasoning is most of the cost:
the nested ceil / max expressions of the five stride-2 stages go through sympy's value-range
analysis at every later shape check, and export takes minutes (tf_efficientnet_lite0 at 160²:
1.5 to 3 min against 4 s static; tf_mobilenetv3_small_100: 108 s size-oblivious, 215 s plain,
2 s static, torch 2.14). That is torch.export's own cost, not a failed attempt retried (the
size-oblivious export, the faster of the two, succeeds first), so capture_regions says so up
front (a warning, and a note in the report): a quick eager probe at H and at H + 1 finds pads
whose widths change with the input size, and the warning names them and the alternative,
static capture at the resolution the model runs.

Where export fails on the whole model (data-dependent control flow), each child is tried in
turn with the arguments it received in one run of the model, descending until the largest
exportable submodules are found; each becomes a *region*, optimized on its own and installed
back in place of its submodule.

Two normalizations make the graph easy to match: eval-mode dropout is removed, and in-place
elementwise ops (relu_, silu_, add_...) on a freshly computed tensor become their functional
form, with the readers that come after them rewired to the new value (passes/fx/inplace.py; the
adapter puts the activations back in place once the passes are done).
"""
from __future__ import annotations

import contextlib
import inspect
import warnings
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.fx.experimental._config  # noqa: F401 - export's shape config (size-oblivious)
import torch.nn as nn
from torch.export import Dim

from .constants import fold_constants
from .inplace import functionalize

IDENTITY_OPS = ("aten.dropout.default", "aten.dropout_.default", "aten.feature_dropout.default",
                "aten.alpha_dropout.default", "aten.clone.default", "aten.detach.default")


@dataclass
class Region:
    path: str              # qualified name of the captured submodule ("" = the whole model)
    module: fx.GraphModule
    inputs: tuple          # the example arguments it was captured with


def capture_regions(model: nn.Module, example_inputs: tuple, *, dynamic_spatial: bool = False,
                    notes: list | None = None) -> list[Region]:
    """Export the model, or its largest exportable submodules; normalize each graph."""
    notes = notes if notes is not None else []
    if dynamic_spatial:
        slow = slow_dynamic_export_warning(model, example_inputs)
        if slow:
            notes.append(slow)
            warnings.warn(slow, stacklevel=2)
    gm, error = _export(model, example_inputs, dynamic_spatial)
    if gm is not None:
        return [Region("", _normalized(gm), example_inputs)]
    notes.append(f"<model> could not be captured by torch.export ({error}); optimizing its exportable submodules")
    calls = _child_arguments(model, example_inputs)
    regions: list[Region] = []
    _descend(model, "", calls, dynamic_spatial, notes, regions)
    return regions


def _descend(module: nn.Module, path: str, calls: dict, dynamic_spatial: bool, notes: list, regions: list) -> None:
    for name, child in module.named_children():
        child_path = f"{path}.{name}" if path else name
        if child_path not in calls:
            if any(True for _ in child.children()):   # a container (ModuleList, ModuleDict) its owner iterates
                _descend(child, child_path, calls, dynamic_spatial, notes, regions)
            continue            # never called in the example run: nothing to capture it with
        args = calls[child_path]
        gm, error = _export(child, args, dynamic_spatial)
        if gm is not None:
            regions.append(Region(child_path, _normalized(gm), args))
        elif any(True for _ in child.children()):
            notes.append(f"{child_path} could not be captured ({error}); trying its submodules")
            _descend(child, child_path, calls, dynamic_spatial, notes, regions)
        else:
            notes.append(f"{child_path} could not be captured ({error}); left as it is")


def _child_arguments(model: nn.Module, example_inputs: tuple) -> dict[str, tuple]:
    """The positional tensor arguments each submodule received at its first call."""
    calls: dict[str, tuple] = {}
    handles = []
    for path, module in model.named_modules():
        if path:
            def hook(mod, args, kwargs, path=path):
                if path not in calls and not kwargs and all(isinstance(a, torch.Tensor) for a in args) and args:
                    calls[path] = tuple(a.detach().clone() for a in args)
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    return calls


SLOW_DYNAMIC_EXPORT = (
    "dynamic_spatial=True: {count} module(s) compute their pad widths from the input size ({where}: TF \"same\" "
    "padding, as in timm's tf_* models), and torch.export's symbolic-shape reasoning over such widths can take "
    "minutes (timm's tf_efficientnet_lite0 at 160x160: 1.5 to 3 min, against about 4 s for a static capture); "
    "those pads are also left unabsorbed, since their widths depend on H and W. For a fast capture and the pads folded into "
    "their convs, optimize with dynamic_spatial=False at the resolution the model runs (once per resolution)")
_PADS = (torch.nn.functional.pad, torch._C._nn.pad, torch.constant_pad_nd)


class _PadWidths(torch.overrides.TorchFunctionMode):
    """Records (the calling module's path, the widths) of every pad called (F.pad, aten pad), in
    call order; the path is that of the innermost module whose forward is on the stack."""

    def __init__(self, names: dict):
        super().__init__()
        self.names, self.pads = names, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PADS:
            pad = args[1] if len(args) > 1 else kwargs.get("pad")
            self.pads.append((self._caller(), tuple(int(p) for p in pad) if pad is not None else None))
        return func(*args, **kwargs)

    def _caller(self) -> str:
        frame = inspect.currentframe()
        while frame is not None:
            name = self.names.get(id(frame.f_locals.get("self")))
            if name is not None:
                return name or "<model>"
            frame = frame.f_back
        return "<model>"


def size_dependent_pads(module: nn.Module, args: tuple) -> list[str]:
    """The paths of the modules whose pads change width when H and W of the 4-d inputs grow by
    one (the model computes the widths from the input size), from two eager runs on one image;
    [] when there is none or the model cannot run at the other size."""
    names = {id(m): path for path, m in module.named_modules()}
    pads = []
    for grow in (0, 1):
        probe = tuple(_grown(a[:1] if isinstance(a, torch.Tensor) and a.dim() == 4 else a, grow) for a in args)
        try:
            with torch.no_grad(), _PadWidths(names) as seen:
                module(*probe)
        except Exception:  # noqa: BLE001 - a model pinned to its resolution: nothing to tell
            return []
        pads.append(seen.pads)
    if len(pads[0]) != len(pads[1]):
        return []
    return list(dict.fromkeys(name for (name, a), (_, b) in zip(*pads) if a != b))


def _grown(x, grow: int):
    if not grow or not isinstance(x, torch.Tensor) or x.dim() != 4:
        return x
    return torch.nn.functional.pad(x, (0, grow, 0, grow), mode="replicate")


def slow_dynamic_export_warning(module: nn.Module, args: tuple) -> str | None:
    """The up-front warning for a dynamic-spatial capture that torch.export will take long over, or None."""
    where = size_dependent_pads(module, args)
    if not where:
        return None
    named = ", ".join(where[:3]) + (", ..." if len(where) > 3 else "")
    return SLOW_DYNAMIC_EXPORT.format(count=len(where), where=named)


def _export(module: nn.Module, args: tuple, dynamic_spatial: bool):
    """(GraphModule, None) or (None, the first line of why export failed).

    With dynamic_spatial, the export first runs size-oblivious: by default export specializes
    any dimension that is 1 at some layer (a 7² input after a stride of 8), or guards it to stay
    above 1, which would pin the result to part of the resolutions. Where the oblivious export
    fails or leaves H and W static, the plain export follows."""
    args = tuple(_at_least_batch_2(a) for a in args)
    dynamic = tuple(_dynamic_dims(a, dynamic_spatial) for a in args)
    error = None
    for oblivious in ((True, False) if dynamic_spatial and _SIZE_OBLIVIOUS else (False,)):
        try:
            with warnings.catch_warnings(), _size_oblivious(oblivious):
                warnings.simplefilter("ignore")
                program = torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)
            if not oblivious:
                return program.module(), None
            gm = program.module()
            if _spatial_is_dynamic(program) and _runs_at_batch_1(gm, args):
                return gm, None
        except Exception as exc:  # noqa: BLE001 - export raises many unrelated types; all mean "not capturable"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            error = f"{type(exc).__name__}: {first[:160]}"   # the last try is the plain export
    return None, error


_SIZE_OBLIVIOUS = hasattr(torch.fx.experimental._config, "backed_size_oblivious")


def _size_oblivious(on: bool):
    return torch.fx.experimental._config.patch(backed_size_oblivious=True) if on else contextlib.nullcontext()


def _runs_at_batch_1(gm: fx.GraphModule, args: tuple) -> bool:
    """A size-oblivious export may still guard the batch to be ≥ 2 (found by the fuzzer)."""
    try:
        with torch.no_grad():
            gm(*(a[:1] if isinstance(a, torch.Tensor) and a.dim() else a for a in args))
        return True
    except Exception:  # noqa: BLE001 - a guard or any other failure: use the plain export
        return False


def _spatial_is_dynamic(program) -> bool:
    """Whether H and W of every 4-d input stayed symbolic (the model may pin its resolution)."""
    inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" and node.name in inputs else None
        if isinstance(val, torch.Tensor) and val.dim() == 4 and not all(isinstance(d, torch.SymInt) for d in val.shape[2:]):
            return False
    return True


def _at_least_batch_2(x):
    if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] == 1:
        return torch.cat([x, x])
    return x


def _dynamic_dims(x, dynamic_spatial: bool):
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        return None
    dims = {0: Dim.AUTO}
    if dynamic_spatial and x.dim() == 4:
        dims.update({2: Dim.AUTO, 3: Dim.AUTO})
    return dims


# -- normalization ---------------------------------------------------------------------------

def _normalized(gm: fx.GraphModule) -> fx.GraphModule:
    for module in gm.modules():      # the capture is of eval-mode behaviour (export's module refuses eval() itself)
        module.training = False
    _drop_identities(gm)
    functionalize(gm)
    fold_constants(gm)               # what does not depend on the input, evaluated once (onnxslim does it for ONNX)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return gm


def _drop_identities(gm: fx.GraphModule) -> None:
    """Bypass eval-mode dropout (train=False) and clone/detach: they only split chains."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or str(node.target) not in IDENTITY_OPS or not node.args:
            continue
        if "dropout" in str(node.target) and (node.args[2:3] or [node.kwargs.get("train", True)])[0]:
            continue
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
