"""An ncnn build (.param + .bin) published over an earlier build of another model saved under the same file name,
killed with SIGKILL at each rename of the publish (edgekit/publish.py): whenever a report is visible it describes
exactly the files it names, the folder holds the old build, the new build, or files with no report, and the next
build repairs it.

The kill is exact: a child process replaces ``os`` inside edgekit.publish with one whose K-th ``replace`` sends
the process SIGKILL before renaming, so nothing after that point runs, as with a real crash there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.fsutil import sha256_tree
from tests.faults.test_interrupts import snapshot

# retire the old report (json, html), two artifact files, then report.html and edgekit-report.json
RENAMES = 6
CHILD = """
import os, signal, sys
import edgekit.publish
from edgekit.pipeline import build
from edgekit.types import BuildOptions

kill_at, calls = int(sys.argv[3]), []

class KillingOs:
    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, source, target):
        calls.append(target)
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(source, target)

edgekit.publish.os = KillingOs()
build(sys.argv[1], "arm-ncnn", precision="fp32", out_dir=sys.argv[2], options=BuildOptions(use_cache=False))
print(len(calls))
"""


def same_name(other: Path, name: str, folder: Path) -> Path:
    """Another network saved under ``name``: its build writes files of the same names with other contents."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(other, folder / name)
    return folder / name


def run_build(model: Path, out: Path, kill_at: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, str(model), str(out), str(kill_at)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def builds(superres: Path, cnn: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes], Path, dict[str, bytes]]:
    """(old build folder, its files; the other model, the files of its complete build)."""
    root = tmp_path_factory.mktemp("publish")
    old, new_model = root / "old", same_name(cnn, superres.name, root / "other")
    for model, out in ((superres, old), (new_model, root / "new")):
        result = run_build(model, out)
        assert result.returncode == 0, result.stderr
    return old, visible(old), new_model, visible(root / "new")


def visible(folder: Path) -> dict[str, bytes]:
    return {name: data for name, data in snapshot(folder).items() if not name.startswith(".")}


def artifact_files(files: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if name.endswith((".param", ".bin"))}


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", range(1, RENAMES + 1))
def test_killed_publish_never_shows_a_report_over_a_mix(builds, tmp_path, kill_at):
    old_dir, old, new_model, new = builds
    assert artifact_files(old).keys() == artifact_files(new).keys() and artifact_files(old) != artifact_files(new)
    out = tmp_path / "out"
    shutil.copytree(old_dir, out)
    result = run_build(new_model, out, kill_at)
    assert result.returncode == -9, f"the child was not killed at rename {kill_at}: {result.stderr[-2000:]}"

    now = visible(out)
    if "edgekit-report.json" in now:
        report = json.loads(now["edgekit-report.json"])  # whole: it was renamed into place
        for name in report["artifact_files"]:
            assert sha256_tree(out / name) == report["artifact_files_sha256"][name], \
                f"killed at rename {kill_at}: the visible report vouches for {name}, which holds other bytes"
        expected = old if now["edgekit-report.json"] == old["edgekit-report.json"] else new
        assert artifact_files(now) == artifact_files(expected), f"killed at rename {kill_at}: the report's build is not whole"
    # with no report, nothing vouches for the files; either way the next build repairs the folder and sweeps the leftovers
    assert run_build(new_model, out).returncode == 0
    repaired = snapshot(out)
    assert artifact_files(repaired) == artifact_files(new)
    assert not [name for name in repaired if name.startswith(".")] and not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_publish_renames_are_the_ones_counted(builds, tmp_path):
    """The kill points above are every rename of this publish (a change to the publish order must update them)."""
    old_dir, _, new_model, new = builds
    out = tmp_path / "out"
    shutil.copytree(old_dir, out)
    result = run_build(new_model, out)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip().splitlines()[-1]) == RENAMES
    assert artifact_files(visible(out)) == artifact_files(new)
