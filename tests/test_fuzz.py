"""The differential fuzzer (tests/fuzz): a bounded seeded run finds nothing wrong, its judges can
fail, and its generator, shrinker and replay behave. About 100 s on a 2-core CPU, most of it
the fuzz run itself (FUZZ_SECONDS, at most FUZZ_MAX_CASES cases of seed FUZZ_SEED's sequence).
A failure prints the case seeds: replay one with `python -m tests.fuzz --case SEED`."""
import importlib.util
import json

import pytest
import torch

from tests.fuzz import cli
from tests.fuzz.generate import random_case
from tests.fuzz.graphs import build_model, example_input
from tests.fuzz.run import run_case
from tests.fuzz.selfcheck import self_check
from tests.fuzz.shrink import candidates, shrink, size
from tests.fuzz.units import InvalidSpec

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime", "onnx_graphsurgeon")),
    reason="the fuzzer's onnx and cli formats need the onnx extra")

FUZZ_SECONDS = 75
FUZZ_MAX_CASES = 60  # the same cases on a faster machine (about 45 fit in FUZZ_SECONDS on 2 cores)
FUZZ_SEED = 0        # its case sequence draws the cli format from the first case on


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    """One torch thread (the models are tiny, and threads contend on 2 cores), torch quiet."""
    threads = torch.get_num_threads()
    cli.quiet_torch()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bounded_fuzz_run_finds_nothing_wrong():
    tally = cli.fuzz(FUZZ_SECONDS, FUZZ_SEED, formats=("fx", "onnx", "cli"), max_cases=FUZZ_MAX_CASES)
    summary = tally.summary(FUZZ_SECONDS, FUZZ_SEED)
    print(summary)
    assert not tally.failures, summary + "\n" + "\n".join(f"case {c['seed']}: {o}" for c, o in tally.failures)
    for status in ("wrong", "crash", "input-modified"):
        assert all(tally.status[f][status] == 0 for f in tally.status), summary
    for fmt in ("fx", "onnx", "cli"):
        assert tally.status[fmt]["ok"] >= 1, f"no {fmt} case ran to a verdict\n{summary}"
    assert sum(tally.applied["fx"].values()) > 0 and sum(tally.applied["onnx"].values()) > 0, summary


def test_self_check_flags_corruption_and_tampering():
    assert self_check(("fx", "onnx", "cli")) == []


def test_generator_is_deterministic_by_seed():
    for seed in (0, 1, 12345, 2**31 - 1):
        a, b = random_case(seed), random_case(seed)
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
        ma, mb = build_model(a["model"]), build_model(b["model"])
        assert not ma.training
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        assert torch.equal(example_input(a["model"]), example_input(b["model"]))
    assert random_case(1) != random_case(2)


def test_generated_models_build_and_stay_small():
    kinds = set()
    for seed in range(60):
        case = random_case(seed)
        spec = case["model"]
        model, x = build_model(spec), example_input(spec)
        with torch.no_grad():
            out = model(x)
        outs = out if isinstance(out, tuple) else (out,)
        assert all(o.shape[1] <= 32 and o.shape[0] == spec["batch"] for o in outs)
        assert spec["hw"][0] <= 16 and spec["hw"][1] <= 16 and 1 <= spec["batch"] <= 3
        assert case["fresh"]["batch"] != spec["batch"]
        kinds.update(b["type"] for b in spec["blocks"])
    assert {"unit", "ir", "residual", "concat", "parallel", "tied", "functional", "shared", "cond", "se"} <= kinds


def test_shrinker_reaches_the_smallest_case_of_a_synthetic_failure():
    case = next(c for c in map(random_case, range(500))
                if len(c["model"]["blocks"]) >= 4 and any(b["type"] == "tied" for b in c["model"]["blocks"])
                and c["fx"]["options"])

    def fails(c):  # "fails" while a tied-weight block is left and the model builds
        try:
            build_model(c["model"])
        except InvalidSpec:
            return False
        return any(b["type"] == "tied" for b in c["model"]["blocks"])

    small = shrink(case, fails, seconds=60)
    assert [b["type"] for b in small["model"]["blocks"]] == ["tied"]
    assert small["fx"]["options"] == {} and small["onnx"]["options"] == {}
    assert size(small) < size(case)
    assert fails(small) and not any(fails(c) and size(c) < size(small) for c in candidates(small))


def test_replay_by_seed_gives_the_same_verdict(capsys):
    seed = 577090037
    # the verdicts; what is applied may differ where the case leaves the measured cost model to decide
    first = [(o.fmt, o.status) for o in run_case(random_case(seed), ("fx", "onnx"))]
    again = [(o.fmt, o.status) for o in run_case(random_case(seed), ("fx", "onnx"))]
    assert first == again and all(status == "ok" for _, status in first)
    assert cli.main(["--case", str(seed), "--formats", "fx,onnx"]) == 0
    out = capsys.readouterr().out
    assert f"case {seed}: [fx] ok" in out and f"case {seed}: [onnx] ok" in out


# cases the fuzzer once failed on (all fixed): replayed by seed so they stay fixed
FOUND = {
    1927289342: "dynamic_spatial: a layer of size 1 pinned or guarded the resolution",
    475058907: "dynamic_spatial: the same, through a functional pad",
    1321987682: "a forward inspecting its blocks' types lost an output once a block was replaced",
    935862349: "dynamic_spatial: the size-oblivious export guarded the batch to be >= 2",
}


@pytest.mark.parametrize("seed", list(FOUND), ids=list(FOUND.values()))
def test_cases_the_fuzzer_found_stay_fixed(seed):
    outcomes = run_case(random_case(seed), ("fx",))
    assert [o.status for o in outcomes] == ["ok"], [(o.status, o.error) for o in outcomes]


def test_version1_seeds_draw_no_head_and_version2_seeds_draw_linear_heads():
    """Every seed below 2**31 (all recorded runs and the seeds above) builds as before: no head.
    Version-2 seeds append a classifier head over [N, C] to about HEAD_PROBABILITY of the models."""
    from tests.fuzz.generate import VERSION2

    assert not any(b["type"] == "head" for s in range(40) for b in random_case(s)["model"]["blocks"])
    assert not any(b["type"] == "head" for s in FOUND for b in random_case(s)["model"]["blocks"])
    heads = 0
    for seed in range(VERSION2, VERSION2 + 40):
        spec = random_case(seed)["model"]
        if spec["blocks"][-1]["type"] != "head":
            continue
        heads += 1
        with torch.no_grad():
            out = build_model(spec)(example_input(spec))
        out = out[0] if isinstance(out, tuple) else out
        assert out.dim() == 2 and out.shape[0] == spec["batch"]
    assert 10 <= heads <= 35


def test_a_linear_head_case_runs_clean_in_both_formats():
    """BatchNorm1d → Linear → Linear → BatchNorm1d after a conv: both folds and the collapse of the
    two Linears (Gemms in ONNX) apply on the analytic ONNX path, and both formats judge ok."""
    seed = 2147483943
    kinds = [layer["kind"] for layer in random_case(seed)["model"]["blocks"][-1]["layers"]]
    assert kinds == ["bn", "linear", "linear", "bn"]
    outcomes = {o.fmt: o for o in run_case(random_case(seed), ("fx", "onnx"))}
    assert {f: o.status for f, o in outcomes.items()} == {"fx": "ok", "onnx": "ok"}, outcomes
    assert outcomes["onnx"].applied["fold"] >= 2 and outcomes["onnx"].applied["reverse"] >= 1, outcomes["onnx"]
