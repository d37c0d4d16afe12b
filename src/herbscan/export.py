"""Exporting a Run's model to ONNX, and running it with onnxruntime (optional extra `onnx`).

`export_onnx` writes `model.onnx` into the run folder (graph simplified by onnxruntime's
pre-processing) and, with `int8=True`, `model.int8.onnx` with dynamically quantised dense layers
(convolutions stay fp32: onnxruntime's integer convolutions are slower than its fp32 ones on
CPU). Each file's agreement with the torch model's predicted classes on the run's validation
split is measured and recorded in `onnx.json`; an int8 model that agrees on less than
`min_agreement` is not kept, so it can never be used by accident.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from herbscan.errors import ParameterError, RunError
from herbscan.fileio import atomic_path, write_json
from herbscan.manifest import read_source
from herbscan.runs import Run, load_run
from herbscan.views import view_of

ONNX, ONNX_INT8, ONNX_JSON = "model.onnx", "model.int8.onnx", "onnx.json"


def _require():
    try:
        import onnxruntime  # noqa: F401
        from onnxruntime.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        raise ParameterError(
            "onnx export needs onnxruntime: pip install 'herbscan[onnx]'"
        ) from None


class OnnxModel:
    """An exported model with the Accel-style `predict_proba` the Predictor calls."""

    def __init__(self, path: str | Path, threads: int | None = None):
        _require()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def predict_proba(self, arrays: np.ndarray, mean, std, batch_size: int = 64) -> np.ndarray:
        m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        out = []
        for i in range(0, len(arrays), batch_size):
            x = arrays[i : i + batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            logits = self.session.run(None, {"x": ((x - m) / s).astype(np.float32)})[0]
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            out.append(e / e.sum(axis=1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _validation_inputs(run: Run, limit: int) -> np.ndarray:
    """Model inputs from the run's validation split: sheets, or the kept tiles of sheets."""
    data = run.config.training.data
    if not data or not Path(data).exists():
        raise RunError(
            f"{run.folder}: the manifest it was trained on is gone, so agreement "
            "cannot be measured; restore it"
        )
    m = read_source(data, label_col=run.config.label_column).subset("validation")
    view = view_of(run.config)
    inputs = [si.inputs for _, si, _ in view.sheets(m.paths()[:limit], cache_dir=False) if si]
    return np.concatenate(inputs) if inputs else np.zeros((0, *view.input_shape, 3), np.uint8)


def export_onnx(
    run: str | Path, *, int8: bool = False, min_agreement: float = 0.99, limit: int = 512
) -> dict:
    """Write model.onnx (and model.int8.onnx when it agrees well enough); return onnx.json."""
    _require()
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    r = load_run(run)
    prep = r.preprocessing
    net = r.build_model().float().eval()
    x = torch.zeros(2, 3, *view_of(r.config).input_shape)
    raw = r.folder / ".model.raw.onnx"
    with warnings.catch_warnings():
        # the TorchScript exporter needs only `onnx`; the newer one also needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (x,),
            str(raw),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    try:
        with atomic_path(r.folder / ONNX) as tmp:
            quant_pre_process(str(raw), str(tmp))
    finally:
        raw.unlink(missing_ok=True)

    inputs = _validation_inputs(r, limit)
    from herbscan.accel import Accel

    ref = (
        Accel.resolve("cpu", "fp32").predict_proba(net, inputs, prep.mean, prep.std).argmax(1)
        if len(inputs)
        else np.zeros(0)
    )

    def agreement(path: Path) -> float | None:
        if not len(inputs):
            return None
        got = OnnxModel(path).predict_proba(inputs, prep.mean, prep.std).argmax(1)
        return float((got == ref).mean())

    report = {"n": len(inputs), "fp32": {"file": ONNX, "agreement": agreement(r.folder / ONNX)}}
    if int8:
        with atomic_path(r.folder / ONNX_INT8) as tmp:
            quantize_dynamic(
                str(r.folder / ONNX),
                str(tmp),
                weight_type=QuantType.QUInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
        a = agreement(r.folder / ONNX_INT8)
        kept = a is not None and a >= min_agreement
        report["int8"] = {
            "file": ONNX_INT8 if kept else None,
            "agreement": a,
            "min_agreement": min_agreement,
            "kept": kept,
        }
        if not kept:
            (r.folder / ONNX_INT8).unlink(missing_ok=True)
    write_json(r.folder / ONNX_JSON, report)
    return report


def onnx_model(run: Run, int8: bool = False, threads: int | None = None) -> OnnxModel:
    """The exported model of a run, refusing an int8 file that was not kept."""
    info_path = run.folder / ONNX_JSON
    if not info_path.is_file():
        raise RunError(
            f"{run.folder}: no ONNX export; run `herbscan export {run.folder} --onnx` first"
        )
    info = json.loads(info_path.read_text())
    entry = info.get("int8" if int8 else "fp32") or {}
    if not entry.get("file"):
        raise RunError(
            f"{run.folder}: no usable {'int8' if int8 else 'fp32'} ONNX model "
            f"(agreement {entry.get('agreement')}); use --backend onnx"
        )
    return OnnxModel(run.folder / entry["file"], threads=threads)
