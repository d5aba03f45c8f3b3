"""The build cache through the real CLI: hits, misses, --no-cache, races, kills, eviction."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit import cache

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]


def build(model: Path, out: Path, *extra: str, wait: bool = True):
    argv = [*EDGEKIT, "build", str(model), "--target", "arm", "--precision", "fp16", "-o", str(out), "--json", *extra]
    if not wait:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_hit_restores_identical_artifact_and_no_cache_rebuilds(superres, tmp_path, isolated_build_cache):
    first = build(superres, tmp_path / "a")
    assert first["cache"]["hit"] is False
    second = build(superres, tmp_path / "b")
    assert second["cache"] == {"hit": True, "key": first["cache"]["key"]}
    assert second["artifact_sha256"] == first["artifact_sha256"]
    artifact = tmp_path / "b" / second["artifact"]
    from edgekit.fsutil import sha256_file

    assert sha256_file(artifact) == first["artifact_sha256"]
    assert second["verification"] == first["verification"]
    forced = build(superres, tmp_path / "c", "--no-cache")
    assert forced["cache"]["hit"] is False
    assert len(cache.entries(isolated_build_cache)) == 1


@pytest.mark.slow
def test_changed_inputs_miss(superres, tmp_path, isolated_build_cache):
    build(superres, tmp_path / "a")
    assert build(superres, tmp_path / "b", "--samples", "3")["cache"]["hit"] is False  # option changed
    copy = tmp_path / "model.onnx"
    data = bytearray(superres.read_bytes())
    copy.write_bytes(bytes(data))
    assert build(copy, tmp_path / "c")["cache"]["hit"] is True  # same content, other path: a hit
    import onnx

    model = onnx.load(str(superres))
    model.producer_version = "changed"
    onnx.save(model, str(copy))
    assert build(copy, tmp_path / "d")["cache"]["hit"] is False  # content changed
    assert len(cache.entries(isolated_build_cache)) == 3


@pytest.mark.slow
def test_two_processes_at_once_both_succeed_one_entry(superres, tmp_path, isolated_build_cache):
    procs = [build(superres, tmp_path / f"out{i}", wait=False) for i in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (stdout, stderr) in zip(procs, results, strict=False):
        assert proc.returncode == 0, stderr
        assert json.loads(stdout)["verification"]["status"] == "passed"
    entries = cache.entries(isolated_build_cache)
    assert len(entries) == 1
    stored = json.loads((entries[0].path / "edgekit-report.json").read_text())
    from edgekit.fsutil import sha256_file

    assert sha256_file(entries[0].path / stored["artifact"]) == stored["artifact_sha256"]
    assert not [p for p in isolated_build_cache.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_build_leaves_no_entry_and_no_artifact(superres, tmp_path, isolated_build_cache, sig):
    out = tmp_path / "out"
    proc = build(superres, out, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".edgekit-work-") for p in out.glob(".*")):
        time.sleep(0.05)
    time.sleep(1.0)  # into the conversion
    os.killpg(proc.pid, sig)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert cache.entries(isolated_build_cache) == []
    assert not (out / "edgekit-report.json").exists()
    assert not list(out.glob("*.tflite"))
    # and the next build is a clean miss that succeeds
    assert build(superres, tmp_path / "again")["cache"]["hit"] is False


@pytest.mark.slow
def test_size_limit_evicts_least_recently_used(superres, cnn, tmp_path, isolated_build_cache, monkeypatch):
    build(superres, tmp_path / "a")
    monkeypatch.setenv("EDGEKIT_CACHE_MAX_BYTES", "40000")  # room for one fp16 artifact of these, not two
    build(cnn, tmp_path / "b")
    remaining = cache.entries(isolated_build_cache)
    assert [e.summary["model"] for e in remaining] == ["tiny_cnn.onnx"]


def test_cache_info_and_clear(tmp_path, isolated_build_cache):
    key = "ab" * 32
    artifact = tmp_path / "m.tflite"
    artifact.write_bytes(b"x" * 100)
    assert cache.store(key, [artifact], "{}", {"model": "m.onnx", "target": "arm", "precision": "fp32"}) is not None
    assert cache.store(key, [artifact], "{}", {}) is None  # already there: the first copy stays
    info = subprocess.run([*EDGEKIT, "cache", "info", "--json"], capture_output=True, text=True)
    data = json.loads(info.stdout)
    assert data["entries"] == 1 and data["path"] == str(isolated_build_cache) and data["items"][0]["model"] == "m.onnx"
    cleared = subprocess.run([*EDGEKIT, "cache", "clear"], capture_output=True, text=True)
    assert "removed 1 cached build" in cleared.stdout and cache.entries(isolated_build_cache) == []
