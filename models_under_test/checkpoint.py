"""Loading user checkpoints into zoo models.

Checkpoints come in many wrappings: a bare state dict, or a training checkpoint holding it under
``state_dict`` / ``model`` / ``model_state_dict`` / ``ema`` ..., with keys prefixed by ``module.``
(``DataParallel`` / ``DistributedDataParallel``) or containing ``_orig_mod.`` (``torch.compile``).
"""

import os
from collections.abc import Mapping

import torch
from torch import nn

# Keys under which training scripts store the weights, in order of preference (the raw weights
# before their EMA).
CONTAINER_KEYS = (
    "state_dict", "model_state_dict", "model", "module", "net", "network",
    "ema", "model_ema", "state_dict_ema", "ema_state_dict",
)


def _find_state_dict(obj: Mapping) -> Mapping[str, torch.Tensor]:
    """Descend through container keys until reaching a mapping whose values are all tensors."""
    while not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            raise ValueError(
                "no state dict found in the checkpoint: its keys are "
                f"{sorted(map(str, obj))}, none of which is a known container {list(CONTAINER_KEYS)}"
            )
    return obj


def _strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``_orig_mod`` path components anywhere, then a ``module.`` prefix shared by all keys."""
    out = {
        ".".join(part for part in key.split(".") if part != "_orig_mod"): value
        for key, value in state_dict.items()
    }
    while out and all(key.startswith("module.") for key in out):
        out = {key[len("module."):]: value for key, value in out.items()}
    return out


def load_checkpoint(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike | Mapping,
    *,
    strict: bool = True,
) -> nn.Module:
    """Load weights into ``model`` and return it.

    ``path_or_state_dict`` is a file written by ``torch.save`` (read with ``weights_only=True``,
    onto the CPU) or an already loaded mapping. The state dict is found under the usual container
    keys (``CONTAINER_KEYS``) and DataParallel / torch.compile prefixes are removed. With
    ``strict``, a ``ValueError`` names the missing and unexpected keys, and nothing is loaded; a
    missing ``num_batches_tracked`` is tolerated (checkpoints converted from other frameworks lack
    it, and eval mode does not use it). A shape mismatch is always a ``ValueError``.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        obj = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
    else:
        obj = path_or_state_dict
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a checkpoint mapping, got {type(obj).__name__}")
    state_dict = _strip_wrapper_prefixes(_find_state_dict(obj))

    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    if strict and (missing or unexpected):
        raise ValueError(
            f"checkpoint does not match {type(model).__name__}: "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape
    ]
    if mismatched:
        raise ValueError(f"checkpoint shapes do not match {type(model).__name__}: {mismatched}")
    model.load_state_dict(state_dict, strict=False)
    return model
