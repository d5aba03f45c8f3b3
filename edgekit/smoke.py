"""`edgekit smoke OUT --device GROUP`: re-verify a shipped artifact on a fleet and watch its latency.

Each round re-verifies the build (edgekit.reverify: the artifact's sha256 is checked first, then numerics on every
device) and compares each device's p50 latency with that device's last *passing* smoke run, stored beside the
artifact in ``edgekit-smoke.json`` (written atomically, the last ``HISTORY_LIMIT`` runs). A regression is a p50
more than ``threshold`` above the baseline *and* more than ``min_ms`` above it: sub-millisecond latencies jitter by
more than 20 % between runs on the same idle board, so a relative rule alone would cry wolf.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import DeviceError
from edgekit.fsutil import atomic_write_text
from edgekit.junit import Case, Suite, report_suite
from edgekit.report import report_to_dict
from edgekit.transport.base import Transport

HISTORY_NAME = "edgekit-smoke.json"
HISTORY_LIMIT = 200
DEFAULT_THRESHOLD = 0.20
DEFAULT_MIN_MS = 0.25
EXIT_PASS, EXIT_NUMERICS, EXIT_DEVICE, EXIT_REGRESSION = 0, 1, 6, 12  # 7-11: the device error kinds (edgekit.errors)


@dataclass
class DeviceVerdict:
    device: str
    status: str  # "passed" | "failed" | "skipped" (verification), as in the report
    p50_ms: float | None
    baseline_ms: float | None
    regression: bool
    reason: str | None = None

    @property
    def verdict(self) -> str:
        if self.status == "failed":
            return "failed"
        if self.status != "passed":
            return "skipped"
        return "regression" if self.regression else "passed"


@dataclass
class SmokeRound:
    at: str
    devices: list[DeviceVerdict]
    report: dict[str, Any]
    device_error: DeviceError | None = None
    junit: list[Suite] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        verdicts = {d.verdict for d in self.devices}
        if "failed" in verdicts:
            return EXIT_NUMERICS
        if self.device_error is not None:
            return self.device_error.exit_code or EXIT_DEVICE
        return EXIT_REGRESSION if "regression" in verdicts else EXIT_PASS


def load_history(folder: Path) -> list[dict[str, Any]]:
    path = folder / HISTORY_NAME
    if not path.is_file():
        return []
    try:
        runs = json.loads(path.read_text()).get("runs", [])
    except (ValueError, OSError, AttributeError):
        return []  # a damaged history only loses the baseline; the next run starts a new one
    return [run for run in runs if isinstance(run, dict)]


def baseline(history: list[dict[str, Any]], device: str) -> float | None:
    """p50 of the device's most recent passing run (a regressed run never becomes the new baseline)."""
    for run in reversed(history):
        entry = (run.get("devices") or {}).get(device) or {}
        if entry.get("verdict") == "passed" and isinstance(entry.get("p50_ms"), (int, float)):
            return float(entry["p50_ms"])
    return None


def judge(p50: float | None, base: float | None, threshold: float, min_ms: float) -> bool:
    return p50 is not None and base is not None and p50 > base * (1.0 + threshold) and p50 - base > min_ms


def smoke_round(out: Path, transports: list[Transport], threshold: float, min_ms: float,
                tolerance_overrides: list[str] | tuple[str, ...] = ()) -> SmokeRound:
    from edgekit.reverify import reverify

    report, error = reverify(out, transports, tolerance_overrides=tolerance_overrides)
    data = report_to_dict(report)
    folder = report.report_path.parent  # reverify wrote the report beside the artifact
    history = load_history(folder)
    verdicts = []
    for verification in data.get("verifications") or [data["verification"]]:
        device = verification.get("device") or "host"
        p50 = (verification.get("latency_ms") or {}).get("p50")
        base = baseline(history, device)
        verdicts.append(DeviceVerdict(device, verification["status"], p50, base, judge(p50, base, threshold, min_ms), verification.get("reason")))
    at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    history.append({"at": at, "artifact_sha256": data["artifact_sha256"], "threshold": threshold, "min_ms": min_ms,
                    "devices": {v.device: {"verdict": v.verdict, "status": v.status, "p50_ms": v.p50_ms, "baseline_ms": v.baseline_ms}
                                for v in verdicts}})
    atomic_write_text(folder / HISTORY_NAME, json.dumps({"runs": history[-HISTORY_LIMIT:]}, indent=2) + "\n")
    suite = report_suite(data)
    suite.name = f"edgekit.smoke.{data['target']}.{data['artifact']}"
    suite.cases.extend(_latency_case(data["target"], v, threshold, min_ms) for v in verdicts if v.status == "passed")
    return SmokeRound(at, verdicts, data, error, [suite])


def _latency_case(target: str, verdict: DeviceVerdict, threshold: float, min_ms: float) -> Case:
    case = Case(f"edgekit.{target}.{verdict.device}", "latency_p50")
    if verdict.baseline_ms is None or verdict.p50_ms is None:
        case.output = f"p50={verdict.p50_ms} ms; no earlier passing run on this device: this run is the baseline"
    else:
        change = (verdict.p50_ms / verdict.baseline_ms - 1.0) * 100 if verdict.baseline_ms else float("inf")
        case.output = f"p50={verdict.p50_ms:.4f} ms baseline={verdict.baseline_ms:.4f} ms change={change:+.1f}%"
        if verdict.regression:
            case.failure = (f"latency regression on {verdict.device}: p50 {verdict.p50_ms:.4f} ms vs {verdict.baseline_ms:.4f} ms "
                            f"({change:+.1f}%; allowed +{threshold * 100:.0f}% and +{min_ms} ms)")
    return case
