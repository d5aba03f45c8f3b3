"""Builds killed at several points (SIGINT and SIGKILL) never leave a file that looks complete but is not."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edgekit.fsutil import sha256_file


@pytest.fixture(scope="module")
def reference_sha(superres, tmp_path_factory) -> str:
    """The conversion is deterministic, so any complete artifact must have exactly this hash."""
    out = tmp_path_factory.mktemp("ref")
    result = subprocess.run([sys.executable, "-m", "edgekit.cli", "build", str(superres), "--target", "arm", "-o", str(out), "--json", "--no-cache"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["artifact_sha256"]


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.5, 2.5, 4.5, 6.0])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_build_leaves_nothing_half_written(superres, tmp_path, reference_sha, delay, sig):
    out = tmp_path / "out"
    # a previous good build in the same folder must survive an interrupted rebuild
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "build", str(superres), "--target", "arm", "-o", str(out), "--no-cache", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGINT and proc.returncode not in (0, None):
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr
    visible = [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
    for path in visible:
        if path.suffix == ".tflite":
            assert sha256_file(path) == reference_sha, f"{path.name} looks complete but is not"
        if path.name == "edgekit-report.json":
            report = json.loads(path.read_text())  # parses: it was written whole
            assert (out / report["artifact"]).is_file()
