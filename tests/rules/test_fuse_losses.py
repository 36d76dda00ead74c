"""The fused forms a GPU run measured slower than eager come from a data file beside that run's
results (results/gpu/2026-11-25-h100/fuse_losses.json), read by the cost model: the fuse rule's
decline quotes the file's figures, another file gives other figures, and a missing or garbled
file is an error that names it, never a silent "no loss"."""
import json
from pathlib import Path

import pytest
import torch

from rewrite import cost_model
from rewrite.cost_model import FUSE_LOSSES, FuseLossesError, fuse_losses
from rewrite.ir import ConvSpec, SqueezeExcite
from rewrite.options import RewriteOptions
from rewrite.rules import Decline, Plan, plan_fuse
from tests.helpers import dw_spec, pw_spec, rand

F16 = torch.float16
ROOT = Path(__file__).resolve().parents[2]


def _se(c=32, s=8):
    return SqueezeExcite(ConvSpec(rand(s, c, 1, 1), rand(s)), "relu", ConvSpec(rand(c, s, 1, 1), rand(c)), "sigmoid")


def _plan(size, k=3, se=None):
    """fuse dw k x k 32 -> pw 32 -> 32 at a size x size map, for an H100 without timing."""
    options = RewriteOptions(target="h100").resolved("cpu")
    return plan_fuse(dw_spec(32, k).to(F16), "relu", pw_spec(32, 32).to(F16), None, False, (64, 32, size, size), F16,
                     options, se)


def test_the_rule_declines_what_the_file_lists_and_quotes_its_figures():
    data = json.loads((ROOT / FUSE_LOSSES).read_text())
    se = data["squeeze_excitation"]
    where = f"on {data['device']} ({data['run']})"
    assert FUSE_LOSSES.startswith(data["run"] + "/")              # the file lies beside the run it describes

    declined = _plan(28, se=_se())
    assert isinstance(declined, Decline)
    assert f"at {se['slower_layers']} of {se['layers']} SE layers {where}" in declined.reason

    side = int(data["small_output"]["max_pixels"] ** 0.5)          # 7: a 7x7 output map
    small = _plan(side)
    assert isinstance(small, Decline) and f"fused at a {side}x{side} output map measured slower than eager {where}" \
        in small.reason
    assert not (isinstance(_plan(side + 1), Decline) and "measured slower" in _plan(side + 1).reason)

    k = data["square_kernel"]["min_size"]                          # 5: the 5x5
    big = _plan(28, k=k)
    assert isinstance(big, Decline) and f"the fused {k}x{k} depthwise kernel measured slower than eager {where}" \
        in big.reason
    assert isinstance(_plan(28, k=3), Plan)                        # a 3x3 at 28x28 measured faster: planned


def test_another_file_gives_other_figures(tmp_path, monkeypatch):
    data = json.loads((ROOT / FUSE_LOSSES).read_text())
    data.update(run="results/gpu/elsewhere", device="an H200")
    data["squeeze_excitation"].update(slower_layers=3, layers=7)
    data["small_output"]["max_pixels"] = 16
    (tmp_path / FUSE_LOSSES).parent.mkdir(parents=True)
    (tmp_path / FUSE_LOSSES).write_text(json.dumps(data))
    monkeypatch.setattr(cost_model, "ROOT", tmp_path)
    assert "at 3 of 7 SE layers on an H200 (results/gpu/elsewhere)" in _plan(28, se=_se()).reason
    assert not (isinstance(_plan(7), Decline) and "measured slower" in _plan(7).reason)   # 7x7 > 16 pixels here
    assert "fused at a 4x4 output map" in _plan(4).reason


@pytest.mark.parametrize("text, said", [
    (None, "is missing"),
    ("{not json", "cannot be read as JSON"),
    ('{"run": "r", "device": "d"}', "is not a fuse-losses file: no 'squeeze_excitation'"),
    ('[1, 2]', "is not a fuse-losses file"),
])
def test_a_missing_or_garbled_file_is_an_error_that_names_it(tmp_path, monkeypatch, text, said):
    if text is not None:
        (tmp_path / FUSE_LOSSES).parent.mkdir(parents=True)
        (tmp_path / FUSE_LOSSES).write_text(text)
    monkeypatch.setattr(cost_model, "ROOT", tmp_path)
    with pytest.raises(FuseLossesError, match=said) as raised:
        _plan(28, se=_se())
    assert str(tmp_path / FUSE_LOSSES) in str(raised.value)


def test_a_figure_of_the_wrong_type_is_an_error(tmp_path):
    data = json.loads((ROOT / FUSE_LOSSES).read_text())
    data["small_output"]["max_pixels"] = "49"
    path = tmp_path / "losses.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FuseLossesError, match="max_pixels of the wrong type"):
        fuse_losses(path)


def test_timed_or_forced_plans_never_read_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cost_model, "ROOT", tmp_path)             # no file there
    options = RewriteOptions(target="h100", force_fuse=True).resolved("cpu")
    plan = plan_fuse(dw_spec(32).to(F16), "relu", pw_spec(32, 32).to(F16), None, False, (64, 32, 28, 28), F16,
                     options, _se())
    assert not (isinstance(plan, Decline) and "measured slower" in plan.reason)
