"""The merge pass (structural reparameterization), in both formats: each block below goes through
optimize() and, exported to ONNX, through optimize_onnx; the merged sites, the declines and their
reasons, and the numbers must agree."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rewrite import optimize, optimize_onnx
from tests.helpers import batchnorm, to_onnx


def conv_bn(cin, cout, k, stride=1, groups=1, padding=None, dilation=1, seed=0):
    pad = k // 2 * dilation if padding is None else padding
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation, groups, bias=False), batchnorm(cout, seed))


class RepVggBlock(nn.Module):
    """relu(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))."""

    def __init__(self, c=8, stride=1):
        super().__init__()
        self.kxk, self.one = conv_bn(c, c, 3, stride, seed=1), conv_bn(c, c, 1, stride, seed=2)
        self.identity = batchnorm(c, 3) if stride == 1 else None

    def forward(self, x):
        y = self.kxk(x) + self.one(x)
        return torch.relu(y + self.identity(x) if self.identity is not None else y)


class MobileOneDw(nn.Module):
    """Three dw3x3+BN branches, a dw1x1+BN 'scale' branch, a BN on x; relu."""

    def __init__(self, c=8):
        super().__init__()
        self.branches = nn.ModuleList(conv_bn(c, c, 3, groups=c, seed=i) for i in range(3))
        self.scale = conv_bn(c, c, 1, groups=c, seed=5)
        self.identity = batchnorm(c, 6)

    def forward(self, x):
        out = self.scale(x) + self.identity(x)
        for branch in self.branches:
            out = out + branch(x)
        return torch.relu(out)


class RepMixer(nn.Module):
    """FastViT's token mixer: x + γ ⊙ (BN(dwconv(x)) − BN(x)), a subtraction under a layer scale."""

    def __init__(self, c=8):
        super().__init__()
        self.mixer = conv_bn(c, c, 3, groups=c, seed=1)
        self.norm = batchnorm(c, 2)
        self.gamma = nn.Parameter(torch.linspace(-1, 1, c).view(c, 1, 1))

    def forward(self, x):
        return x + self.gamma * (self.mixer(x) - self.norm(x))


class GhostCheap(nn.Module):
    """RepGhost: relu(BN(dw(x1)) + BN(x1)) where x1 is also concatenated; plus an outer residual."""

    def __init__(self, c=8):
        super().__init__()
        self.primary = conv_bn(c, c, 1, seed=1)
        self.cheap = conv_bn(c, c, 3, groups=c, seed=2)
        self.fusion = batchnorm(c, 3)

    def forward(self, x):
        x1 = torch.relu(self.primary(x))
        return x + (self.cheap(x1) + self.fusion(x1))


class TfSamePadBranches(nn.Module):
    """Branches with TF-style explicit zero pads: the pads are part of the branches."""

    def __init__(self, c=8):
        super().__init__()
        self.kxk = conv_bn(c, c, 3, padding=0, seed=1)
        self.one = conv_bn(c, c, 1, seed=2)

    def forward(self, x):
        return self.kxk(F.pad(x, (1, 1, 1, 1))) + self.one(x)


class NonlinearBranch(nn.Module):
    """a(x) + c(relu(x)) + b(x): no sub-sum of x's linear branches alone."""

    def __init__(self, c=8, linear_first=False):
        super().__init__()
        self.a, self.b, self.c = conv_bn(c, c, 3, seed=1), conv_bn(c, c, 1, seed=2), conv_bn(c, c, 1, seed=3)
        self.linear_first = linear_first

    def forward(self, x):
        if self.linear_first:
            return self.a(x) + self.b(x) + self.c(torch.relu(x))
        return self.a(x) + self.c(torch.relu(x)) + self.b(x)


class SharedBranchOutput(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.a, self.b = conv_bn(c, c, 3, seed=1), conv_bn(c, c, 1, seed=2)

    def forward(self, x):
        a = self.a(x)
        return a + self.b(x), a


class DilationMismatch(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.a, self.b = conv_bn(c, c, 3, dilation=2, seed=1), conv_bn(c, c, 3, seed=2)

    def forward(self, x):
        return self.a(x) + self.b(x)


def _run(proto, x):
    import onnxruntime as ort
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.numpy()})


def both_formats(model, shape=(2, 8, 10, 10), **options):
    """(FX report, ONNX report, conv counts before/after in ONNX), outputs checked against the original."""
    torch.manual_seed(0)
    model = model.eval()
    x, fresh = torch.randn(shape), torch.randn((3,) + shape[1:])
    optimized = optimize(model, x, target="cpu", cost_model="analytic", **options)
    with torch.no_grad():
        want, got = model(fresh), optimized(fresh)
    for w, g in zip(*(o if isinstance(o, tuple) else (o,) for o in (want, got))):
        assert (g - w).abs().max() <= 1e-5 * w.abs().max()
    proto = to_onnx(model, x)
    out, report = optimize_onnx(proto, target="cpu", cost_model="analytic", **options)
    for w, g in zip(_run(proto, fresh), _run(out, fresh)):
        assert np.abs(g - w).max() <= 1e-5 * np.abs(w).max()
    convs = [sum(n.op_type == "Conv" for n in p.graph.node) for p in (proto, out)]
    return optimized.rewrite_report, report, convs


def merges(report, status="applied"):
    return [s for s in report.sites if s.kind == "merge" and s.status == status]


@pytest.mark.parametrize("block, branches", [(lambda: RepVggBlock(), 3), (lambda: RepVggBlock(stride=2), 2),
                                             (lambda: MobileOneDw(), 5), (lambda: RepMixer(), 3),
                                             (lambda: TfSamePadBranches(), 2)],
                         ids=["repvgg", "repvgg_s2", "mobileone_dw", "repmixer", "tf_same_pads"])
def test_parallel_branches_merge_into_one_conv(block, branches):
    fx, ox, (before, after) = both_formats(block())
    for report in (fx, ox):
        (site,) = merges(report)
        assert f"merged {branches} branches" in site.reason and site.before.startswith("Σ[")
        assert not merges(report, "declined") and not merges(report, "rolled_back")
    assert after == 1 < before or (before == after == 1)


def test_linear_sub_sum_merges_and_the_nonlinear_branch_stays():
    fx, ox, (before, after) = both_formats(NonlinearBranch(linear_first=True))
    for report in (fx, ox):
        (site,) = merges(report)
        assert "merged 2 branches" in site.reason
    assert (before, after) == (3, 2)


def test_merge_inside_an_outer_residual():
    """RepGhost: the inner BN(dw(x1)) + BN(x1) merges; the outer + x stays."""
    fx, ox, _ = both_formats(GhostCheap())
    for report in (fx, ox):
        (site,) = merges(report)
        assert "merged 2 branches (1 conv 3x3, 1 identity/BN)" in site.reason


@pytest.mark.parametrize("block, reason", [
    (lambda: NonlinearBranch(), "relu stands between a branch and the shared input"),
    (lambda: SharedBranchOutput(), "a branch's output also feeds add"),
    (lambda: DilationMismatch(), "differ in dilation"),
], ids=["nonlinear", "shared_output", "dilation"])
def test_unalignable_branches_are_declined_with_the_reason(block, reason):
    fx, ox, _ = both_formats(block())
    for report in (fx, ox):
        declined = merges(report, "declined")
        assert not merges(report) and declined, str(report)
        assert reason.lower() in declined[0].reason.lower(), declined[0].reason


def test_merge_pass_can_be_turned_off():
    fx, ox, (before, after) = both_formats(RepVggBlock(), passes=("fold",))
    assert not merges(fx) and not merges(ox) and before == after == 2


# ------------------------------------------------------------------------- BatchNorm before a conv
class PreActivation(nn.Module):
    """BN → 1x1 conv (exact); BN → padded 3x3 conv (declined: the shift meets the padding); the
    convs' outputs are also returned, so the BNs after them cannot fold back into them."""

    def __init__(self, c=8):
        super().__init__()
        self.bn1, self.pw = batchnorm(c, 1), nn.Conv2d(c, 2 * c, 1)
        self.bn2, self.kxk = batchnorm(2 * c, 2), nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2)
        self.bn3, self.head = batchnorm(2 * c, 3), nn.Conv2d(2 * c, c, 1, groups=c)

    def forward(self, x):
        p = self.pw(self.bn1(x))
        y = self.kxk(self.bn2(p))
        return self.head(self.bn3(y)), y, p


def test_batchnorm_before_a_conv_folds_where_exact():
    fx, ox, _ = both_formats(PreActivation(), shape=(2, 8, 9, 9), passes=("fold",))
    for report in (fx, ox):
        folds = [s for s in report.sites if s.kind == "fold"]
        applied = [s.before for s in folds if s.status == "applied"]
        declined = [s.reason for s in folds if s.status == "declined"]
        assert sorted(applied) == sorted(["affine → pw 8->16", "affine → gconv1x1 g=8 16->8"]), str(report)
        assert any("shift meets the conv's zero padding" in r for r in declined), str(report)


# ------------------------------------------------------------------------- conv → conv collapse beyond dw/pw
class LinearPairs(nn.Module):
    """conv3x3+BN → 1x1 (KxK → pw) and pw 8→32 → pw 32→8 (pw → pw) with nothing between."""

    def __init__(self, c=8):
        super().__init__()
        self.kxk, self.project = conv_bn(c, 4 * c, 3, seed=1), nn.Conv2d(4 * c, c, 1)
        self.expand, self.squeeze = nn.Conv2d(c, 4 * c, 1), nn.Conv2d(4 * c, c, 1)

    def forward(self, x):
        return self.squeeze(self.expand(torch.relu(self.project(self.kxk(x)))))


def test_a_1x1_next_to_a_conv_collapses_where_the_cost_model_predicts_a_win():
    fx, ox, (before, after) = both_formats(LinearPairs(), shape=(2, 8, 12, 12))
    for report in (fx, ox):
        applied = sorted(s.before for s in report.sites if s.kind == "reverse" and s.status == "applied")
        assert applied == ["conv3x3 8->32 → pw 32->8", "pw 8->32 → pw 32->8"], str(report)
    assert (before, after) == (4, 2)


class SharedConvBranch(nn.Module):
    """The only conv branch's output is also returned: the site is declined, whatever is left."""

    def __init__(self, c=8):
        super().__init__()
        self.a, self.bn = conv_bn(c, c, 3, seed=1), batchnorm(c, 2)

    def forward(self, x):
        a = self.a(x)
        return a + self.bn(x), a


def test_a_declined_sum_without_a_mergeable_conv_is_named():
    fx, ox, _ = both_formats(SharedConvBranch())
    for report in (fx, ox):
        (site,) = merges(report, "declined")
        assert "a branch's output also feeds" in site.reason and site.name


class DwPlusDense(nn.Module):
    """BN(dw3x3(x)) + BN(conv1x1(x)): the merged conv is a dense 3x3, costlier than either branch."""

    def __init__(self, c=8):
        super().__init__()
        self.dw, self.pw = conv_bn(c, c, 3, groups=c, seed=1), conv_bn(c, c, 1, seed=2)

    def forward(self, x):
        return self.dw(x) + self.pw(x)


@pytest.mark.parametrize("block, untimed", [(RepVggBlock, True), (MobileOneDw, True), (DwPlusDense, False)])
def test_a_merge_that_only_removes_work_is_applied_untimed_in_both_formats(block, untimed, tmp_path):
    """Measured cost model (the CPU default): a merge whose conv is shaped like its largest branch
    only removes work and is never left to timing noise; one that densifies is timed."""
    model, x = block().eval(), torch.randn(2, 8, 10, 10)
    cache = tmp_path / "timings.json"
    fx_report = optimize(model, x, timing_cache=cache).rewrite_report
    _, onnx_report = optimize_onnx(to_onnx(model, x), timing_cache=cache)
    for report in (fx_report, onnx_report):
        sites = [s for s in report.sites if s.kind == "merge"]
        assert len(sites) == 1, str(report)
        if untimed:
            assert sites[0].status == "applied" and sites[0].measured_s is None, str(report)
            assert "only removes work" in sites[0].reason
        else:
            assert sites[0].measured_s is not None and "only removes work" not in sites[0].reason, str(report)
