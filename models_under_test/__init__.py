"""Model zoo for testing and benchmarking the optimizer: project-defined CNNs with seeded,
BN-calibrated random weights.

``names()`` lists the models, ``get(name, seed=..., num_classes=...)`` builds one in eval mode,
``spec(name)`` gives its input resolutions, ``example_input(name)`` a matching random input, and
``load_checkpoint(model, path_or_state_dict)`` loads user weights into it.

``real_names()``, ``build_real(name)`` and ``real_example_input(name)`` do the same for the
reference torchvision and timm implementations (``real``; those libraries are optional).
"""

from .checkpoint import load_checkpoint
from .real import REAL_MODELS, REPARAM_MODELS, build_real, real_example_input, real_names, reparam_names
from .registry import ModelSpec, example_input, get, names, spec

__all__ = [
    "REAL_MODELS", "REPARAM_MODELS", "ModelSpec", "build_real", "example_input", "get", "load_checkpoint", "names",
    "real_example_input", "real_names", "reparam_names", "spec",
]
