"""Builds killed at every stage (SIGINT and SIGKILL) over a good earlier build in the same folder: the earlier
build survives byte for byte, or the new one is complete, and nothing half-written is left, hidden files included."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.fsutil import sha256_tree, sweep_stale

# "start": before edgekit prints anything (often before Python has imported it); the others: right after that stage ends
KILL_POINTS = ["start", "load", "simplify", "convert", "verify"]


def build_argv(model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "edgekit.cli", "build", str(model), "--target", "arm", "--precision", "fp32", "-o", str(out), "--no-cache"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier_build(superres: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("earlier") / "out"
    result = subprocess.run(build_argv(superres, out), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def run_until(proc: subprocess.Popen, point: str) -> str:
    """Read the build's progress (stderr) until stage ``point`` has finished; returns what was read."""
    seen = ""
    if point == "start":
        return seen
    finished = re.compile(rf"^\S+ {point}\s")
    assert proc.stderr is not None
    for line in proc.stderr:
        seen += line
        if finished.match(line):
            break
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_build_leaves_nothing_half_written(superres, earlier_build, tmp_path, point, sig):
    out = tmp_path / "out"
    shutil.copytree(earlier_build, out)
    before = snapshot(out)
    old_report = json.loads(before["edgekit-report.json"])
    artifact = old_report["artifact"]

    proc = subprocess.Popen(build_argv(superres, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = run_until(proc, point)
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    _, rest = proc.communicate(timeout=120)
    stderr = seen + rest
    if sig == signal.SIGINT and point != "start" and proc.returncode != 0:
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr

    after = snapshot(out)
    # The conversion is deterministic, so the artifact's bytes never change: it must never have been rewritten.
    assert after.get(artifact) == before[artifact], f"{artifact} is missing or changed ({point}, {sig.name})"
    report_bytes = after.get("edgekit-report.json")
    assert report_bytes is not None, "the earlier build's report is gone"
    if report_bytes != before["edgekit-report.json"]:  # the rebuild finished: its report must be whole and true
        report = json.loads(report_bytes)
        assert report["verification"]["status"] == "passed"
        for name in report["artifact_files"]:
            assert sha256_tree(out / name) == report["artifact_files_sha256"][name]
    visible = sorted(name for name in after if not name.startswith("."))
    assert visible == sorted(name for name in before if not name.startswith(".")), "files appeared or vanished"

    hidden = sorted({name.split("/")[0] for name in after if name.startswith(".")} | {p.name for p in out.iterdir() if p.name.startswith(".")})
    if sig == signal.SIGINT:
        assert hidden == [], f"an interrupted build cleaned up after itself, yet left {hidden}"
    else:
        # SIGKILL leaves no chance to clean up: what is left must be edgekit's temporaries of that process, which the
        # next build in this folder removes
        assert set(sweep_stale(out)) == set(hidden), f"left behind: {hidden}"
        assert not [p for p in out.iterdir() if p.name.startswith(".")]
