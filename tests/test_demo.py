"""The embedded demo wires generation, split, training, evaluation and the report together."""

import json

from herbscan.demo import run_demo


def test_small_demo_end_to_end(tmp_path):
    result = run_demo(
        tmp_path / "demo", specimens=20, epochs=1, model="herbnet_small", progress=False
    )
    run = tmp_path / "demo" / "run"
    assert result["run"] == run and result["report"] == run / "report.html"
    html = result["report"].read_text()
    assert "synthetic" in html  # the report says the data is synthetic
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == result["n"] >= 2 and 0.0 <= result["accuracy"] <= 1.0
    assert metrics["classes"] == ["clean", "contaminated"]
    # a second call reuses the generated sheets and retrains from scratch
    again = run_demo(
        tmp_path / "demo", specimens=20, epochs=1, model="herbnet_small", progress=False
    )
    assert again["n"] == result["n"]
