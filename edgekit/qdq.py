"""Explicit int8 quantization: insert QuantizeLinear/DequantizeLinear pairs with onnxruntime's static
quantizer, then check the QDQ model with onnxruntime against the float model before any engine is built.

This is the int8 path current TensorRT recommends (explicit quantization): the scales live in the
ONNX graph, so TensorRT only has to honour them. TensorRT wants symmetric int8 (zero point 0) for
activations and weights, per-channel weights, and float biases, which is what :func:`quantize_qdq` asks for.
The check runs on the host without a GPU, so it is the part of the int8 path that CI exercises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit._lazy import require, version_of
from edgekit.calibration import SampleSet
from edgekit.errors import CalibrationError, StageError, ToolError, tail
from edgekit.metrics import compare, merge
from edgekit.profiles import Tolerance
from edgekit.types import OutputMetrics

# Quantize the inputs of weighted ops only: TensorRT's own placement advice, and it keeps Softmax,
# LayerNorm and residual Adds in float, where int8 costs accuracy and buys little speed.
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class QdqResult:
    path: Path
    q_nodes: int
    dq_nodes: int
    calibration_samples: int
    op_types: tuple[str, ...]
    calibration_method: str
    seconds: float
    tool_version: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"q_nodes": self.q_nodes, "dq_nodes": self.dq_nodes, "calibration_samples": self.calibration_samples,
                "op_types": list(self.op_types), "calibration_method": self.calibration_method}


@dataclass
class QdqCheck:
    """The QDQ model run by onnxruntime, judged against the float model with the int8 tolerance."""

    passed: bool
    samples: int
    tolerance: Tolerance
    outputs: list[OutputMetrics] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(f"{o.name}: {', '.join(o.failures)}" for o in self.outputs if not o.passed)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "samples": self.samples, "tolerances": self.tolerance.to_dict(),
                "outputs": [{"name": o.name, "cosine": o.cosine, "sqnr_db": o.sqnr_db, "max_abs_error": o.max_abs_error,
                             "passed": o.passed, "failures": o.failures} for o in self.outputs]}


def _reader_class(quantization: Any) -> type:
    class SampleSetReader(quantization.CalibrationDataReader):
        """Feeds edgekit's calibration samples, one run at a time, to onnxruntime's calibrator."""

        def __init__(self, samples: SampleSet) -> None:
            self.samples = samples
            self._iter: Iterator[dict] = iter(())
            self.rewind()

        def get_next(self) -> dict | None:
            return next(self._iter, None)

        def rewind(self) -> None:
            self._iter = (self.samples.sample(i) for i in range(self.samples.count))

    return SampleSetReader


def quantize_qdq(
    model_path: Path,
    calibration: SampleSet,
    out_path: Path,
    *,
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES,
    calibration_method: str = "minmax",
    nodes_to_exclude: tuple[str, ...] = (),
) -> QdqResult:
    """Write a QDQ (explicitly quantized) copy of ``model_path`` to ``out_path``."""
    if calibration is None or calibration.count == 0:
        raise CalibrationError("int8 quantization needs calibration data", hint="pass --calib PATH")
    if calibration_method not in CALIBRATION_METHODS:
        raise StageError(f"quantize: unknown calibration method {calibration_method!r}", hint=f"use one of {', '.join(CALIBRATION_METHODS)} in [backend_options] calibration_method")
    require("onnxruntime", "core", purpose="int8 QDQ quantization")
    from onnxruntime import quantization as q

    method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
              "percentile": q.CalibrationMethod.Percentile}[calibration_method]
    started = time.perf_counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    quiet = logging.getLogger()  # the quantizer warns through the root logger about pre-processing
    previous = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        q.quantize_static(
            str(model_path), str(out_path), _reader_class(q)(calibration),
            quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=True,
            reduce_range=False,
            activation_type=q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude),
            calibrate_method=method,
            extra_options={
                "ActivationSymmetric": True,  # TensorRT takes zero point 0 only
                "WeightSymmetric": True,
                "QuantizeBias": False,  # TensorRT fuses float biases; int32 DQ biases are not what it expects
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # K x N weights: one scale per output column
            },
        )
    except (ValueError, RuntimeError, KeyError, IndexError, TypeError) as exc:
        raise StageError(f"quantize: onnxruntime's static quantizer failed: {type(exc).__name__}: {tail(str(exc), 8)}",
                         hint="check that the calibration samples match the model's inputs, or exclude the failing nodes with backend_options.int8_exclude_nodes") from None
    finally:
        quiet.setLevel(previous)
    onnx = require("onnx", "core")
    model = onnx.load_model(str(out_path), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    q_nodes, dq_nodes = ops.count("QuantizeLinear"), ops.count("DequantizeLinear")
    if dq_nodes == 0:
        raise StageError(f"quantize: the QDQ model has no DequantizeLinear nodes: none of the op types {', '.join(op_types)} was found to quantize",
                         hint="this model would run entirely in float; choose --precision fp16, or set backend_options.int8_op_types")
    return QdqResult(out_path, q_nodes, dq_nodes, calibration.count, tuple(op_types), calibration_method,
                     round(time.perf_counter() - started, 3), version_of("onnxruntime"))


def check_qdq(float_model: Path, qdq_model: Path, samples: SampleSet, tolerance: Tolerance) -> QdqCheck:
    """Run both models with onnxruntime on ``samples`` and compare every output (cosine and SQNR, NaN fails)."""
    from edgekit.reference import run_reference, session_for

    references = run_reference(str(float_model), samples)
    session = session_for(str(qdq_model))
    names = [o.name for o in session.get_outputs()]
    per_output: dict[str, list[OutputMetrics]] = {name: [] for name in names}
    for index, reference in enumerate(references):
        try:
            values = session.run(names, samples.sample(index))
        except Exception as exc:  # onnxruntime's own exception types
            raise ToolError(f"onnxruntime failed to run the QDQ model on sample {index}: {tail(str(exc), 5)}") from None
        for name, value in zip(names, values, strict=True):
            per_output[name].append(compare(name, reference[name], value, tolerance))
    outputs = [merge(metrics, tolerance) for metrics in per_output.values()]
    return QdqCheck(passed=all(o.passed for o in outputs), samples=samples.count, tolerance=tolerance, outputs=outputs)
