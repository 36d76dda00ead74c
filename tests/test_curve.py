"""rewrite.entry.curve: the speed/accuracy curve of approximate rewriting, on a small ONNX model with a
metric that really runs the model (agreement of its argmax with the original's on held-back data)."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from tests.helpers import to_onnx


def test_curve_writes_points_for_each_budget_with_the_metric_and_the_svd_baseline(tmp_path):
    pytest.importorskip("onnx_graphsurgeon")
    import onnx
    import onnxruntime as ort

    from rewrite.entry.curve import main

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 16, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 8, 3, padding=1)).eval()
    coarse = torch.randn(12, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    samples = nn.functional.interpolate(coarse, size=(24, 24), mode="bilinear")     # smooth: partly fittable
    src, npz = tmp_path / "m.onnx", tmp_path / "cal.npz"
    onnx.save(to_onnx(model, samples[:1]), str(src))
    np.savez(npz, x=samples.numpy())
    test = nn.functional.interpolate(torch.randn(4, 4, 6, 6), size=(24, 24), mode="bilinear").numpy()
    want = model(torch.from_numpy(test)).argmax(1).numpy()

    import tests.test_curve as here
    here.agreement = lambda path: float((ort.InferenceSession(path).run(None, {"x": test})[0].argmax(1) == want).mean())
    assert main([str(src), "--calibration", str(npz), "--budgets", "0.05,0.5", "--out", str(tmp_path / "c"),
                 "--metric", "tests.test_curve:agreement"]) == 0
    curve = json.loads((tmp_path / "c" / "curve.json").read_text())
    original, exact, tight, loose = curve["points"]
    assert original["metric"] == {"metric": 1.0} and exact["budget"] is None and exact["sites"] == []
    assert [tight["budget"], loose["budget"]] == [0.05, 0.5]
    for point in (tight, loose):
        assert point["held_out_error"] is None or point["held_out_error"] <= point["budget"]
        assert len(point["speedup"]) == 4 and point["speedup"][3] >= 15
        assert 0.0 <= point["metric"]["metric"] <= 1.0
    assert loose["sites"], "a loose budget keeps some fitted site"
    assert all(s["how"].startswith("approximate ") for s in loose["sites"])
    assert 0.0 <= loose["metric_weight_svd"]["metric"] <= 1.0
    assert (tmp_path / "c" / "curve.png").stat().st_size > 1000
