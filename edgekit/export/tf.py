"""TensorFlow -> ONNX through tf2onnx: SavedModel folders and Keras .keras/.h5 files. TensorFlow runs in a
subprocess (edgekit.export.tf_worker), for the conversion and for the reference outputs of the export check."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends._subprocess import run_tool
from edgekit.calibration import SampleSet
from edgekit.errors import MissingDependency, ModelError, OptionsError
from edgekit.export import ExportSettings
from edgekit.export.check import check_export, export_samples, load_exported

OPSET = 17
_ERRORS = {"shape": OptionsError, "model": ModelError}


def export_tf(path: Path, settings: ExportSettings, target: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    for module in ("tensorflow", "tf2onnx"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependency(f"Python package '{module}' is needed (exporting TensorFlow/Keras models to ONNX) but is not installed",
                                    hint="pip install 'edgekit[tf]'")
    work = target.parent
    common = ["--source", str(path.resolve()), "--shapes", json.dumps({k: list(v) for k, v in settings.input_shapes.items()}),
              *(["--trust-code"] if settings.trust_pickle else [])]
    answer = _worker(["convert", *common, "--out", str(target), "--opset", str(OPSET)], work, "tf2onnx.log")
    example_shapes = {spec["name"]: tuple(spec["shape"]) for spec in answer["inputs"]}
    folded = _fold_shapes(target)
    loaded = load_exported(target, settings, example_shapes)
    samples = export_samples(loaded, settings)
    input_names = [spec.name for spec in loaded.inputs]

    def run_source(batch: SampleSet) -> list[list[np.ndarray]]:
        feed = {f"s{i}_i{k}": batch.sample(i)[name] for i in range(batch.count) for k, name in enumerate(input_names)}
        np.savez(work / "tf-samples.npz", **feed)
        _worker(["run", *common, "--samples", str(work / "tf-samples.npz"), "--count", str(batch.count),
                 "--outputs", ",".join(spec.name for spec in loaded.outputs), "--out", str(work / "tf-outputs.npz")],
                work, "tf-run.log")
        with np.load(work / "tf-outputs.npz", allow_pickle=False) as archive:
            return [[archive[f"s{i}_o{k}"] for k in range(len(loaded.outputs))] for i in range(batch.count)]

    check = check_export(loaded, samples, run_source, settings, "TensorFlow")
    versions = answer.get("versions", {})
    info = {"framework": "tensorflow", "source_format": answer["format"], "tool": "tf2onnx", "tool_version": versions.get("tf2onnx"),
            "exporter": "tf2onnx", "fallback_reason": None, "opset": OPSET, "tensorflow_version": versions.get("tensorflow"),
            "keras_version": versions.get("keras"), "input_names": input_names, "output_names": [s.name for s in loaded.outputs],
            "input_shapes": {k: list(v) for k, v in example_shapes.items()}, "shapes_folded_by": folded, **check}
    return info, {spec.name: tuple(int(d) for d in spec.shape) for spec in loaded.inputs}


def _fold_shapes(path: Path) -> str | None:
    """tf2onnx leaves the signature's polymorphic dims (Shape -> Gather -> Reshape chains, outputs like [unk, 20, 5])
    even at static input shapes; onnxsim folds them so converters see static shapes. The export check then runs on
    the folded model, so folding can never slip a change past it. Returns the tool used, None if it could not fold."""
    import onnx

    from edgekit.simplify import _with_onnxsim

    try:
        onnx.save_model(_with_onnxsim(onnx.load_model(str(path))), str(path))
    except Exception:  # onnxsim raises anything from protobuf to onnxruntime errors; the unfolded model still goes on
        return None
    return "onnxsim"


def _worker(args: list[str], work: Path, log_name: str) -> dict[str, Any]:
    run = run_tool([sys.executable, "-m", "edgekit.export.tf_worker", *args], work, stage="export", tool="tf2onnx",
                   log_name=log_name, hint="rerun with --keep-work to keep the export log (work folder: export/)")
    answer = run.last_json("export")
    if "error" in answer:
        if answer["error"] == "code":
            raise ModelError(answer["message"], hint="the Keras file holds Python code (a Lambda layer) that runs when loaded; "
                             "if you trust its author as you would a program, pass --trust-pickle")
        raise _ERRORS.get(answer["error"], ModelError)(answer["message"])
    return answer
