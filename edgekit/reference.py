"""The ground truth: the ONNX model run by onnxruntime on the CPU."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit._lazy import require
from edgekit.calibration import SampleSet
from edgekit.errors import ToolError, tail


def session_for(model: Any) -> Any:
    """An onnxruntime session from a ModelProto or a path, with all graph optimizations left on."""
    ort = require("onnxruntime", "core", purpose="the reference run")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model if isinstance(model, str) else model.SerializeToString()
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ToolError(f"onnxruntime cannot load the model for the reference run: {tail(str(exc), 5)}") from None


def run_reference(model: Any, samples: SampleSet) -> list[dict[str, np.ndarray]]:
    """One dict of outputs (by ONNX name) per sample."""
    session = session_for(model)
    names = [o.name for o in session.get_outputs()]
    results = []
    for index in range(samples.count):
        try:
            values = session.run(names, samples.sample(index))
        except Exception as exc:
            raise ToolError(f"onnxruntime failed to run the model on sample {index}: {tail(str(exc), 5)}") from None
        results.append(dict(zip(names, values, strict=False)))
    return results
