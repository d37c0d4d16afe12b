"""ONNX export: agreement measured and recorded, int8 gated, screen --backend onnx."""

import json

import pyarrow.parquet as pq
import pytest

from herbscan.errors import RunError
from herbscan.export import export_onnx
from herbscan.predict import Predictor
from herbscan.screen import screen

pytest.importorskip("onnxruntime")


def test_export_agreement_and_onnx_backend(tiny_run, tiny_collection, tmp_path):
    with pytest.raises(RunError, match="no ONNX export"):
        Predictor(tiny_run, backend="onnx")
    info = export_onnx(tiny_run, int8=True)
    assert info["n"] == 6 and info["fp32"]["agreement"] == 1.0
    assert info["int8"]["agreement"] is not None
    assert info["int8"]["kept"] == (info["int8"]["agreement"] >= 0.99)
    assert json.loads((tiny_run / "onnx.json").read_text()) == info
    assert (tiny_run / "model.int8.onnx").exists() == info["int8"]["kept"]
    a = screen(
        tiny_run, tiny_collection, tmp_path / "t", precision="fp32", progress=False, report=False
    )
    b = screen(
        tiny_run,
        tiny_collection,
        tmp_path / "o",
        precision="fp32",
        progress=False,
        report=False,
        backend="onnx",
    )
    assert a["flagged"] == b["flagged"]
    ta = sorted(pq.read_table(tmp_path / "t" / "shards").to_pylist(), key=lambda r: r["path"])
    tb = sorted(pq.read_table(tmp_path / "o" / "shards").to_pylist(), key=lambda r: r["path"])
    assert [r["predicted"] for r in ta] == [r["predicted"] for r in tb]
    assert max(abs(x["p_clean"] - y["p_clean"]) for x, y in zip(ta, tb)) < 1e-4


def test_int8_below_agreement_is_not_kept(tiny_run):
    info = export_onnx(tiny_run, int8=True, min_agreement=1.01)  # impossible to reach
    assert info["int8"]["kept"] is False and not (tiny_run / "model.int8.onnx").exists()
    with pytest.raises(RunError, match="no usable int8"):
        Predictor(tiny_run, backend="onnx-int8")
