"""One zoo cell = one model built for one target at one precision by the real CLI in a subprocess,
classified from its exit code, its JSON report and its stderr.

Every cell is verified by the build itself on the held-out ``verify.npz`` (``--verify-data``); int8 cells calibrate
on ``calib.npz`` (``--calib``), so int8 is never judged on its calibration samples. Inputs with dynamic dims take
them from the sample data (edgekit does that itself; the report's ``shapes_from_data`` says which).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.zoo.prepare import VERIFICATION, Prepared

ROOT = Path(__file__).resolve().parents[2]
LATENCY = ["--runs", "10", "--warmup", "2"]
PASS, FAILED, REFUSED, TOOL, CRASH, TIMEOUT, SKIPPED, UNVERIFIED = (
    "pass", "failed verification", "refused", "tool failure", "crash", "timeout", "skipped", "built, not verified")


@dataclass(frozen=True)
class Cell:
    target: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.target} {self.precision}"


@dataclass
class Outcome:
    model: str
    target: str
    precision: str
    status: str
    detail: str = ""
    worst_sqnr_db: float | None = None
    worst_output: str | None = None
    seconds: float | None = None
    artifact_bytes: int | None = None
    exit_code: int | None = None
    cache: bool = False
    stages: dict[str, float] = field(default_factory=dict)
    outputs: list[dict] = field(default_factory=list)
    intermediate: dict | None = None  # Core ML: the PyTorch step's check against onnxruntime (the .mlpackage runs only on Apple systems)
    #: locate and per-layer fallback (issue 12): the first divergent node, the layers kept float and their size cost
    debug: dict | None = None
    command: list[str] = field(default_factory=list)
    stderr_tail: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        value = self.worst_sqnr_db
        if isinstance(value, float) and not math.isfinite(value):
            data["worst_sqnr_db"] = str(value)  # like the report: JSON has no inf/nan
        return data


def _run(command: list[str], timeout: float, cwd: Path) -> tuple[int | None, str, str, float]:
    """Run in its own process group; on timeout kill the whole group (converters spawn children)."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err, time.perf_counter() - started
    return proc.returncode, out, err, time.perf_counter() - started


def _error_lines(stderr: str) -> list[str]:
    """The CLI's 'error: ...' message, up to its hint (first line first), without progress lines."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", stderr).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("error:"):
            block = [line[len("error:"):].strip()]
            for more in lines[i + 1 :]:
                if more.startswith("hint:"):
                    break
                block.append(more)
            return block
    return []


_EXCEPTION = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Failure)|RuntimeError|AssertionError)\b.*")


def error_summary(lines: list[str]) -> str:
    """What went wrong, in one line: the message's first line (a quoted tool log's "Log tail:" replaced by the line
    of that log that says what failed: its last exception line, else its last line), plus the list that follows a
    first line ending in ':' (ops, ...)."""
    first = lines[0].strip()
    rest = [line.strip() for line in lines[1:] if line.strip() and not line.strip().startswith("(stage '")]
    exceptions = [line.strip() for line in lines[1:] if _EXCEPTION.match(line)]
    if first.lower().endswith("log tail:"):
        key = exceptions[-1] if exceptions else (rest[-1] if rest else "")
        return first[: -len("log tail:")].rstrip(" .:") + (f": {key}" if key else " (empty log)")
    if first.endswith(":") and rest:
        first += " " + "; ".join(rest[:4]) + (f"; ... ({len(rest)} lines)" if len(rest) > 4 else "")
    if exceptions and exceptions[-1] not in first:
        first += f" [{exceptions[-1]}]"
    return first


def _traceback(stderr: str) -> str | None:
    if "Traceback (most recent call last)" not in stderr:
        return None
    last = [line for line in stderr.strip().splitlines() if line.strip()]
    return last[-1].strip() if last else "traceback"


def sqnr_value(value) -> float:
    """The report writes non-finite metrics as the strings "inf", "-inf", "nan"."""
    return float(value) if isinstance(value, (int, float, str)) else float("nan")


def worst(outputs: list[dict]) -> tuple[float | None, str | None]:
    """The lowest SQNR over outputs (NaN counts as the worst), and that output's name."""
    if not outputs:
        return None, None
    scored = [(sqnr_value(o["sqnr_db"]), o["name"]) for o in outputs]
    value, name = min(scored, key=lambda item: float("-inf") if item[0] != item[0] else item[0])
    return value, name


def _failures(outputs: list[dict]) -> str:
    parts = []
    for o in outputs:
        if not o.get("passed"):
            parts.append(f"{o['name']}: " + "; ".join(o.get("failures") or ["failed"]))
    return " | ".join(parts)


def build_command(prepared: Prepared, cell: Cell, out: Path) -> list[str]:
    calib = ["--calib", str(prepared.calib)] if cell.precision == "int8" else []
    return [sys.executable, "-m", "edgekit.cli", "build", str(prepared.onnx), "--target", cell.target, "--precision", cell.precision,
            *calib, "--verify-data", str(prepared.verify), "--samples", str(VERIFICATION), *LATENCY, "--no-cache", "--json", "-o", str(out)]


def classify(model: str, cell: Cell, code: int | None, stdout: str, stderr: str, seconds: float, command: list[str]) -> Outcome:
    outcome = Outcome(model, cell.target, cell.precision, CRASH, seconds=round(seconds, 2), exit_code=code, command=command,
                      stderr_tail="\n".join(stderr.strip().splitlines()[-40:]))
    if code is None:
        outcome.status, outcome.detail = TIMEOUT, f"killed after {seconds:.0f} s"
        return outcome
    if code < 0:
        outcome.detail = f"killed by {signal.Signals(-code).name}"
        return outcome
    if code in (3, 4, 5, 6):
        lines = _error_lines(stderr)
        if not lines:
            outcome.detail = f"exit {code} without an edgekit error message" + (f": {_traceback(stderr)}" if _traceback(stderr) else "")
            return outcome
        stage = next((m.group(1) for line in lines if (m := re.search(r"\(stage '(\w+)' failed", line))), None)
        # a backend that cannot take an op says so at load, before any converter runs: a refusal, not a tool failure
        outcome.status = REFUSED if code in (3, 5) or stage == "load" else TOOL if code == 4 else "device error"
        summary = error_summary(lines)
        outcome.detail = (f"{stage}: " if stage and not summary.startswith(f"{stage}:") else "") + summary
        return outcome
    if code not in (0, 1):
        trace = _traceback(stderr)
        outcome.detail = f"exit {code}" + (f": {trace}" if trace else "")
        return outcome
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        outcome.detail = f"exit {code} with unparseable JSON on stdout" + (f"; {_traceback(stderr)}" if _traceback(stderr) else "")
        return outcome
    return _from_report(outcome, report)


def _from_report(outcome: Outcome, report: dict) -> Outcome:
    verification = report["verification"]
    outcome.artifact_bytes = report.get("artifact_bytes")
    outcome.stages = {s["name"]: s["seconds"] for s in report.get("stages", [])}
    outcome.outputs = verification.get("outputs") or []
    outcome.cache = bool((report.get("cache") or {}).get("hit"))
    outcome.worst_sqnr_db, outcome.worst_output = worst(outcome.outputs)
    status = verification["status"]
    if status == "passed":
        outcome.status = PASS
    elif status == "failed":
        outcome.status, outcome.detail = FAILED, _failures(outcome.outputs) or verification.get("reason") or ""
    else:
        outcome.status, outcome.detail = UNVERIFIED, verification.get("reason") or "verification skipped"
    outcome.debug = debug_summary(report)
    checks = [c for s in report.get("stages", []) for c in ((s.get("detail") or {}).get("intermediate_check") or {}).get("checks", [])]
    if checks:
        sqnr, name = worst([o for c in checks for o in c["outputs"]])
        outcome.intermediate = {"passed": all(c["passed"] for c in checks), "steps": [c["step"] for c in checks],
                                "worst_sqnr_db": str(sqnr) if not math.isfinite(sqnr) else sqnr, "worst_output": name}
    return outcome


def debug_summary(report: dict) -> dict | None:
    """What locate and fallback did in a build: the first divergent node (after fallback, else before it), the
    layers kept float (by ONNX node) and their size cost; None when neither ran."""
    verification, quantization = report["verification"], report.get("quantization") or {}
    rounds = quantization.get("rounds") or []
    first = verification.get("first_divergence") or (rounds[0].get("first_divergence") if rounds else None)
    floats = [layer["node"] for layer in quantization.get("float_layers") or []]
    if not (first or floats or rounds):
        return None
    return {"first_divergence": first, "before_fallback": bool(first) and not verification.get("first_divergence"),
            "float_layers": floats, "size_cost_bytes": quantization.get("size_cost_bytes") or 0, "rounds": len(rounds),
            "fallback": quantization.get("fallback")}


def refresh_detail(row: dict) -> dict:
    """Re-summarize a refused/tool-failure row from its recorded stderr tail (after the summary rules improve)."""
    if row["status"] not in (REFUSED, TOOL):
        return row
    if row["status"] == TOOL and row["detail"].startswith("load:"):
        row = {**row, "status": REFUSED}  # refused at load, before any converter ran (rows classified before that rule)
    tail = row.get("stderr_tail") or ""
    lines = _error_lines(tail)
    stage = row["detail"].split(":", 1)[0]
    if lines:
        summary = error_summary(lines)
    elif "Log tail:" in row["detail"]:  # the message's first line scrolled out of the recorded tail
        before = [line for line in tail.splitlines() if not line.strip().startswith(("(stage '", "hint:"))]
        summary = error_summary([row["detail"].split("Log tail:")[0] + "Log tail:", *before])
    else:
        return row
    return {**row, "detail": summary if summary.startswith(f"{stage}:") else f"{stage}: {summary}"}


def run_cell(prepared: Prepared, cell: Cell, work: Path, timeout: float) -> Outcome:
    out = work / prepared.model.name / f"{cell.target}-{cell.precision}"
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = build_command(prepared, cell, out)
    code, stdout, stderr, seconds = _run(command, timeout, out.parent)
    return classify(prepared.model.name, cell, code, stdout, stderr, seconds, command)
