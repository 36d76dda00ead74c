"""rewrite.algebra.merge: parallel linear branches summed into one conv, against float64 ground truth."""
import pytest
import torch

from rewrite.algebra.merge import branch_conv, check_merge, identity_conv, merge_convs, scaled
from rewrite.ir import ConvSpec
from tests.helpers import random_affine

G = torch.Generator().manual_seed(0)


def conv(cin, cout, k, stride=1, padding=None, groups=1, dilation=1, bias=True):
    pad = (k // 2 * dilation,) * 4 if padding is None else padding
    w = torch.randn(cout, cin // groups, k, k, generator=G, dtype=torch.float64)
    b = torch.randn(cout, generator=G, dtype=torch.float64) if bias else None
    return ConvSpec(w, b, (stride, stride), pad, (dilation, dilation), groups)


def check_sum(branches, x):
    merged = merge_convs(branches)
    want = sum(b.apply(x) for b in branches)
    got = merged.apply(x)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()
    return merged


def test_mobileone_depthwise_block():
    """k dw3x3 branches + a dw1x1 'scale' branch + a BatchNorm on x, all BN-folded."""
    c = 8
    x = torch.randn(2, c, 9, 11, dtype=torch.float64)
    branches = [branch_conv([conv(c, c, 3, groups=c, bias=False), random_affine(c)], c) for _ in range(3)]
    branches.append(branch_conv([conv(c, c, 1, groups=c, bias=False), random_affine(c)], c))
    branches.append(branch_conv([random_affine(c)], c, torch.float64))
    merged = check_sum(branches, x)
    assert merged.kernel_size == (3, 3) and merged.groups == c and merged.padding == (1, 1, 1, 1)


@pytest.mark.parametrize("stride", [1, 2])
def test_repvgg_dense_block(stride):
    x = torch.randn(2, 6, 10, 10, dtype=torch.float64)
    branches = [conv(6, 6, 3, stride), conv(6, 6, 1, stride, padding=(0, 0, 0, 0))]
    if stride == 1:
        branches.append(branch_conv([random_affine(6)], 6, torch.float64))
    merged = check_sum(branches, x)
    assert merged.groups == 1 and merged.kernel_size == (3, 3)


def test_asymmetric_same_padding_and_larger_kernels():
    x = torch.randn(1, 4, 12, 12, dtype=torch.float64)
    branches = [conv(4, 4, 5, padding=(1, 3, 2, 2)), conv(4, 4, 3, padding=(0, 2, 1, 1))]
    merged = check_sum(branches, x)
    assert merged.kernel_size == (5, 5) and merged.padding == (1, 3, 2, 2)


def test_groups_take_the_coarsest_common_grouping():
    x = torch.randn(1, 8, 7, 7, dtype=torch.float64)
    merged = check_sum([conv(8, 8, 3, groups=2), conv(8, 8, 3, groups=4), identity_conv(8, torch.float64)], x)
    assert merged.groups == 2


def test_dilated_branches():
    x = torch.randn(1, 4, 13, 13, dtype=torch.float64)
    merged = check_sum([conv(4, 4, 3, dilation=2), conv(4, 4, 1, padding=(0,) * 4)], x)
    assert merged.dilation == (2, 2)


def test_signs_and_layer_scales():
    """FastViT's RepMixer: x + γ ⊙ (BN(dwconv(x)) − BN(x)) is one depthwise conv."""
    c = 6
    x = torch.randn(2, c, 8, 8, dtype=torch.float64)
    gamma = torch.randn(c, dtype=torch.float64)
    mixer = branch_conv([conv(c, c, 3, groups=c), random_affine(c)], c)
    norm = branch_conv([random_affine(c)], c, torch.float64)
    merged = merge_convs([identity_conv(c, torch.float64), scaled(mixer, gamma), scaled(norm, -gamma)])
    bn_x = norm.apply(x)
    want = x + gamma.view(1, -1, 1, 1) * (mixer.apply(x) - bn_x)
    assert (merged.apply(x) - want).abs().max() <= 1e-12 * want.abs().max()


@pytest.mark.parametrize("branches, reason", [
    ([conv(4, 4, 3, stride=2), conv(4, 4, 3)], "stride"),
    ([conv(4, 4, 3), conv(4, 4, 1, padding=(0,) * 4), conv(4, 6, 3)], "channels"),
    ([conv(4, 4, 3, padding=(0,) * 4), conv(4, 4, 1, padding=(0,) * 4)], "output size"),
    ([conv(4, 4, 3, dilation=2), conv(4, 4, 3)], "dilation"),
    ([conv(4, 4, 3)], "fewer than two"),
])
def test_misaligned_branches_are_declined_with_the_reason(branches, reason):
    assert reason in check_merge(branches)
    with pytest.raises(ValueError, match=reason):
        merge_convs(branches)


def test_centre_offset_not_a_multiple_of_the_dilation():
    a = conv(4, 4, 3, dilation=2, padding=(2, 2, 2, 2))
    b = conv(4, 4, 3, dilation=2, padding=(1, 3, 2, 2))
    assert "centres do not align" in check_merge([a, b])


def test_float32_branches_merge_in_float64():
    c = 4
    branches = [conv(c, c, 3).to(torch.float32), identity_conv(c)]
    merged = merge_convs(branches)
    assert merged.weight.dtype == torch.float32
    x = torch.randn(1, c, 6, 6)
    want = sum(b.to(torch.float64).apply(x.double()) for b in branches)
    assert (merged.apply(x).double() - want).abs().max() <= 1e-5 * want.abs().max()


# ------------------------------------------------------------------------- collapse beyond dw/pw
from rewrite.algebra import check_collapse_pair, collapse_pair  # noqa: E402


@pytest.mark.parametrize("first, second", [
    (conv(6, 10, 1, padding=(0,) * 4), conv(10, 4, 1, padding=(0,) * 4)),              # pw → pw
    (conv(6, 8, 3), conv(8, 5, 1, padding=(0,) * 4)),                                   # KxK → pw
    (conv(6, 8, 3, groups=2), conv(8, 5, 1, stride=2, padding=(0,) * 4)),              # grouped KxK → strided pw
    (conv(6, 8, 1, padding=(0,) * 4, bias=False), conv(8, 8, 3, groups=4)),           # pw → grouped KxK
    (conv(6, 8, 1, padding=(0,) * 4), conv(8, 4, 3, padding=(0,) * 4, stride=2)),     # pw (bias) → unpadded KxK
], ids=["pw_pw", "kxk_pw", "gconv_spw", "pw_gconv", "pw_kxk_nopad"])
def test_collapse_pair_is_exact(first, second):
    x = torch.randn(2, 6, 11, 11, dtype=torch.float64)
    merged = collapse_pair(first, second)
    want = second.apply(first.apply(x))
    assert (merged.apply(x) - want).abs().max() <= 1e-12 * want.abs().max()


def test_collapse_pair_declines_with_the_reason():
    assert "bias meets" in check_collapse_pair(conv(6, 8, 1, padding=(0,) * 4), conv(8, 8, 3))
    assert "neither conv is a plain 1x1" in check_collapse_pair(conv(6, 8, 3), conv(8, 8, 3))
    assert "strided 1x1" in check_collapse_pair(conv(6, 8, 1, stride=2, padding=(0,) * 4), conv(8, 8, 3))
    assert "channel mismatch" in check_collapse_pair(conv(6, 8, 3), conv(6, 8, 1, padding=(0,) * 4))
