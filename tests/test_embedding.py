"""The build-script examples in examples/ run their edgekit calls for real (Gradle and Xcode themselves are not run)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def env_with_edgekit(**extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # where the edgekit console script lives
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), **extra}


@pytest.mark.slow
def test_android_assets_script(tmp_path):
    assets = tmp_path / "app" / "src" / "main" / "assets"
    env = env_with_edgekit(EDGEKIT_BUILD_DIR=str(tmp_path / "build"))
    script = str(EXAMPLES / "android" / "edgekit-assets.sh")
    model, calib = EXAMPLES / "models" / "super_resolution.onnx", EXAMPLES / "calib" / "super_resolution.npy"
    result = subprocess.run(["sh", script, str(model), str(assets), str(calib)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    asset = assets / "super_resolution_int8.tflite"
    assert asset.is_file()
    report = json.loads((assets / "edgekit-report.json").read_text())
    assert report["verification"]["status"] == "passed" and report["precision"] == "int8"
    before = asset.read_bytes()
    # int8 without calibration data: edgekit refuses (exit 3) and the shipped asset stays as it was
    failed = subprocess.run(["sh", script, str(model), str(assets)], env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 3 and "calibration data" in failed.stderr
    assert asset.read_bytes() == before
    assert not [p for p in assets.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_github_actions_build_step(tmp_path):
    workflow = yaml.safe_load((EXAMPLES / "ci" / "github-actions-edgekit.yml").read_text())
    job = workflow["jobs"]["build"]
    assert {"android", "arm", "ios"} <= set(job["strategy"]["matrix"]["target"])
    step = next(s for s in job["steps"] if s.get("name") == "Build and verify")
    command = step["run"].replace("${{ matrix.target }}", "arm")
    (tmp_path / "models").mkdir()
    shutil.copy(EXAMPLES / "models" / "transformer_block.onnx", tmp_path / "models" / "model.onnx")
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=tmp_path, env=env_with_edgekit(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report-arm.json").read_text())
    assert report["target"] == "arm" and report["verification"]["status"] == "passed"
    assert (tmp_path / "out" / "arm" / report["artifact"]).is_file()


@pytest.mark.slow
def test_xcode_run_script(tmp_path):
    from edgekit.backends import registered

    # The script is generic; it builds the Core ML package when that backend is installed.
    target = "ios" if "coreml" in registered() else "arm"
    (tmp_path / "Models").mkdir()
    shutil.copy(EXAMPLES / "models" / "super_resolution.onnx", tmp_path / "Models" / "model.onnx")
    env = env_with_edgekit(SRCROOT=str(tmp_path), DERIVED_FILE_DIR=str(tmp_path / "Derived"), EDGEKIT_TARGET=target)
    result = subprocess.run(["sh", str(EXAMPLES / "ios" / "edgekit-xcode.sh")], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "Generated" / "edgekit-report.json").read_text())
    assert (tmp_path / "Generated" / report["artifact"]).exists() and report["target"] == target
    missing = subprocess.run(["sh", str(EXAMPLES / "ios" / "edgekit-xcode.sh")], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "SRCROOT": str(tmp_path)})
    assert missing.returncode == 127 and "edgekit not found on PATH" in missing.stderr
