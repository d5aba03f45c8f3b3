"""The export check: onnx.checker on the exported file, then onnxruntime against the source framework on the
same samples. An export that runs but computes something else stops the build here, not three stages later."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.calibration import SampleSet, load_samples, random_samples
from edgekit.errors import ModelError, OptionsError, StageError
from edgekit.export import ExportSettings
from edgekit.metrics import compare, merge
from edgekit.modelio import LoadedModel, apply_input_shapes, load_model
from edgekit.reference import run_reference

# Runs the source model on every sample of a SampleSet; one list of outputs (in ONNX output order) per sample.
SourceRunner = Callable[[SampleSet], list[list[np.ndarray]]]


def load_exported(onnx_path: Path, settings: ExportSettings, example_shapes: dict[str, tuple[int, ...]]) -> LoadedModel:
    """The exported model through edgekit's load & check (onnx.checker, shape inference), at static shapes."""
    try:
        loaded = load_model(onnx_path)
    except ModelError as exc:
        raise StageError(f"export: the exported ONNX model fails edgekit's load checks: {exc.message}") from None
    fixed = {**example_shapes, **settings.input_shapes}
    wanted = {s.name: fixed[s.name] for s in loaded.inputs if not s.is_static and s.name in fixed}
    try:
        return apply_input_shapes(loaded, wanted, require_static=True)
    except OptionsError as exc:
        raise OptionsError(f"export: the exported model's inputs need static shapes for the export check: {exc.message}",
                           hint=exc.hint or "give --input-shape NAME=DIMS for each input") from None


def export_samples(loaded: LoadedModel, settings: ExportSettings) -> SampleSet:
    """--calib data when given (the first --samples of it), else seeded random inputs at the example shapes."""
    if settings.calib is not None:
        return load_samples(settings.calib, loaded.inputs, settings.preprocessing, settings.samples)
    return random_samples(loaded.inputs, settings.samples, settings.seed)


def with_repeat(samples: SampleSet) -> SampleSet:
    """The samples plus sample 0 again at the end: a source that answers differently twice is not deterministic."""
    arrays = {name: np.concatenate([array, array[:1]]) for name, array in samples.arrays.items()}
    return SampleSet(arrays, samples.source)


def check_export(loaded: LoadedModel, samples: SampleSet, run_source: SourceRunner, settings: ExportSettings,
                 framework: str, diagnosis: str | None = None) -> dict[str, Any]:
    """Compare onnxruntime with the source on ``samples``; returns the report's metrics, raises StageError on a mismatch.

    ``diagnosis`` explains a mismatch when the caller knows a likely cause (a module in training mode)."""
    exported = run_reference(loaded.proto, samples)
    produced = run_source(with_repeat(samples))
    names = [spec.name for spec in loaded.outputs]
    if len(produced) != samples.count + 1 or any(len(outputs) != len(names) for outputs in produced):
        counts = sorted({len(outputs) for outputs in produced})
        raise StageError(f"export: the {framework} model returns {counts} outputs per sample but the exported ONNX model has {len(names)} ({', '.join(names)})")
    tolerance = settings.tolerance
    metrics = []
    for k, name in enumerate(names):
        per_sample = [compare(name, produced[s][k], exported[s][name], tolerance) for s in range(samples.count)]
        metrics.append(merge(per_sample, tolerance))
    repeat = [compare(name, produced[0][k], produced[-1][k], tolerance) for k, name in enumerate(names)]
    summary = {m.name: {"max_abs_error": m.max_abs_error, "mean_abs_error": m.mean_abs_error, "cosine": m.cosine,
                        "sqnr_db": m.sqnr_db, "finite": m.finite, "passed": m.passed, "failures": m.failures} for m in metrics}
    failed = [m for m in metrics if not m.passed]
    if failed:
        lines = "; ".join(_worst(m, tolerance) for m in failed)
        causes = []
        if not all(r.passed for r in repeat):
            causes.append(f"the {framework} model itself gives different outputs for the same input (sample 0 run twice: "
                          + "; ".join(_worst(r, tolerance) for r in repeat if not r.passed) + ")")
        if diagnosis:
            causes.append(diagnosis)
        why = ("\n  likely cause: " + "; ".join(causes)) if causes else ""
        raise StageError(f"export: the exported ONNX model computes different numbers than the {framework} model "
                         f"on {samples.count} samples ({samples.source}): {lines}{why}",
                         hint=_hint(causes, framework))
    return {"samples": samples.count, "input_source": samples.source, "tolerances": tolerance.to_dict(), "outputs": summary}


def _worst(metrics: Any, tolerance: Any) -> str:
    if not metrics.finite:
        return f"{metrics.name}: {', '.join(metrics.failures)}"
    return (f"{metrics.name}: cosine {metrics.cosine:.6f} (needs >= {tolerance.min_cosine}), SQNR {metrics.sqnr_db:.2f} dB "
            f"(needs >= {tolerance.min_sqnr_db} dB), max abs error {metrics.max_abs_error:.3g}")


def _hint(causes: list[str], framework: str) -> str:
    if any("training mode" in cause for cause in causes):
        return "call model.eval() before exporting (or before edgekit.build), then build again"
    if framework == "PyTorch":
        return "check the model with torch.export first; ops with data-dependent control flow or in-place state often export wrongly"
    return "rerun with --keep-work to keep the exported model (work folder: export/) and compare it yourself"
