"""`edgekit build MODEL --target a --target b ...`: one build per target, one comparison table."""

import json
import subprocess
import sys

import pytest

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]


@pytest.mark.slow
def test_matrix_builds_each_target_and_compares(superres, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([*EDGEKIT, "build", str(superres), "--target", "arm", "--target", "android", "--precision", "fp16",
                             "-o", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    for target in ("arm", "android"):
        report = json.loads((out / target / "edgekit-report.json").read_text())
        assert report["target"] == target and report["verification"]["status"] == "passed"
        assert (out / target / report["artifact"]).is_file() and (out / target / "report.html").is_file()
    table = result.stdout
    assert "2 targets" in table and "arm" in table and "android" in table and "passed" in table


@pytest.mark.slow
def test_matrix_json_and_partial_failure(superres, tmp_path):
    broken = tmp_path / "future.toml"
    broken.write_text('name = "future"\nbackend = "quantum"\nprecisions = ["fp16"]\ndefault_precision = "fp16"\nnote = "no such backend"\n')
    out = tmp_path / "out"
    result = subprocess.run([*EDGEKIT, "build", str(superres), "--target", "arm", "--target", str(broken), "--precision", "fp16",
                             "-o", str(out), "--json"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 3, result.stderr  # the first error's exit code; the good target still built
    rows = json.loads(result.stdout)
    assert rows[0]["target"] == "arm" and rows[0]["verification"]["status"] == "passed"
    assert rows[1]["target"] == "future" and "no such backend" in rows[1]["error"]
    assert (out / "arm" / "edgekit-report.json").is_file() and not (out / "future" / "edgekit-report.json").exists()
