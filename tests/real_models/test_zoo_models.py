"""Answers: Is the built-in zoo (models_under_test) what it claims: registry, parameter and block counts, seeded init, FX traceability, checkpoints? No rewrite runs.
Takes about 2 min (103 tests) on the 2-core development machine shared with other jobs
(2026-12-07). Was tests/test_zoo.py.

Tests of the model zoo (``models_under_test``): registry API, architectures, seeded init,
FX traceability and checkpoint loading. CPU only, small inputs."""

import dataclasses
import functools

import pytest
import torch
from torch import fx, nn

import models_under_test as zoo
from models_under_test.blocks import SqueezeExcite, StochasticDepth
from models_under_test.efficientnet import FusedMBConv
from models_under_test.mobilevit import MobileViTBlock

NAMES = [
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "efficientnet_b0", "efficientnet_v2_s", "xception", "convnext_tiny",
    "resnet18", "resnet50", "mobilevit_xs",
]
TRACEABLE = [n for n in NAMES if n != "mobilevit_xs"]

# Parameter counts published with the papers (millions), and the exact counts of the reference
# implementations (torchvision; timm's legacy Xception; ml-cvnets MobileViT-XS), 1000 classes.
PUBLISHED_PARAMS_M = {
    "mobilenet_v1": 4.2, "mobilenet_v2": 3.5, "mobilenet_v3_large": 5.4, "mobilenet_v3_small": 2.5,
    "efficientnet_b0": 5.3, "efficientnet_v2_s": 22.0, "xception": 22.9, "convnext_tiny": 28.6,
    "resnet18": 11.7, "resnet50": 25.6, "mobilevit_xs": 2.3,
}
REFERENCE_PARAMS = {
    "mobilenet_v1": 4_231_976, "mobilenet_v2": 3_504_872, "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856, "efficientnet_b0": 5_288_548,
    "efficientnet_v2_s": 21_458_488, "xception": 22_855_952, "convnext_tiny": 28_589_128,
    "resnet18": 11_689_512, "resnet50": 25_557_032, "mobilevit_xs": 2_317_848,
}
# Depthwise convs, squeeze-excite modules and Fused-MBConv blocks per the papers' tables.
DEPTHWISE = {
    "mobilenet_v1": 13, "mobilenet_v2": 17, "mobilenet_v3_large": 15, "mobilenet_v3_small": 11,
    "efficientnet_b0": 16, "efficientnet_v2_s": 30, "xception": 34, "convnext_tiny": 18,
    "resnet18": 0, "resnet50": 0, "mobilevit_xs": 7,
}
SQUEEZE_EXCITE = {"mobilenet_v3_large": 8, "mobilenet_v3_small": 9, "efficientnet_b0": 16,
                  "efficientnet_v2_s": 30}


@functools.cache
def model(name: str) -> nn.Module:
    """The default-seed build, shared by the tests that only read it."""
    return zoo.get(name)


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels > 1


# --- registry API -------------------------------------------------------------------------------


def test_names():
    assert zoo.names() == NAMES


@pytest.mark.parametrize("lookup", [zoo.get, zoo.spec, zoo.example_input])
def test_unknown_name_lists_valid_names(lookup):
    with pytest.raises(KeyError, match="mobilenet_v2.*mobilevit_xs"):
        lookup("alexnet")


def test_spec():
    sizes = {n: zoo.spec(n).input_size for n in NAMES}
    assert sizes["xception"] == 299 and sizes["mobilevit_xs"] == 256
    assert sizes["efficientnet_v2_s"] == 384 and sizes["resnet50"] == 224
    s = zoo.spec("resnet50")
    assert s.name == "resnet50" and s.small_input_size == 64 and s.description
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.input_size = 1


def test_example_input():
    x = zoo.example_input("xception")
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert zoo.example_input("xception", batch=2, small=False).shape == (2, 3, 299, 299)
    assert torch.equal(x, zoo.example_input("xception"))
    assert not torch.equal(x, zoo.example_input("xception", seed=1))


def test_num_classes():
    m = zoo.get("mobilenet_v3_small", num_classes=10)
    with torch.no_grad():
        assert m(zoo.example_input("mobilenet_v3_small")).shape == (1, 10)


# --- models ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_forward_small(name):
    m = model(name)
    assert not any(mod.training for mod in m.modules())
    with torch.no_grad():
        y = m(zoo.example_input(name))
        y2 = m(zoo.example_input(name, seed=1))
    assert y.shape == (1, 1000)
    assert torch.isfinite(y).all()
    assert 0.05 < y.std().item() < 20
    assert not torch.allclose(y, y2)


@pytest.mark.parametrize("name", NAMES)
def test_forward_published_resolution(name):
    """BN is calibrated at the published resolution, so logits stay O(1) there too."""
    with torch.no_grad():
        y = model(name)(zoo.example_input(name, small=False))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()
    assert 0.05 < y.std().item() < 20


@pytest.mark.parametrize("name", NAMES)
def test_param_count(name):
    count = sum(p.numel() for p in model(name).parameters())
    assert count == REFERENCE_PARAMS[name]
    assert abs(count / 1e6 - PUBLISHED_PARAMS_M[name]) <= 0.1 * PUBLISHED_PARAMS_M[name]


@pytest.mark.parametrize("name", NAMES)
def test_block_counts(name):
    mods = list(model(name).modules())
    assert sum(map(_is_depthwise, mods)) == DEPTHWISE[name]
    assert sum(isinstance(m, SqueezeExcite) for m in mods) == SQUEEZE_EXCITE.get(name, 0)


def test_efficientnet_v2_s_fused_stages():
    fused = [m for m in model("efficientnet_v2_s").modules() if isinstance(m, FusedMBConv)]
    assert len(fused) == 10
    # expansion 1: one 3x3 conv-BN-SiLU; otherwise 3x3 expand + 1x1 linear projection.
    assert [len(f.block) for f in fused] == [1] * 2 + [2] * 8
    assert fused[2].block.fused.conv.kernel_size == (3, 3)
    assert fused[2].block.project.conv.kernel_size == (1, 1) and len(fused[2].block.project) == 2


def test_mobilenet_v2_first_block_has_no_expand():
    blocks = model("mobilenet_v2").features
    assert list(blocks[1].block._modules) == ["dw", "project"]
    assert list(blocks[2].block._modules) == ["expand", "dw", "project"]


def test_xception_separable_convs_have_nothing_between():
    """Every depthwise conv feeds exactly one op, a 1x1 conv, which is followed by BatchNorm."""
    gm = fx.symbolic_trace(model("xception"))
    mods = dict(gm.named_modules())
    dw_nodes = [n for n in gm.graph.nodes if n.op == "call_module" and _is_depthwise(mods[n.target])]
    assert len(dw_nodes) == 34
    for node in dw_nodes:
        (pw,) = node.users
        assert mods[pw.target].kernel_size == (1, 1)
        (bn,) = pw.users
        assert isinstance(mods[bn.target], nn.BatchNorm2d)


def test_stochastic_depth():
    sd = StochasticDepth(0.5)
    x = torch.ones(64, 3, 2, 2)
    assert sd.eval()(x) is x
    y = sd.train()(x)
    kept = y[:, 0, 0, 0]
    assert set(kept.unique().tolist()) == {0.0, 2.0}
    assert (y == kept[:, None, None, None]).all()


# --- seeded init ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_weights(name):
    ref = model(name).state_dict()
    same = zoo.get(name, seed=0).state_dict()
    assert all(torch.equal(ref[k], same[k]) for k in ref)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "convnext_tiny"])
def test_other_seed_other_weights(name):
    ref = model(name).state_dict()
    other = zoo.get(name, seed=1).state_dict()
    identical = [k for k in ref if torch.equal(ref[k], other[k])]
    # Only ConvNeXt's layer scale (a constant) and the BN batch counters do not depend on the seed.
    assert all(k.endswith(("gamma", "num_batches_tracked")) for k in identical)


def test_get_leaves_global_rng_alone():
    state = torch.get_rng_state()
    zoo.get("mobilenet_v3_small", seed=3)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("name", NAMES)
def test_norm_parameters_are_nontrivial(name):
    bns = [m for m in model(name).modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))
        assert bn.momentum == 0.1
    assert bool(bns) == (name != "convnext_tiny")
    for ln in (m for m in model(name).modules() if isinstance(m, nn.LayerNorm)):
        assert not torch.allclose(ln.weight, torch.ones_like(ln.weight))


# --- FX traceability ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRACEABLE)
def test_symbolic_trace_matches(name):
    m = model(name)
    gm = fx.symbolic_trace(m)
    x = zoo.example_input(name, batch=2)
    with torch.no_grad():
        assert torch.equal(gm(x), m(x))


def test_mobilevit_is_not_traceable_but_its_conv_parts_are():
    m = model("mobilevit_xs")
    with pytest.raises((TypeError, fx.proxy.TraceError)):
        fx.symbolic_trace(m)
    block = m.layer3[1]
    assert isinstance(block, MobileViTBlock)
    x = zoo.example_input("mobilevit_xs")
    with torch.no_grad():
        parts = [(m.stem, x)]
        x = m.stem(x)
        parts.append((m.layer1, x))
        x = m.layer2(m.layer1(x))
        parts.append((m.layer3[0], x))
        parts.append((block.local_rep, m.layer3[0](x)))
        for sub, inp in parts:
            assert torch.equal(fx.symbolic_trace(sub)(inp), sub(inp))


def test_mobilevit_unfold_fold_roundtrip_and_odd_sizes():
    block = model("mobilevit_xs").layer3[1]
    x = torch.randn(2, 96, 6, 8)
    patches, orig_size = block._unfold(x)
    assert patches.shape == (2 * 4, 12, 96) and orig_size == (6, 8)
    # patches[b * 4 + 2 * dh + dw, i * 4 + j] is pixel (2i + dh, 2j + dw) of sample b.
    b, dh, dw, i, j = 1, 1, 0, 2, 3
    assert torch.equal(patches[b * 4 + 2 * dh + dw, i * 4 + j], x[b, :, 2 * i + dh, 2 * j + dw])
    assert torch.equal(block._fold(patches, 2, orig_size), x)
    with torch.no_grad():  # 72 -> 9x9, 5x5, 3x3 maps at the MobileViT blocks: resized for unfolding
        y = model("mobilevit_xs")(torch.randn(1, 3, 72, 72))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()


# --- checkpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "mobilevit_xs"])
def test_load_checkpoint_from_wrapped_file(name, tmp_path):
    src = model(name)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in src.state_dict().items()}},
               path)
    dst = zoo.get(name, seed=1)
    assert zoo.load_checkpoint(dst, path) is dst
    x = zoo.example_input(name)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
    lambda sd: {"model_state_dict": {"_orig_mod." + k: v for k, v in sd.items()}},
    lambda sd: {"ema": {"module._orig_mod." + k: v for k, v in sd.items()}},
    lambda sd: {"checkpoint": 1, "model": {"state_dict": sd}},
])
def test_load_checkpoint_containers_and_prefixes(wrap):
    src = model("mobilenet_v3_small").state_dict()
    dst = zoo.load_checkpoint(zoo.get("mobilenet_v3_small", seed=1), wrap(src))
    assert all(torch.equal(v, src[k]) for k, v in dst.state_dict().items())


def test_load_checkpoint_strict_mismatch():
    src = dict(model("mobilenet_v3_small").state_dict())
    src.pop("classifier.3.bias")
    src["classifier.9.weight"] = torch.zeros(1)
    dst = zoo.get("mobilenet_v3_small", seed=1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match=r"missing.*classifier\.3\.bias.*unexpected.*classifier\.9\.weight"):
        zoo.load_checkpoint(dst, src)
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())  # nothing loaded
    zoo.load_checkpoint(dst, src, strict=False)
    assert torch.equal(dst.classifier[3].bias, before["classifier.3.bias"])
    assert torch.equal(dst.classifier[3].weight, src["classifier.3.weight"])


def test_load_checkpoint_tolerates_missing_num_batches_tracked():
    src = {k: v for k, v in model("resnet18").state_dict().items()
           if not k.endswith("num_batches_tracked")}
    dst = zoo.load_checkpoint(zoo.get("resnet18", seed=1), src)
    assert torch.equal(dst.fc.weight, src["fc.weight"])


def test_load_checkpoint_errors():
    m = zoo.get("mobilenet_v3_small", seed=1)
    bad_shape = dict(model("mobilenet_v3_small").state_dict())
    bad_shape["classifier.3.bias"] = torch.zeros(10)
    with pytest.raises(ValueError, match=r"classifier\.3\.bias.*\(10,\).*\(1000,\)"):
        zoo.load_checkpoint(m, bad_shape)
    with pytest.raises(ValueError, match="no state dict found.*'optimizer'"):
        zoo.load_checkpoint(m, {"optimizer": {"lr": 0.1}, "epoch": 3})
    with pytest.raises(TypeError):
        zoo.load_checkpoint(m, [1, 2])
