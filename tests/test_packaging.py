"""A built wheel carries the target profiles and the device runner (not only a source checkout)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_carries_targets_and_runner(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("edgekit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if "/share/edgekit/targets/" in n}
    assert shipped == {p.name for p in (ROOT / "targets").glob("*.toml")}
    assert "edgekit/remote/runner.py" in names and "edgekit/remote/trt_builder.py" in names and "edgekit/cli/build.py" in names
    assert "edgekit/emulator/aarch64.lock.json" in names
