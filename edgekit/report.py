"""Serialize the build report (edgekit-report.json) and read it back."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.types import BuildReport, VerificationResult


def _finite_or_text(value: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite metrics become the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite_or_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_text(v) for v in value]
    return value


def report_to_dict(report: BuildReport) -> dict[str, Any]:
    return _finite_or_text(report.to_dict())


def report_to_json(report: BuildReport) -> str:
    return json.dumps(report_to_dict(report), indent=2, allow_nan=False) + "\n"


def load_report(path: Path) -> dict[str, Any]:
    """Read a report (a file or an output folder holding edgekit-report.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / "edgekit-report.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no edgekit report found", hint="pass the output folder of 'edgekit build' or its edgekit-report.json") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the report: {exc}") from None


def _number(value: Any) -> Any:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    return value


def verification_from_dict(verification: dict[str, Any]) -> VerificationResult:
    from edgekit.types import LatencyStats, OutputMetrics

    latency = verification.get("latency_ms")
    fields = set(OutputMetrics.__dataclass_fields__)
    return VerificationResult(
        status=verification["status"],
        where=verification["where"],
        runtime=verification.get("runtime"),
        reason=verification.get("reason"),
        device=verification.get("device"),
        samples=verification.get("samples", 0),
        input_source=verification.get("input_source"),
        tolerances=verification.get("tolerances", {}),
        outputs=[OutputMetrics(**{k: _number(v) for k, v in o.items() if k in fields}) for o in verification.get("outputs", [])],
        latency_ms=LatencyStats(**{k: latency[k] for k in LatencyStats.__dataclass_fields__ if k in latency}) if latency else None,
        environment=verification.get("environment", {}),
        cpu=verification.get("cpu"),
        emulator=verification.get("emulator"),
        fault=verification.get("fault"),
        calibration_samples=verification.get("calibration_samples", 0),
        checks=verification.get("checks", []),
        first_divergence=verification.get("first_divergence"),
        layers=list(verification.get("layers") or []),
        locate=verification.get("locate"),
    )


def report_from_dict(data: dict[str, Any]) -> BuildReport:
    """Rebuild a BuildReport from its JSON form (cached builds, re-verification)."""
    from edgekit.types import IOBinding, StageRecord, TensorSpec

    return BuildReport(
        edgekit_version=data["edgekit_version"],
        target=data["target"],
        backend=data["backend"],
        precision=data["precision"],
        artifact=data["artifact"],
        artifact_sha256=data["artifact_sha256"],
        artifact_bytes=data["artifact_bytes"],
        source_model=data["source_model"],
        source_model_sha256=data["source_model_sha256"],
        inputs=[TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in data.get("inputs", [])],
        outputs=[TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in data.get("outputs", [])],
        stages=[StageRecord(**s) for s in data.get("stages", [])],
        verification=verification_from_dict(data["verification"]),
        verifications=[verification_from_dict(v) for v in data.get("verifications", [])],
        io={k: [IOBinding.from_dict(b) for b in v] for k, v in data.get("io", {}).items()},
        artifact_files=data.get("artifact_files") or [data["artifact"]],
        artifact_files_sha256=dict(data.get("artifact_files_sha256") or {}),
        artifact_runtime=data.get("artifact_runtime"),
        created_at=data.get("created_at", ""),
        cache=data.get("cache"),
        fixed_inputs=data.get("fixed_inputs") or {},
        shapes_from_data=data.get("shapes_from_data") or {},
        dequantized=data.get("dequantized"),
        sanitized_names=data.get("sanitized_names"),
        quantization=data.get("quantization"),
        export=data.get("export"),
    )
