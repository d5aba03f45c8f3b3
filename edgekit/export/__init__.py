"""The export stage: PyTorch and TensorFlow models in, a checked ONNX model out.

A model that is not ONNX (an ``nn.Module``, a ``.pt2`` ExportedProgram, TorchScript, a pickled module,
a SavedModel folder, a ``.keras``/``.h5`` file) is exported to ONNX in the build's work folder, the
result goes through ``onnx.checker``, and onnxruntime's outputs on the sample data are compared with the
source framework's outputs on the same data. Only a model that computes the same numbers goes on to
load/simplify/convert; the report keeps the user's file as ``source_model`` and says how it was exported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit._lazy import version_of
from edgekit.errors import ModelError
from edgekit.fsutil import sha256_tree
from edgekit.profiles import Preprocessing, Tolerance

TORCH_SUFFIXES = (".pt2", ".pt", ".pth", ".ts")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SAVED_MODEL_FILE = "saved_model.pb"


@dataclass
class ExportSettings:
    """What the export stage needs besides the model: shapes, sample data, the pickle policy, the tolerance."""

    tolerance: Tolerance
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    example_inputs: tuple | None = None  # Python API: tensors for an nn.Module
    dynamic_shapes: Any = None  # Python API: passed to torch.export
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # --input-shape
    trust_pickle: bool = False
    calib: Path | None = None
    samples: int = 8
    seed: int = 0


@dataclass
class ExportResult:
    onnx_path: Path
    source_sha256: str | None  # None for an in-memory module
    input_shapes: dict[str, tuple[int, ...]]  # the shapes the check ran at (static)
    info: dict[str, Any]  # the report's `export` section
    seconds: float


def framework_of(model: Any) -> str | None:
    """"torch", "tf", or None for an ONNX file (which needs no export)."""
    if not isinstance(model, (str, Path)):
        return "torch" if _is_torch_object(model) else None
    path = Path(model)
    if path.is_dir() and (path / SAVED_MODEL_FILE).is_file():
        return "tf"
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return "torch"
    if suffix in KERAS_SUFFIXES:
        return "tf"
    return None


def _is_torch_object(model: Any) -> bool:
    module = type(model).__module__ or ""
    return module.startswith("torch") or any(c.__module__.startswith("torch.nn") for c in type(model).__mro__)


def source_name(model: Any) -> str:
    """What the report calls the source: the file, or the module's class for an in-memory module."""
    if isinstance(model, (str, Path)):
        return str(model)
    return f"<{type(model).__module__}.{type(model).__qualname__}>"


def cache_identity(settings: ExportSettings) -> dict[str, Any]:
    """What, besides the source file or folder (the build cache hashes it), decides the exported model."""
    return {"trust_pickle": settings.trust_pickle, "export_tolerance": settings.tolerance.to_dict(),
            "tools": {t: version_of(t) for t in ("torch", "onnxscript", "tensorflow", "tf2onnx", "keras")}}


def settings_for(model: Any, tolerance: Tolerance, preprocessing: Preprocessing, *, input_shapes: dict[str, tuple[int, ...]],
                 calib: Path | None, samples: int, seed: int, example_inputs: tuple | None = None, dynamic_shapes: Any = None,
                 trust_pickle: bool = False) -> ExportSettings | None:
    """Export settings when ``model`` needs exporting, else None (an ONNX file)."""
    if framework_of(model) is None:
        if example_inputs is not None or dynamic_shapes is not None:
            raise ModelError(f"{source_name(model)}: example_inputs/dynamic_shapes are for PyTorch modules; this model needs no export")
        return None
    return ExportSettings(tolerance=tolerance, preprocessing=preprocessing, example_inputs=example_inputs, dynamic_shapes=dynamic_shapes,
                          input_shapes=dict(input_shapes), trust_pickle=trust_pickle, calib=calib, samples=samples, seed=seed)


def export_model(model: Any, settings: ExportSettings, work_dir: Path) -> ExportResult:
    """Export ``model`` to ``work_dir/<stem>.onnx`` and check it; raises StageError when the numbers differ."""
    started = time.perf_counter()
    framework = framework_of(model)
    if isinstance(model, (str, Path)) and not Path(model).exists():
        raise ModelError(f"{model}: no such file or folder")
    stem = Path(model).stem if isinstance(model, (str, Path)) else type(model).__name__
    target = work_dir / "export" / f"{stem}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    if framework == "torch":
        from edgekit.export.pytorch import export_torch

        info, shapes = export_torch(model, settings, target)
    elif framework == "tf":
        from edgekit.export.tf import export_tf

        info, shapes = export_tf(Path(model), settings, target)
    else:
        raise ModelError(f"{source_name(model)}: edgekit cannot export this kind of model",
                         hint="pass an ONNX file, a torch.nn.Module (Python API), a .pt2/.pt/.ts file, a SavedModel folder, or a .keras/.h5 file")
    digest = sha256_tree(Path(model)) if isinstance(model, (str, Path)) else None
    return ExportResult(target, digest, shapes, info, round(time.perf_counter() - started, 3))


def keep(result: ExportResult, out_dir: Path, stem: str) -> dict[str, Any]:
    """Copy the exported model next to the artifact (it is the reference `edgekit verify` re-runs) and return the
    report's `export` section naming it."""
    from edgekit.fsutil import atomic_copy, sha256_file

    name = f"{stem}.exported.onnx"
    atomic_copy(result.onnx_path, out_dir / name)
    return {**result.info, "onnx": name, "onnx_sha256": sha256_file(out_dir / name), "seconds": result.seconds}
