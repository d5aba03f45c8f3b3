"""The plain data types that carry a build from stage to stage.

They are serialized only at the edge: :meth:`BuildReport.to_dict` is the report contract
(``edgekit-report.json``), documented in the README. Keys there are stable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "dynamic")
VerificationStatus = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, static or symbolic dims, numpy dtype name."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class BuildOptions:
    """What the user asked for, validated at the CLI/API edge."""

    precision: str | None = None  # None: the profile's default
    calib: Path | None = None
    out_dir: Path = Path("edgekit-out")
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # NAME -> (min, opt, max) from --input-shape NAME=MIN:OPT:MAX (TensorRT optimization profiles);
    # input_shapes holds OPT for the same NAME, the shape everything else runs at
    input_shape_ranges: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    simplify: bool = True
    verify: bool = True
    latency_runs: int | None = None  # None: the profile's default
    warmup_runs: int | None = None
    max_samples: int = 8
    seed: int = 0
    use_cache: bool = True
    allow_foreign_gpu: bool = False  # TensorRT: build here even if this GPU is not the target's
    verify_data: Path | None = None  # --verify-data: verification samples apart from --calib
    fix_inputs: dict[str, Any] = field(default_factory=dict)  # --fix-input NAME=VALUE (over the profile's [fix_inputs])
    dequantize: bool = False  # --dequantize: rewrite onnxruntime-only quantized ops to float instead of refusing
    checks: dict[str, dict[str, float]] = field(default_factory=dict)  # --check NAME=top1:0.99 (over the profile's [checks])
    locate: bool = False  # locate the first divergent layer even when verification passes (always done when it fails)
    fallback: str | None = None  # "auto" | "none"; None: the profile's [fallback] default for the precision
    fallback_budget: float | None = None  # fraction of the parameters that may stay float; None: the profile's


@dataclass(frozen=True)
class IOBinding:
    """How an ONNX tensor maps onto an artifact tensor.

    ``perm`` turns the ONNX layout into the artifact's (e.g. NCHW -> NHWC is ``(0, 2, 3, 1)``);
    ``squeeze_batch`` is set for runtimes whose tensors drop the batch dim (ncnn Mats).
    """

    onnx_name: str
    artifact_name: str
    perm: tuple[int, ...] | None = None
    squeeze_batch: bool = False
    #: the artifact tensor's shape when it differs from the ONNX one only by size-1 dims (onnx2tf makes a scalar [1])
    artifact_shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx_name": self.onnx_name,
            "artifact_name": self.artifact_name,
            "perm": list(self.perm) if self.perm is not None else None,
            "squeeze_batch": self.squeeze_batch,
            "artifact_shape": list(self.artifact_shape) if self.artifact_shape is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IOBinding:
        perm, shape = data.get("perm"), data.get("artifact_shape")
        return cls(
            onnx_name=data["onnx_name"],
            artifact_name=data["artifact_name"],
            perm=tuple(perm) if perm is not None else None,
            squeeze_batch=bool(data.get("squeeze_batch", False)),
            artifact_shape=tuple(shape) if shape is not None else None,
        )


@dataclass
class Artifact:
    """A converted model on disk plus what a runtime needs to feed it."""

    path: Path
    backend: str
    precision: str
    runtime: str  # the device-runner runtime that executes it, e.g. "tflite"
    inputs: list[IOBinding]
    outputs: list[IOBinding]
    extra_files: list[Path] = field(default_factory=list)  # e.g. ncnn .bin beside .param
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageRecord:
    name: str
    seconds: float
    tool: str | None = None
    tool_version: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class OutputMetrics:
    name: str
    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float
    cosine: float
    sqnr_db: float
    finite: bool
    passed: bool
    failures: list[str] = field(default_factory=list)
    # counts of |error| per bin; edges in edgekit.metrics.HISTOGRAM_EDGES (plus under/overflow bins)
    error_histogram: list[int] = field(default_factory=list)
    #: least-squares scale <artifact, reference> / <reference, reference>; over samples, the one farthest from 1
    gain: float | None = None
    #: class-score outputs: fraction of rows (samples x positions) whose top class / top-5 set agree with the reference
    top1_agreement: float | None = None
    top5_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class LatencyStats:
    p50: float
    p90: float
    p99: float
    mean: float
    runs: int
    warmup: int
    times_ms: list[float] = field(default_factory=list)
    emulated: bool = False  # measured under qemu: the translator's speed, never the device's

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class VerificationResult:
    status: VerificationStatus
    where: Literal["host", "device", "emulated"]
    runtime: str | None = None
    reason: str | None = None
    device: str | None = None
    samples: int = 0
    input_source: str | None = None  # "random(seed=N)", "calibration:PATH", "held-out:PATH[a:b]", "verify-data:PATH"
    tolerances: dict[str, float] = field(default_factory=dict)
    outputs: list[OutputMetrics] = field(default_factory=list)
    latency_ms: LatencyStats | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    cpu: str | None = None  # the emulated CPU model (where == "emulated")
    emulator: dict[str, Any] | None = None  # {arch, cpu, qemu, python, created_at, lock_sha256} of the emulator used
    # why verification could not run on a device: {"kind", "exit_code", "message"} (None: no device fault)
    fault: dict[str, Any] | None = None
    calibration_samples: int = 0  # how many samples calibration used (none of them is among the verification samples)
    checks: list[dict[str, Any]] = field(default_factory=list)  # declared top-k checks that ran: output, metric, min, value, passed
    # where the artifact leaves onnxruntime (edgekit.debug.locate): the first layer below the tolerance,
    # the per-layer SQNR curve in topological order, and how it was measured
    first_divergence: dict[str, Any] | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)
    locate: dict[str, Any] | None = None

    @classmethod
    def skipped(cls, reason: str, where: Literal["host", "device", "emulated"] = "host", **extra: Any) -> VerificationResult:
        return cls(status="skipped", where=where, reason=reason, **extra)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "where": self.where,
            "device": self.device,
            "runtime": self.runtime,
            "reason": self.reason,
            "samples": self.samples,
            "input_source": self.input_source,
            "tolerances": self.tolerances,
            "outputs": [o.to_dict() for o in self.outputs],
            "latency_ms": self.latency_ms.to_dict() if self.latency_ms else None,
            "environment": self.environment,
            "cpu": self.cpu,
            "emulator": self.emulator,
            "fault": self.fault,
            "calibration_samples": self.calibration_samples,
            "checks": self.checks,
            "first_divergence": self.first_divergence,
            "layers": self.layers,
            "locate": self.locate,
        }


@dataclass
class BuildReport:
    edgekit_version: str
    target: str
    backend: str
    precision: str
    artifact: str  # relative to the report's folder
    artifact_sha256: str
    artifact_bytes: int
    source_model: str
    source_model_sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    stages: list[StageRecord]
    verification: VerificationResult
    verifications: list[VerificationResult] = field(default_factory=list)  # one per device when --device is used
    io: dict[str, list[IOBinding]] = field(default_factory=dict)
    artifact_files: list[str] = field(default_factory=list)
    artifact_files_sha256: dict[str, str] = field(default_factory=dict)  # every artifact file (tree hash for folders)
    artifact_runtime: str | None = None
    created_at: str = ""
    cache: dict[str, Any] | None = None  # {"hit": bool, "key": str} when the build cache was used
    #: what edgekit changed in the model before converting it, so the user never edits it by hand
    fixed_inputs: dict[str, Any] = field(default_factory=dict)  # --fix-input: name -> {value|sha256, dtype, shape, given}
    shapes_from_data: dict[str, list[int]] = field(default_factory=dict)  # dynamic dims fixed from the sample data's shape
    dequantized: dict[str, Any] | None = None  # --dequantize: ops rewritten to float and the check against onnxruntime
    sanitized_names: dict[str, Any] | None = None  # names rewritten for the converters (io: user's name -> model's)
    quantization: dict[str, Any] | None = None  # what was asked and what was built, layers kept float (edgekit.debug)
    # how a PyTorch/TensorFlow source became ONNX (edgekit.export); None for ONNX input
    export: dict[str, Any] | None = None
    report_path: Path | None = None  # where it was written; not serialized

    @property
    def passed(self) -> bool:
        return self.verification.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "edgekit_version": self.edgekit_version,
            "created_at": self.created_at,
            "target": self.target,
            "backend": self.backend,
            "precision": self.precision,
            "artifact": self.artifact,
            "artifact_sha256": self.artifact_sha256,
            "artifact_bytes": self.artifact_bytes,
            "artifact_files": self.artifact_files,
            "artifact_files_sha256": self.artifact_files_sha256,
            "artifact_runtime": self.artifact_runtime,
            "source_model": self.source_model,
            "source_model_sha256": self.source_model_sha256,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "io": {k: [b.to_dict() for b in v] for k, v in self.io.items()},
            "stages": [s.to_dict() for s in self.stages],
            "verification": self.verification.to_dict(),
            "verifications": [v.to_dict() for v in self.verifications],
            "cache": self.cache,
            "fixed_inputs": self.fixed_inputs,
            "shapes_from_data": self.shapes_from_data,
            "dequantized": self.dequantized,
            "sanitized_names": self.sanitized_names,
            "quantization": self.quantization,
            "export": self.export,
        }
