"""Answers: Do the nineteen real torchvision / timm models build, seeded and calibrated, and run?
Takes about 3 min (23 tests) on the 2-core development machine shared with other jobs
(2026-12-07). Was tests/test_real_models.py.

Tests of the real torchvision / timm models (``models_under_test.real``): table and lookup,
seeded BN-calibrated builds that run on the small example input. CPU only."""

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

import models_under_test as zoo

pytest.importorskip("torchvision")
pytest.importorskip("timm")

NAMES = [
    "tv/mobilenet_v2", "tv/mobilenet_v3_large", "tv/efficientnet_b0", "tv/efficientnet_v2_s",
    "tv/mnasnet1_0", "tv/convnext_tiny", "tv/shufflenet_v2_x1_0", "tv/resnet18",
    "timm/efficientnet_lite0", "timm/mobilenetv3_large_100", "timm/mobilenetv4_conv_small",
    "timm/mobilenetv4_hybrid_medium", "timm/mixnet_s", "timm/fbnetc_100", "timm/lcnet_100",
    "timm/tf_efficientnetv2_b0", "timm/legacy_xception", "timm/ghostnet_100",
    "timm/convnext_atto",
]
NO_BATCHNORM = {"tv/convnext_tiny", "timm/convnext_atto"}
NUM_CLASSES = 10


def test_real_names():
    assert zoo.real_names() == NAMES
    for name, entry in zoo.REAL_MODELS.items():
        assert name == f"{'tv' if entry.source == 'torchvision' else 'timm'}/{entry.constructor}"
        assert entry.input_size >= 192 and entry.description


@pytest.mark.parametrize("lookup", [zoo.build_real, zoo.real_example_input])
def test_unknown_name_lists_valid_names(lookup):
    with pytest.raises(KeyError, match="tv/mobilenet_v2.*timm/convnext_atto"):
        lookup("tv/alexnet")


def test_real_example_input():
    x = zoo.real_example_input("tv/resnet18", batch=2)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x, zoo.real_example_input("tv/resnet18", batch=2))
    assert not torch.equal(x, zoo.real_example_input("tv/resnet18", batch=2, seed=1))
    assert zoo.real_example_input("timm/mixnet_s", size=32).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("name", NAMES)
def test_build_real(name):
    rng_state = torch.get_rng_state()
    model = zoo.build_real(name, num_classes=NUM_CLASSES)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert not any(m.training for m in model.modules())

    again = zoo.build_real(name, num_classes=NUM_CLASSES).state_dict()
    state = model.state_dict()
    assert state.keys() == again.keys()
    assert all(torch.equal(state[k], again[k]) for k in state)

    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bool(bns) != (name in NO_BATCHNORM)
    for bn in bns:
        assert not (torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1))

    with torch.no_grad():
        y = model(zoo.real_example_input(name, batch=2))
    assert y.shape == (2, NUM_CLASSES) and torch.isfinite(y).all()
