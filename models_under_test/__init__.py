"""Model zoo for testing and benchmarking the optimizer: project-defined CNNs with seeded,
BN-calibrated random weights.

``names()`` lists the models, ``get(name, seed=..., num_classes=...)`` builds one in eval mode,
``spec(name)`` gives its input resolutions, ``example_input(name)`` a matching random input, and
``load_checkpoint(model, path_or_state_dict)`` loads user weights into it.
"""

from .checkpoint import load_checkpoint
from .registry import ModelSpec, example_input, get, names, spec

__all__ = ["ModelSpec", "example_input", "get", "load_checkpoint", "names", "spec"]
