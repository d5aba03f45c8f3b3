"""The build cache under faults, through the real CLI and real ncnn builds: a corrupt entry is dropped and rebuilt,
never served; a read-only or full cache folder leaves a good build good and says the cache was not written; an entry
made by other edgekit code, or for another GPU, is not a hit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit import cache
from edgekit.backends import get_backend
from edgekit.backends.tensorrt.build import host_identity
from edgekit.fsutil import sha256_tree
from edgekit.profiles import resolve_target

ROOT = Path(__file__).resolve().parents[2]


def build(model: Path, out: Path, cache_dir: Path, *extra: str, prefix: list[str] | None = None, env: dict | None = None,
          as_json: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    argv = [*(prefix or []), sys.executable, "-m", "edgekit.cli", "build", str(model), "--target", "arm-ncnn", "--precision", "fp32",
            "-o", str(out), *(["--json"] if as_json else []), *extra]
    environment = {**os.environ, "EDGEKIT_CACHE_DIR": str(cache_dir), "COLUMNS": "400", **(env or {})}
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=environment, cwd=cwd)


def report_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def filled_cache(superres: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A cache folder holding one good ncnn entry, and the report of the build that made it."""
    folder = tmp_path_factory.mktemp("filled-cache") / "cache"
    report = report_of(build(superres, tmp_path_factory.mktemp("first"), folder))
    assert report["cache"]["stored"] is True and len(cache.entries(folder)) == 1
    return folder, report


def damage_bin(entry: Path) -> str:
    weights = next(entry.glob("*.bin"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    return f"{weights.name} has sha256"


def delete_param(entry: Path) -> str:
    param = next(entry.glob("*.param"))
    param.unlink()
    return f"{param.name} is missing"


def garble_report(entry: Path) -> str:
    (entry / "edgekit-report.json").write_text('{"artifact": ')
    return "its report cannot be read"


@pytest.mark.slow
@pytest.mark.parametrize("damage", [damage_bin, delete_param, garble_report], ids=["bin-byte-flipped", "param-deleted", "report-garbled"])
def test_corrupt_entry_is_dropped_and_rebuilt(superres, filled_cache, tmp_path, damage):
    source, first = filled_cache
    folder = tmp_path / "cache"
    shutil.copytree(source, folder)
    entry = cache.entries(folder)[0].path
    expected = damage(entry)

    result = build(superres, tmp_path / "out", folder, as_json=False)
    assert result.returncode == 0, result.stderr
    assert "was corrupt and has been removed" in result.stdout and expected in result.stdout  # what the user sees
    report = json.loads((tmp_path / "out" / "edgekit-report.json").read_text())
    assert report["cache"]["hit"] is False and expected in report["cache"]["dropped"]
    for name in report["artifact_files"]:  # rebuilt: the same bytes as the first, good build
        assert sha256_tree(tmp_path / "out" / name) == first["artifact_files_sha256"][name]
    stored, problem = cache.entry_problem(entry)  # the entry was stored again, whole
    assert problem is None and stored["artifact_files_sha256"] == first["artifact_files_sha256"]
    assert report_of(build(superres, tmp_path / "again", folder))["cache"]["hit"] is True


# --- a cache folder that cannot be written: a real read-only mount and a real full filesystem ------------------------


def _mount_prefix(script: str, folder: Path) -> list[str]:
    """Run a command in a private mount namespace where ``script`` has mounted something on ``folder`` first."""
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", "--mount", *user, "sh", "-c", f'{script} && exec "$@"', "sh"]


def _can_mount(tmp_path: Path) -> str | None:
    if shutil.which("unshare") is None:
        return "util-linux 'unshare' is not installed"
    probe = tmp_path / "probe"
    probe.mkdir()
    result = subprocess.run([*_mount_prefix(f"mount -t tmpfs -o size=16k tmpfs {probe}", probe), "true"], capture_output=True, text=True)
    return None if result.returncode == 0 else f"cannot mount in a private namespace here: {result.stderr.strip()[:200]}"


@pytest.fixture
def mounts(tmp_path: Path) -> None:
    why = _can_mount(tmp_path)
    if why:
        pytest.skip(f"needs a real read-only/full filesystem: {why}")


@pytest.mark.slow
@pytest.mark.parametrize(("mount", "errno_text"), [
    ("mount -t tmpfs -o ro,size=1m tmpfs {folder}", "Read-only file system"),
    ("mount -t tmpfs -o size=16k tmpfs {folder}", "No space left on device"),  # the 50 KiB .bin cannot fit
], ids=["read-only", "full"])
def test_unwritable_cache_keeps_the_build_and_says_so(superres, tmp_path, mounts, mount, errno_text):
    folder = tmp_path / "cache"
    folder.mkdir()
    prefix = _mount_prefix(mount.format(folder=folder), folder)
    result = build(superres, tmp_path / "out", folder, prefix=prefix)
    report = report_of(result)  # exit 0: the build itself is complete
    assert report["verification"]["status"] == "passed"
    assert report["cache"]["stored"] is False and errno_text in report["cache"]["not_written"]
    assert (tmp_path / "out" / report["artifact"]).is_file()
    text = build(superres, tmp_path / "text", folder, prefix=prefix, as_json=False)
    assert text.returncode == 0 and "not written" in text.stdout and errno_text in text.stdout


@pytest.mark.slow
def test_read_only_cache_still_serves_its_entries(superres, filled_cache, tmp_path, mounts):
    folder = tmp_path / "cache"
    shutil.copytree(filled_cache[0], folder)
    prefix = _mount_prefix(f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}", folder)
    report = report_of(build(superres, tmp_path / "out", folder, prefix=prefix))
    assert report["cache"]["hit"] is True


# --- what keys an entry ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_other_edgekit_code_is_a_miss(superres, tmp_path):
    """The key hashes edgekit's own sources: edit one line of a copy of the package and its next build is a miss."""
    copy = tmp_path / "pkg"
    shutil.copytree(ROOT / "edgekit", copy / "edgekit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "targets", copy / "targets")
    env = {"PYTHONPATH": str(copy)}
    folder = tmp_path / "cache"
    first = report_of(build(superres, tmp_path / "a", folder, env=env, cwd=copy))  # python -m puts the cwd first on sys.path
    assert report_of(build(superres, tmp_path / "b", folder, env=env, cwd=copy))["cache"]["hit"] is True
    runner = copy / "edgekit" / "remote" / "runner.py"  # what runs on devices counts too
    runner.write_text(runner.read_text() + "\n# an edit\n")
    assert cache.package_identity(copy / "edgekit") != cache.package_identity(ROOT / "edgekit")
    third = report_of(build(superres, tmp_path / "c", folder, env=env, cwd=copy))
    assert third["cache"]["hit"] is False and third["cache"]["key"] != first["cache"]["key"]


ORIN = {"name": "Orin", "compute_capability": "8.7", "total_memory_bytes": 7_990_000_000}  # as cuda_devices() reports a Jetson
H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "total_memory_bytes": 85_045_149_696}


def test_tensorrt_build_host_keys_the_entry(cnn, tmp_path):
    def key(identity: dict) -> str:
        return cache.build_key(cnn, None, resolve_target("jetson").to_dict(), {"precision": "fp16", "build_host": identity},
                               {"tensorrt": "10.3.0"}, ["host"])

    here = get_backend("tensorrt").build_host_identity()
    none = host_identity([], None, None)
    if here["gpu"] == "no GPU":
        assert here == none  # this host: stable, and it says so
    assert none["gpu"] == "no GPU" and key(none) == key(host_identity([], None, None))
    keys = {key(host_identity([ORIN], "10.3.0", "12.6")), key(host_identity([H100], "10.3.0", "12.6")),
            key(host_identity([ORIN], "10.4.0", "12.6")), key(host_identity([ORIN], "10.3.0", "12.8")), key(none)}
    assert len(keys) == 5  # GPU, TensorRT and driver each change the key
