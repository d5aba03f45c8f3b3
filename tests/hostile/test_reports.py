"""Reports are untrusted too: `edgekit verify` checks an existing build against the target profile's tolerances
(or --tolerance), never against the ones written in the report it is checking, and refuses any artifact file
whose bytes differ from the report's record, the second file of a multi-file artifact included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

STRICT = """name = "strict-ncnn"
backend = "ncnn"
precisions = ["fp32", "fp16"]
default_precision = "fp16"

[tolerances.fp16]
min_cosine = 0.999
min_sqnr_db = 100.0   # fp16 weights give ~70 dB on the example models: this build fails
"""


def edgekit(*args: str, targets: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400", **({"EDGEKIT_TARGETS_PATH": str(targets)} if targets else {})}
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_edited_report_cannot_loosen_its_own_check(superres, tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "strict-ncnn.toml").write_text(STRICT)
    out = tmp_path / "out"
    built = edgekit("build", str(superres), "--target", "strict-ncnn", "-o", str(out), "--json", targets=targets)
    assert built.returncode == 1, built.stderr  # kept, but failed: SQNR < 100 dB
    report_path = out / "edgekit-report.json"
    report = json.loads(report_path.read_text())
    assert report["verification"]["tolerances"]["min_sqnr_db"] == 100.0
    # forge it: loosen the recorded tolerances and call it a pass
    report["verification"].update(status="passed", reason=None, tolerances={"min_cosine": -1.0, "min_sqnr_db": -1000.0})
    for output in report["verification"]["outputs"]:
        output.update(passed=True, failures=[])
    report_path.write_text(json.dumps(report))

    again = edgekit("verify", str(out), "--json", targets=targets)
    assert again.returncode == 1, again.stderr
    checked = json.loads(again.stdout)["verification"]
    assert checked["status"] == "failed" and checked["tolerances"]["min_sqnr_db"] == 100.0 and "< 100.0 dB" in checked["reason"]
    other_precision = edgekit("verify", str(out), "--tolerance", "fp32:min_sqnr_db=1", targets=targets)
    assert other_precision.returncode == 1  # a value for another precision does not apply
    loosened = edgekit("verify", str(out), "--tolerance", "min_sqnr_db=20", "--json", targets=targets)
    assert loosened.returncode == 0, loosened.stderr  # the user may loosen it, on the command line, in the open
    assert json.loads(loosened.stdout)["verification"]["tolerances"]["min_sqnr_db"] == 20.0
    bad = edgekit("verify", str(out), "--tolerance", "min_sqnr=20", targets=targets)
    assert bad.returncode == 3 and "KEY one of min_cosine, min_sqnr_db, max_abs_error" in bad.stderr


@pytest.mark.slow
def test_changed_weights_file_is_refused(superres, tmp_path):
    """An ncnn artifact is a .param and a .bin: both are checked, not only the first file."""
    out = tmp_path / "out"
    assert edgekit("build", str(superres), "--target", "arm-ncnn", "--precision", "fp32", "-o", str(out), "-q").returncode == 0
    weights = next(out.glob("*.bin"))
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    result = edgekit("verify", str(out))
    assert result.returncode == 3 and f"{weights.name}: the artifact changed since it was built" in result.stderr
