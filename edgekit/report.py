"""Serialize the build report (edgekit-report.json) and read it back."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.types import BuildReport


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
